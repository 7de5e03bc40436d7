"""The face parts of the ``stargan`` command: ``align``, the ``--fan-weights`` / ``--no-masks`` options
of the commands that run a StarGAN v2 model, and what ``import-official`` says about face masks.
(Free of torch imports at load time, like the rest of the command.)"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from stargan.cli.inputs import input_images


def add_mask_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--fan-weights", help="FAN weights (the release's wing.ckpt) for the face masks of "
                   "w_hpf > 0 models (default: the run's fan.safetensors, then the weights folder)")
    p.add_argument("--no-masks", action="store_true", help="run a w_hpf > 0 model without face masks "
                   "(not the paper's model; sets model.masks=false)")


def mask_overrides(args: argparse.Namespace) -> list[str]:
    """``--fan-weights`` and ``--no-masks`` as config overrides (recorded in a run's config)."""
    overrides = []
    if getattr(args, "fan_weights", None):
        overrides.append(f"model.fan_weights={Path(args.fan_weights).resolve()}")
    if getattr(args, "no_masks", False):
        overrides.append("model.masks=false")
    return overrides


def masks_choice(args: argparse.Namespace) -> bool | None:
    """``masks=`` for loaders: False with --no-masks, else None (the run's own setting)."""
    return False if args.no_masks else None


def note_masks(model) -> None:
    """Say so when a w_hpf > 0 model runs without masks by choice."""
    from stargan.faces.masks import opt_out_note

    if opt_out_note(model):
        print(opt_out_note(model))


def report_import_masks(run: Path) -> None:
    """After import-official: where the imported w_hpf > 0 model gets its FAN weights."""
    from stargan import checkpoints
    from stargan.faces.masks import run_fan_file
    from stargan.faces.weights import FAN_WEIGHTS

    model = checkpoints.load_config(run).model
    if model.w_hpf <= 0:
        return
    if run_fan_file(run):
        print(f"face masks: the file's FAN weights (its 'fan' entry) are kept as {run_fan_file(run)}")
    else:
        print(f"face masks: this model (w_hpf={model.w_hpf:g}) needs the FAN weights and the file has no "
              f"'fan' entry; put {FAN_WEIGHTS.filename} ({FAN_WEIGHTS.url}) in the weights folder or "
              "pass --fan-weights when sampling")


def cmd_align(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from stargan.faces.align import align_images, cv2_module, fan_landmark_fn
    from stargan.faces.weights import load_fan, load_mean_landmarks

    try:
        cv2_module()
    except ImportError as err:
        raise SystemExit(f"error: {err}") from err
    mean = load_mean_landmarks(args.mean_landmarks)   # both files before any work
    fan = load_fan(args.fan_weights, device=args.device)
    source, out = Path(args.input), Path(args.out)
    paths = input_images(source)
    skipped = align_images(paths, source, out, fan_landmark_fn(fan), mean, args.size,
                           progress=lambda items: tqdm(items, desc="align", unit="img",
                                                       disable=args.no_progress))
    print(f"aligned {len(paths) - len(skipped)} of {len(paths)} images ({args.size} px) into {out}")
    if skipped:
        lines = [f"  {reason}" if str(path) in reason else f"  {path}: {reason}" for path, reason in skipped]
        print(f"skipped {len(skipped)} files:\n" + "\n".join(lines), file=sys.stderr)


def add_align_command(sub) -> None:
    p = sub.add_parser("align", help="align face images to the mean CelebA-HQ face (as the StarGAN v2 release)")
    p.add_argument("input", help="an image or a folder of images (searched recursively)")
    p.add_argument("out", help="output folder; file names and sub-folders mirror the input's")
    p.add_argument("--size", type=int, default=256, help="output width and height in pixels")
    p.add_argument("--fan-weights", help="the release's wing.ckpt (default: the weights folder)")
    p.add_argument("--mean-landmarks", help="the release's celeba_lm_mean.npz (default: the weights folder)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_align)
