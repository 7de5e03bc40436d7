"""``stargan eval`` and ``stargan classifier train``."""
from __future__ import annotations

import argparse
import dataclasses

from stargan.cli.faces import add_mask_options, masks_choice, note_masks
from stargan.cli.options import add_offline, add_threads
from stargan.config import EvalConfig


def eval_settings(args: argparse.Namespace, base: EvalConfig) -> EvalConfig:
    """The run's eval settings with the command line's choices on top."""
    chosen = {"mode": args.mode, "num_outs": args.num_outs, "max_inputs": args.max_inputs,
              "backbone": args.backbone, "weights": args.weights, "lpips_weights": args.lpips_weights,
              "classifier": args.classifier, "batch_size": args.batch_size,
              "lpips": False if args.no_lpips else None, "trust_weights": args.trust_weights or None}
    return dataclasses.replace(base, **{k: v for k, v in chosen.items() if v is not None})


def cmd_eval(args: argparse.Namespace) -> None:
    from stargan import checkpoints
    from stargan.metrics.evaluate import evaluate_run, headline
    from stargan.metrics.paired import paired_note

    if args.random_weights and (args.weights or args.lpips_weights):
        raise ValueError("--random-weights builds the networks without any weight file, so --weights / "
                         "--lpips-weights would be ignored; drop one or the other")
    config = checkpoints.load_config(args.run)
    settings = eval_settings(args, config.eval)
    if args.no_masks:
        config = config.with_overrides(["model.masks=false"])
    note_masks(config.model)
    path, summary = evaluate_run(args.run, settings, data_root=args.data, device=args.device, seed=args.seed,
                                 random_init=args.random_weights, cache_dir=args.cache_dir,
                                 progress=not args.no_progress, image_dir=args.write_images,
                                 fan_weights=args.fan_weights, masks=masks_choice(args),
                                 skip_bad_images=args.skip_bad_images)
    for key, value in headline(summary).items():
        print(f"{key:28s} {value:.4f}")
    if "classifier_real_val_accuracy" in summary:
        print(f"{'classifier real val accuracy':28s} {summary['classifier_real_val_accuracy']:.4f}")
    if paired_note(summary):
        print(paired_note(summary))
    print(f"wrote {path}")


def cmd_classifier_train(args: argparse.Namespace) -> None:
    from stargan.metrics.classifier import train_classifier

    result = train_classifier(args.data, args.img_size, args.out, epochs=args.epochs, seed=args.seed,
                              device=args.device, progress=not args.no_progress)
    print(f"val accuracy {result.val_accuracy:.4f} (train {result.train_accuracy:.4f}); wrote {result.path}")


def add_commands(sub) -> None:
    p = sub.add_parser("eval", help="FID, KID, LPIPS (and classifier accuracy) with the StarGAN v2 protocol")
    p.add_argument("run", help="run directory (its latest checkpoint) or checkpoint directory")
    p.add_argument("--data", help="dataset folder (default: the run's)")
    p.add_argument("--mode", choices=["latent", "reference", "both"])
    p.add_argument("--num-outs", type=int, help="outputs per input image (default 10)")
    p.add_argument("--max-inputs", type=int, help="validation images per source domain (default all)")
    p.add_argument("--backbone", choices=["inception-tf", "inception-torchvision", "none"],
                   help="FID/KID feature space (default inception-tf; none: LPIPS and classifier only)")
    p.add_argument("--weights", help="the backbone's weight file (default: the torch hub cache)")
    p.add_argument("--lpips-weights", help="torchvision AlexNet weight file (default: the torch hub cache)")
    p.add_argument("--trust-weights", action="store_true",
                   help="use the --weights / --lpips-weights files even when their SHA-256 is not the "
                        "release's (a mirror or converted copy); the hash is printed and recorded")
    p.add_argument("--no-lpips", action="store_true", help="skip LPIPS (e.g. without the AlexNet weights)")
    p.add_argument("--classifier", help="a `stargan classifier train` file: accuracy and classifier FID")
    p.add_argument("--batch-size", type=int)
    p.add_argument("--device", default="cpu")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--cache-dir", help="where real-image statistics are cached (default ~/.cache/stargan)")
    p.add_argument("--write-images", metavar="DIR", help="also save every output as DIR/<mode>/<src>_to_<trg>/*.png")
    p.add_argument("--skip-bad-images", action="store_true", help="skip unreadable images with a warning "
                   "(as the run did if trained with it; else they stop the evaluation before it starts)")
    p.add_argument("--random-weights", action="store_true",
                   help="random backbone weights: tests the pipeline only, the numbers mean nothing")
    add_mask_options(p)
    p.add_argument("--no-progress", action="store_true")
    add_threads(p)
    add_offline(p)
    p.set_defaults(func=cmd_eval)

    p = sub.add_parser("classifier", help="the domain classifier used by `stargan eval --classifier`")
    clf_sub = p.add_subparsers(dest="action", required=True)
    p = clf_sub.add_parser("train", help="train a small CNN on DATA/train, report accuracy on DATA/val")
    p.add_argument("data", help="dataset folder with train/<domain>/ and val/<domain>/")
    p.add_argument("--out", required=True, help="classifier file to write (.safetensors)")
    p.add_argument("--img-size", type=int, default=32)
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    add_threads(p)
    p.set_defaults(func=cmd_classifier_train)
