"""Images per second of the evaluation pipeline (generation + feature extraction) for a preset.

    python benchmarks/eval_speed.py --preset cpu --batch 320 --batches 2

Times, in one run and on the same batches: latent-guided generation alone, then each scorer on the
generated batch (Inception features at 299 px, LPIPS over the 45 pairs of 10 outputs, the domain
classifier). A batch is what `stargan eval` hands the scorers: eval.batch_size (32) inputs x 10
outputs = 320 images. Backbones are randomly initialised: the arithmetic is that of the real weights,
the numbers are not used. Prints images/s and each stage's share of the full pipeline's time, and the
Inception extractor as it was at d58d7a9 (the network as loaded, channels-first, the whole batch in
one pass) against today's (batch norms folded, channels-last, 16 images per pass on a CPU), in turns.
"""
from __future__ import annotations

import argparse
import dataclasses
import time

import torch

from stargan.config import load_preset
from stargan.metrics.backbones import build_extractor
from stargan.metrics.classifier import ClassifierConfig, ClassifierFeatures
from stargan.metrics.evaluate import as_png
from stargan.metrics.lpips import LPIPS
from stargan.nets.v2 import build_networks

NUM_OUTS = 10  # the protocol's outputs per input; LPIPS runs over groups of this size


def seconds(fn, batches: int) -> float:
    start = time.perf_counter()
    for _ in range(batches):
        fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="cpu")
    parser.add_argument("--batch", type=int, default=320, help="generated images per batch (a multiple of 10)")
    parser.add_argument("--batches", type=int, default=2)
    parser.add_argument("--backbone", default="inception-tf", choices=["inception-tf", "inception-torchvision"])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    if args.batch % NUM_OUTS:
        parser.error(f"--batch must be a multiple of {NUM_OUTS}")

    cfg = load_preset(args.preset).model
    cfg = dataclasses.replace(cfg, num_domains=3)
    device = torch.device(args.device)
    torch.manual_seed(0)
    nets = build_networks(cfg, with_discriminator=False).to(device)
    for _, net in nets.items():
        net.eval()
    extractor = build_extractor(args.backbone, cfg.img_size, random_init=True, device=device)
    unfolded = build_extractor(args.backbone, cfg.img_size, random_init=True, device=device, fold=False)
    unfolded.cpu_chunk = args.batch  # d58d7a9 ran the whole batch at once
    lpips = LPIPS(random_init=True, device=device)
    clf_config = ClassifierConfig(img_size=cfg.img_size, domains=("a", "b", "c"), width=32, feature_dim=256)
    classifier = ClassifierFeatures(clf_config.build().to(device).eval(), clf_config, "random-init")

    g = torch.Generator().manual_seed(0)
    x = (torch.rand(args.batch, 3, cfg.img_size, cfg.img_size, generator=g) * 2 - 1).to(device)
    y = torch.full((args.batch,), 1, dtype=torch.long, device=device)

    @torch.inference_mode()
    def generate() -> torch.Tensor:
        z = torch.randn(args.batch, cfg.latent_dim, device=device)
        return nets.generator(x, nets.mapping_network(z, y))

    @torch.inference_mode()
    def preprocess(images: torch.Tensor) -> None:  # the features stage without the network
        for part in extractor.chunks(images):
            extractor.preprocess(part)

    fake = generate()
    stages = {
        "generation": generate,
        f"{args.backbone} features": lambda: extractor(as_png(fake)),
        "  of which the resize to 299": lambda: preprocess(as_png(fake)),
        "LPIPS (45 pairs per 10)": lambda: [lpips.mean_pairwise_lpips(group)
                                            for group in fake.view(-1, NUM_OUTS, *fake.shape[1:])],
        "classifier": lambda: classifier.logits(as_png(fake)),
    }
    for fn in stages.values():  # warm-up
        fn()
    before = f"{args.backbone} features before"
    unfolded(as_png(fake))
    times, times_before = {name: 0.0 for name in stages}, 0.0
    for _ in range(args.batches):  # in turns, so that a busy machine slows both extractors alike
        for name, fn in stages.items():
            times[name] += seconds(fn, 1)
        times_before += seconds(lambda: unfolded(as_png(fake)), 1)
    new, old = extractor(as_png(fake)), unfolded(as_png(fake))
    rel = ((new - old).norm() / old.norm()).item()
    total = sum(t for name, t in times.items() if not name.startswith(" "))
    images = args.batch * args.batches
    print(f"preset {args.preset} ({cfg.img_size} px), {images} images on {device}, "
          f"{torch.get_num_threads()} threads")
    for name, t in times.items():
        print(f"  {name:28s} {images / t:9.1f} images/s   {t / total:6.1%} of the pipeline")
    print(f"  {'full pipeline':28s} {images / total:9.1f} images/s   "
          f"(generation is {times['generation'] / total:.1%} of the time)")
    name = f"{args.backbone} features"
    print(f"  {before:28s} {images / times_before:9.1f} images/s   (d58d7a9: no fold_batch_norms, "
          f"channels-first, {args.batch} images per pass): x{times_before / times[name]:.2f} now; "
          f"features differ by {rel:.1e} relative")


if __name__ == "__main__":
    main()
