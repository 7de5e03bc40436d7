"""Translating one image: ONNX Runtime (`stargan export` + `stargan.runtime`) against PyTorch eager.

    python benchmarks/onnx_speed.py --preset afhq            # the paper's widths at 256 px
    python benchmarks/onnx_speed.py --preset cpu-small        # the small CPU preset (32 px)

Random weights at the preset's widths (speed does not depend on them), saved as a checkpoint and
exported. Two modes per call: ``latent`` (one image, 4 latent styles: mapping network + generator) and
``reference`` (one image, the style of one reference: style encoder + generator). Steady-state time per
call: both backends loaded in this process with the same number of threads, timed in turns (one call of
each per round, so a busy machine slows them alike), median of the rounds. First-call latency and peak
memory: each backend alone in a fresh subprocess: from the start of loading to the end of the first
latent call, and the process's peak resident set (VmHWM) after a few calls of each mode.
Install size: the files of each backend's package closure (importlib.metadata), torch against
onnxruntime + numpy + Pillow (what `stargan.runtime` imports).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from importlib import metadata
from pathlib import Path

MODES = ("latent", "reference")


def peak_rss_mib() -> float:
    status = Path("/proc/self/status").read_text()
    return int(re.search(r"VmHWM:\s+(\d+) kB", status).group(1)) / 1024


def load(backend: str, run: Path, export: Path, threads: int):
    if backend == "onnx":
        from stargan.runtime import Translator

        return Translator.load(export, threads=threads)
    import torch

    from stargan.api import Translator

    torch.set_num_threads(threads)
    return Translator.load(run)


def call(translator, mode: str, image, reference, domain: str):
    if mode == "latent":
        return translator.translate(image, domain, num_styles=4, seed=0)
    return translator.translate(image, domain, reference=reference)


def pictures(size: int):
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    return [Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)) for _ in range(2)]


def measure_alone(backend: str, run: Path, export: Path, threads: int, domain: str, size: int) -> dict:
    """In a fresh process: first-call latency and peak memory of one backend."""
    image, reference = pictures(size)
    start = time.perf_counter()
    translator = load(backend, run, export, threads)
    call(translator, "latent", image, reference, domain)
    first = time.perf_counter() - start
    for _ in range(2):
        for mode in MODES:
            call(translator, mode, image, reference, domain)
    return {"first_call_s": first, "peak_rss_mib": peak_rss_mib(), "torch_imported": "torch" in sys.modules}


def distribution_closure(names: list[str]) -> dict[str, int]:
    """Bytes on disk of each distribution in the dependency closure of ``names``."""
    seen: dict[str, int] = {}
    todo = list(names)
    while todo:
        name = re.split(r"[ ;<>=!~\[]", todo.pop())[0].lower().replace("_", "-")
        if not name or name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen[name] = sum((Path(dist.locate_file(f)).stat().st_size for f in dist.files or []
                          if Path(dist.locate_file(f)).is_file()), 0)
        todo += [r for r in dist.requires or [] if "extra ==" not in r]
    return seen


def build(preset: str, img_size: int, root: Path) -> tuple[Path, Path, str, int]:
    import dataclasses

    import torch

    from stargan.checkpoints import save_checkpoint
    from stargan.config import load_preset
    from stargan.export import export_onnx
    from stargan.nets.v2 import build_networks
    from stargan.state import make_train_state

    config = load_preset(preset)
    if config.arch != "v2" or config.model.w_hpf > 0:
        raise SystemExit(f"error: {preset}: this benchmark measures StarGAN v2 presets without face masks")
    domains = tuple(f"domain{i}" for i in range(config.model.num_domains))
    model = dataclasses.replace(config.model, img_size=img_size or config.model.img_size)
    config = dataclasses.replace(config, model=model, data=dataclasses.replace(config.data, domains=domains))
    torch.manual_seed(0)
    run = root / "run"
    save_checkpoint(run, make_train_state(build_networks(config.model), config.optim), config)
    start = time.perf_counter()
    manifest = export_onnx(run, root / "export")
    print(f"exported in {time.perf_counter() - start:.1f} s ({manifest.exporter}); graphs: "
          + ", ".join(f"{p.name} {p.stat().st_size / 2**20:.1f} MiB"
                      for p in sorted((root / "export").glob("*.onnx"))))
    return run, root / "export", domains[1], model.img_size


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--preset", default="afhq")
    parser.add_argument("--img-size", type=int, default=0, help="0: the preset's")
    parser.add_argument("--threads", type=int, default=min(os.cpu_count() or 1, 2))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--alone", nargs=5, help=argparse.SUPPRESS)  # internal: backend run export domain size
    args = parser.parse_args()
    if args.alone:
        backend, run, export, domain, size = args.alone
        print(json.dumps(measure_alone(backend, Path(run), Path(export), args.threads, domain, int(size))))
        return

    import torch

    print(f"CPU: {cpu_model()}; native bf16 {torch.cpu._is_avx512_bf16_supported()}; threads {args.threads}; "
          f"torch {torch.__version__}, onnxruntime {metadata.version('onnxruntime')}")
    with tempfile.TemporaryDirectory() as tmp:
        run, export, domain, size = build(args.preset, args.img_size, Path(tmp))
        alone = {}
        for backend in ("torch", "onnx"):
            out = subprocess.run([sys.executable, __file__, "--threads", str(args.threads), "--alone", backend,
                                  str(run), str(export), domain, str(size)],
                                 capture_output=True, text=True, check=True)
            alone[backend] = json.loads(out.stdout.strip().splitlines()[-1])
        image, reference = pictures(size)
        translators = {backend: load(backend, run, export, args.threads) for backend in ("torch", "onnx")}
        times: dict[tuple[str, str], list[float]] = {}
        for round_ in range(args.rounds + 1):  # the first round warms up
            for mode in MODES:
                for backend, translator in translators.items():
                    start = time.perf_counter()
                    call(translator, mode, image, reference, domain)
                    if round_:
                        times.setdefault((backend, mode), []).append(time.perf_counter() - start)
    print(f"{args.preset} at {size} px, one image per call, median of {args.rounds} rounds:")
    for mode in MODES:
        t, o = (statistics.median(times[(b, mode)]) for b in ("torch", "onnx"))
        label = "latent (4 styles)" if mode == "latent" else "reference"
        print(f"  {label:18s} torch eager {t * 1000:8.1f} ms   onnxruntime {o * 1000:8.1f} ms   x{t / o:.2f}")
    for backend in ("torch", "onnx"):
        a = alone[backend]
        print(f"  {backend:5s} alone: first call (load + first latent call) {a['first_call_s']:.2f} s, "
              f"peak memory {a['peak_rss_mib']:.0f} MiB, torch imported: {a['torch_imported']}")
    sizes = {name: distribution_closure([name]) for name in ("torch",)}
    runtime = distribution_closure(["onnxruntime", "numpy", "Pillow"])
    torch_mib = sum(sizes["torch"].values()) / 2**20
    runtime_mib = sum(runtime.values()) / 2**20
    print(f"install: torch and its requirements {torch_mib:.0f} MiB ({len(sizes['torch'])} distributions); "
          f"onnxruntime + numpy + Pillow and their requirements {runtime_mib:.0f} MiB "
          f"({len(runtime)} distributions): x{torch_mib / runtime_mib:.1f} smaller")


def cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


if __name__ == "__main__":
    main()
