"""Start-up time of training on a 20,000-image dataset: the image check, first start and resume.

    python benchmarks/dataset_check.py --out /tmp/check-bench            # writes the dataset once
    python benchmarks/dataset_check.py --out /tmp/check-bench --no-train # the check alone

Writes ``--images`` generated JPEGs (``--size`` px, two domains, 90% train / 10% val) unless they are
there, then times
  - ``open_dataset`` (scan + check of every image) on a first start (no cached results) and again
    on a second start, as a resume does;
  - ``stargan train`` of a tiny model for one iteration from a fresh run directory, then
    ``stargan train --resume`` for one more iteration (whole commands, including Python start-up).
Run it with another checkout's sources first on PYTHONPATH to compare (the cache file is simply
absent there).
"""
from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image

from stargan.data import open_dataset

CACHE_NAME = ".stargan-image-check.json"  # stargan.data.image_check.CACHE_NAME (literal: older code lacks it)
TINY = ["model.img_size=16", "model.latent_dim=4", "model.style_dim=8", "model.hidden_dim=16",
        "model.max_conv_dim=16", "model.base_dim=8", "data.batch_size=2", "data.num_workers=0",
        "train.sample_every=1000", "train.save_every=1000", "train.num_samples=2", "eval.every=0"]


def make_dataset(root: Path, count: int, size: int, seed: int = 0) -> None:
    """Smooth random colour fields (photo-like, so JPEG sizes and decode times are realistic)."""
    if (root / ".complete").is_file() and (root / ".complete").read_text() == f"{count} {size}":
        return
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, size)[None, :, None]
    for i in range(count):
        split = "val" if i % 10 == 0 else "train"
        folder = root / split / ("a" if (i // 10) % 2 == 0 else "b")
        folder.mkdir(parents=True, exist_ok=True)
        start, end = rng.uniform(0, 255, 3), rng.uniform(0, 255, 3)
        pixels = start + (end - start) * (ramp + ramp.transpose(1, 0, 2)) / 2
        pixels = pixels + rng.normal(0, 8, (size, size, 3))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i:06d}.jpg", quality=90)
    (root / ".complete").write_text(f"{count} {size}")


def forget_checks(root: Path) -> None:
    (root / CACHE_NAME).unlink(missing_ok=True)
    try:
        from stargan.data.image_check import user_cache_file

        user_cache_file(root).unlink(missing_ok=True)
    except ImportError:  # code without the cache
        pass


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def train_command(*args: str) -> list[str]:
    return [sys.executable, "-m", "stargan.cli", "train", "--no-progress", *args]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="/tmp/stargan-check-bench", help="where the dataset is written")
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--size", type=int, default=128, help="image side in pixels")
    parser.add_argument("--no-train", action="store_true", help="time the check only, not `stargan train`")
    args = parser.parse_args()

    root = Path(args.out) / "data"
    print(f"dataset: {args.images} images of {args.size}x{args.size} px in {root}", flush=True)
    print(f"  written in {timed(lambda: make_dataset(root, args.images, args.size)):.1f} s", flush=True)

    forget_checks(root)
    first = timed(lambda: open_dataset(root))
    second = timed(lambda: open_dataset(root))
    print(f"open_dataset (scan + image check): first start {first:.2f} s, second start (resume) {second:.2f} s")
    if args.no_train:
        return

    run = Path(args.out) / "run"
    shutil.rmtree(run, ignore_errors=True)
    forget_checks(root)
    sets = [item for setting in TINY for item in ("--set", setting)]
    env = {**os.environ, "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "1")}
    start = train_command("--data", str(root), "--run-dir", str(run), *sets, "--set", "train.total_iters=1")
    resume = train_command("--resume", str(run), "--set", "train.total_iters=2")
    quiet = {"check": True, "env": env, "stdout": subprocess.DEVNULL}
    first_train = timed(lambda: subprocess.run(start, **quiet))
    resume_train = timed(lambda: subprocess.run(resume, **quiet))
    print(f"stargan train, 1 iteration of a tiny model: first start {first_train:.2f} s, "
          f"resume {resume_train:.2f} s")


if __name__ == "__main__":
    main()
