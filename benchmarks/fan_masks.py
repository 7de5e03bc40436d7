"""What the face masks cost: FAN masks per image, and their share of a `celeba_hq` training iteration.

    python benchmarks/fan_masks.py                       # masks at batch 8, training at batch 1, CPU
    python benchmarks/fan_masks.py --train-batch 8 --train-iters 3 --device cuda

One run measures (median seconds, eager fp32, random inputs):
  1. FAN.get_heatmap on a batch of 256 px images (--mask-batch, default 8): seconds per image;
  2. one `celeba_hq` training iteration (paper-size networks, w_hpf 1) without masks, then with the
     FAN's masks, at --train-batch images (default 1: on a CPU an iteration takes minutes; the median
     of --train-iters iterations, default 1, after --train-warmup, default 0).
Each figure is printed as soon as it is measured.
An iteration computes masks for 3 x batch images (x_real once, x_fake in each generator step's cycle).
The FAN has random weights unless wing.ckpt is found (the timing does not depend on the weights).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from stargan.config import load_preset
from stargan.faces import FAN
from stargan.nets.v2 import build_networks
from stargan.state import make_train_state
from stargan.training.v2.step import train_step

MASKED_IMAGES_PER_SAMPLE = 3  # x_real, and x_fake of the latent and the reference generator steps


def median_seconds(fn, iters: int, warmup: int, device: torch.device) -> float:
    times = []
    for i in range(warmup + iters):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def random_batch(cfg, batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    size, n, latent = cfg.model.img_size, cfg.model.num_domains, cfg.model.latent_dim
    images = {k: torch.rand(batch, 3, size, size, generator=g) * 2 - 1 for k in ("x_real", "x_ref", "x_ref2")}
    labels = {k: torch.randint(0, n, (batch,), generator=g) for k in ("y_org", "y_trg")}
    codes = {k: torch.randn(batch, latent, generator=g) for k in ("z_trg", "z_trg2")}
    return {k: v.to(device) for k, v in {**images, **labels, **codes}.items()}


def load_fan_or_random(device: torch.device) -> tuple[FAN, str]:
    from stargan.faces.weights import load_fan
    from stargan.metrics.weights import WeightsError

    try:
        return load_fan(device=device), "wing.ckpt"
    except WeightsError:
        return FAN().to(device), "random weights"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mask-batch", type=int, default=8)
    parser.add_argument("--train-batch", type=int, default=1)
    parser.add_argument("--iters", type=int, default=3, help="timed mask batches")
    parser.add_argument("--warmup", type=int, default=1, help="untimed mask batches first")
    parser.add_argument("--train-iters", type=int, default=1)
    parser.add_argument("--train-warmup", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)

    fan, fan_source = load_fan_or_random(device)
    x = torch.rand(args.mask_batch, 3, 256, 256, generator=torch.Generator().manual_seed(1)) * 2 - 1
    x = x.to(device)
    print(f"device={device} threads={torch.get_num_threads()} FAN={fan_source}", flush=True)
    mask_batch = median_seconds(lambda: fan.get_heatmap(x), args.iters, args.warmup, device)
    per_image = mask_batch / args.mask_batch
    print(f"FAN masks, 256 px, batch {args.mask_batch} (median of {args.iters}): {mask_batch:.3f} s per batch, "
          f"{per_image * 1000:.1f} ms per image", flush=True)

    cfg = load_preset("celeba_hq")
    torch.manual_seed(0)
    state = make_train_state(build_networks(cfg.model).to(device), cfg.optim)
    batch = random_batch(cfg, args.train_batch, device)
    without = median_seconds(lambda: train_step(state, batch, cfg.loss, cfg.optim.ema_beta),
                             args.train_iters, args.train_warmup, device)
    print(f"celeba_hq iteration, batch {args.train_batch}, without masks: {without:.2f} s", flush=True)
    with_masks = median_seconds(lambda: train_step(state, batch, cfg.loss, cfg.optim.ema_beta,
                                                   mask_fn=fan.get_heatmap),
                                args.train_iters, args.train_warmup, device)
    print(f"celeba_hq iteration, batch {args.train_batch}, with masks: {with_masks:.2f} s "
          f"({with_masks - without:+.2f} s)", flush=True)

    masked = MASKED_IMAGES_PER_SAMPLE * args.train_batch
    print(f"masks in one iteration: {masked} images x {per_image:.3f} s = {masked * per_image:.2f} s "
          f"= {100 * masked * per_image / with_masks:.1f}% of the iteration "
          f"(measured difference: {100 * (with_masks - without) / with_masks:.1f}%)")


if __name__ == "__main__":
    main()
