"""Median seconds per StarGAN v2 training iteration (eager, fp32) for a preset, on random data.

    python benchmarks/train_step.py --preset cpu --batch 8

Also prints, from the same run, the ratio against the step without the exact-equivalence speed-up
(parameter gradients of networks whose update is discarded are skipped; see training/step.py).
"""
from __future__ import annotations

import argparse
import contextlib
import statistics
import time

import torch

from stargan.config import load_preset
from stargan.nets.v2 import build_networks
from stargan.training import step as step_module


def random_batch(cfg, batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    size, n = cfg.model.img_size, cfg.model.num_domains
    x = lambda: torch.rand(batch, 3, size, size, generator=g) * 2 - 1  # noqa: E731
    y = lambda: torch.randint(0, n, (batch,), generator=g)  # noqa: E731
    z = lambda: torch.randn(batch, cfg.model.latent_dim, generator=g)  # noqa: E731
    out = {"x_real": x(), "y_org": y(), "x_ref": x(), "x_ref2": x(), "y_trg": y(), "z_trg": z(), "z_trg2": z()}
    return {k: v.to(device) for k, v in out.items()}


def time_steps(cfg, batch: dict, iters: int, warmup: int, device: torch.device) -> list[float]:
    torch.manual_seed(0)
    state = step_module.make_train_state(build_networks(cfg.model).to(device), cfg.optim)
    times = []
    for i in range(warmup + iters):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        step_module.train_step(state, batch, cfg.loss, cfg.optim.ema_beta)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--iters", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    cfg = load_preset(args.preset)
    device = torch.device(args.device)
    batch = random_batch(cfg, args.batch, device)
    fast = time_steps(cfg, batch, args.iters, args.warmup, device)
    original = step_module.frozen
    step_module.frozen = lambda *modules: contextlib.nullcontext()
    try:
        plain = time_steps(cfg, batch, args.iters, args.warmup, device)
    finally:
        step_module.frozen = original
    median, median_plain = statistics.median(fast), statistics.median(plain)
    print(f"preset={args.preset} img_size={cfg.model.img_size} batch={args.batch} device={device} "
          f"threads={torch.get_num_threads()} iters={args.iters}")
    print(f"median s/iter: {median:.4f}  ({args.batch / median:.1f} images/s)")
    print(f"without skipped-gradient speed-up: {median_plain:.4f} s/iter  -> speed-up x{median_plain / median:.2f}")


if __name__ == "__main__":
    main()
