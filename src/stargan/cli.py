"""Command line: ``stargan demo | train | sample | translate | interpolate | eval | serve | download |
classifier | data | import-official | align | presets``."""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import traceback
import warnings
from pathlib import Path

from stargan.config import AnyConfig, EvalConfig, available_presets, load_config_yaml, load_preset
from stargan.face_commands import (add_align_command, add_mask_options, mask_overrides, masks_choice,
                                   note_masks, report_import_masks)

DEMO_DATA = Path("data/demo")
DEFAULT_PRESETS = {"v2": "cpu", "v1": "cpu-v1"}  # `stargan train --model MODEL` without --preset


def _preset_name(args: argparse.Namespace) -> str:
    if args.preset is None:
        return DEFAULT_PRESETS[args.model or "v2"]
    arch = load_preset(args.preset).arch
    if args.model and args.model != arch:
        raise ValueError(f"--model {args.model} does not match --preset {args.preset}, a StarGAN {arch} "
                         f"preset; StarGAN {args.model} presets: {', '.join(_presets_of(args.model))}")
    return args.preset


def _presets_of(arch: str) -> list[str]:
    return [name for name in available_presets() if load_preset(name).arch == arch]


def _config_from_args(args: argparse.Namespace) -> AnyConfig:
    config = load_preset(_preset_name(args))
    overrides = list(args.set or [])
    if args.data:
        overrides.append(f"data.root={args.data}")
    if args.skip_bad_images:
        overrides.append("data.skip_bad_images=true")
    return config.with_overrides(overrides + mask_overrides(args) + _precision_override(args))


def _precision_override(args: argparse.Namespace) -> list[str]:
    return [f"train.precision={args.precision}"] if getattr(args, "precision", None) else []


def cmd_train(args: argparse.Namespace) -> Path:
    from stargan.distributed import broadcast, init_from_env
    from stargan.training.loop_v2 import train
    from stargan.training.runner import new_run_dir
    from stargan.training.loop_v1 import train_v1

    world = init_from_env()  # several processes under torchrun, else one

    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            raise SystemExit(f"error: {run_dir} is not a run directory (no config.yaml); "
                             "--resume takes the directory a previous `stargan train` created")
        config = load_config_yaml(run_dir / "config.yaml").with_overrides(list(args.set or [])
                                                                          + _precision_override(args))
        if args.data:
            config = config.with_overrides([f"data.root={args.data}"])
        if config.arch == "v2":
            config = config.with_overrides(mask_overrides(args))
    else:
        config = _config_from_args(args)
        run_dir = Path(args.run_dir) if args.run_dir else new_run_dir(args.runs, config.preset)
        run_dir = broadcast(run_dir, world)
    if config.arch == "v2":
        from stargan.faces.masks import find_mask_weights

        find_mask_weights(config.model, run=run_dir)  # w_hpf > 0 without FAN weights: stop before work
    if world.is_main:
        print(f"run directory: {run_dir}")
    train_fn = train if config.arch == "v2" else train_v1
    ckpt = train_fn(config, run_dir, resume=bool(args.resume), show_progress=not args.no_progress,
                    world=world)
    if world.is_main:
        _report(run_dir, ckpt)
    if world.is_distributed:
        import torch.distributed as dist

        dist.destroy_process_group()
    return run_dir


def _report(run_dir: Path, ckpt: Path) -> None:
    samples = sorted((run_dir / "samples").glob("[0-9]" * 6 + "_*.png"))  # the training grids
    print(f"\ncheckpoint:   {ckpt}")
    if samples:
        last = samples[-1].name.split("_")[0]
        print("sample grids: " + "\n              ".join(str(p) for p in samples if p.name.startswith(last)))
    print(f"logs:         {run_dir / 'logs'}  (tensorboard --logdir {run_dir / 'logs'})")


def cmd_demo(args: argparse.Namespace) -> None:
    from stargan.data.demo import make_demo_dataset

    data = make_demo_dataset(args.data)
    print(f"demo data:     {data}")
    cmd_train(argparse.Namespace(**{**vars(args), "data": str(data), "preset": "demo", "model": None,
                                    "resume": None, "skip_bad_images": False}))


def cmd_sample(args: argparse.Namespace) -> None:
    from stargan import checkpoints, sampling_v2
    from stargan.imaging import save_grid
    from stargan.data import fixed_batch, open_dataset
    from stargan.data.folders import check_domains

    if checkpoints.load_config(args.run).arch == "v1":
        return _sample_v1(args)
    from stargan.faces.masks import load_mask_fn

    config, nets = checkpoints.load_for_sampling(args.run, args.device)
    if args.no_masks:
        config = config.with_overrides(["model.masks=false"])
    mask_fn = load_mask_fn(config.model, args.device, args.fan_weights, run=args.run)
    note_masks(config.model)
    root = args.data or config.data.root
    if not root:
        raise SystemExit("error: this run has no dataset recorded; pass --data DIR with val/<domain>/")
    _, val_set = open_dataset(root, check_images=False)
    check_domains(val_set.domains, config.data.domains, root)
    per_domain = -(-args.num_images // len(val_set.domains))
    x, y = fixed_batch(val_set, config.model.img_size, per_domain=per_domain, seed=args.seed)
    grids = sampling_v2.sample_grids(nets, x, y, num_images=args.num_images, num_styles=args.num_styles,
                                     psi=args.psi, seed=args.seed, mask_fn=mask_fn)
    out = Path(args.out or Path(args.run) / "samples")
    written = [save_grid(grid, out / f"{kind}.png") for kind, grid in grids.items()]
    print("\n".join(str(p) for p in written))


def _sample_v1(args: argparse.Namespace) -> None:
    from stargan import checkpoints, sampling_v1

    if args.psi != 1.0 or args.num_styles != 4:
        raise ValueError("--psi and --num-styles are StarGAN v2 options (style codes); a v1 run has none")
    config, generator = checkpoints.load_v1_for_sampling(args.run, args.device)
    if args.data:
        config = config.with_overrides([f"data.root={args.data}"])
    if not config.data.root:
        raise SystemExit("error: this run has no dataset recorded; pass --data DIR")
    written = sampling_v1.sample_run(generator, config, Path(args.out or Path(args.run) / "samples"),
                                     num_images=args.num_images, seed=args.seed)
    print("\n".join(str(p) for p in written))


def input_images(path: Path) -> list[Path]:
    """``path`` itself, or the images under a folder (recursively); none is a one-line error."""
    from stargan.data.folders import IMAGE_EXTENSIONS, list_images

    if path.is_file():
        return [path]
    files = list_images(path)
    if not files:
        raise SystemExit(f"error: no images ({', '.join(IMAGE_EXTENSIONS)}) in {path}")
    return files


def cmd_translate(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from stargan.api import Translator
    from stargan.data.images import DataError, load_rgb

    translator = Translator.load(args.run, device=args.device, fan_weights=args.fan_weights,
                                 masks=masks_choice(args))
    note_masks(translator.config.model)
    reference = load_rgb(args.reference) if args.reference else None
    inputs = input_images(Path(args.input))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    unreadable = []
    for path in tqdm(inputs, desc="translate", unit="img", disable=len(inputs) == 1):
        try:
            image = load_rgb(path)
        except DataError as error:  # one bad file in a folder does not stop the others
            if len(inputs) == 1:
                raise
            tqdm.write(f"skipped: {error}", file=sys.stderr)
            unreadable.append(path)
            continue
        images = translator.translate(image, domain=args.domain, reference=reference,
                                      num_styles=1 if reference is not None else args.num_styles,
                                      seed=args.seed, psi=args.psi)
        for k, image in enumerate(images):
            suffix = "" if reference is not None else f"_style{k}"
            image.save(out / f"{path.stem}_{args.domain}{suffix}.png")
    print(f"wrote translations of {len(inputs) - len(unreadable)} images to {out}")
    if unreadable:
        raise DataError(f"{len(unreadable)} of the {len(inputs)} images in {args.input} could not be read "
                        f"(listed above, e.g. {unreadable[0]}); the others were translated")


def cmd_interpolate(args: argparse.Namespace) -> None:
    from stargan.api import Translator

    translator = Translator.load(args.run, device=args.device, fan_weights=args.fan_weights,
                                 masks=masks_choice(args))
    note_masks(translator.config.model)
    domains = args.domains.split(",") if args.domains else [args.domain] * len(args.references)
    if len(domains) != len(args.references):
        raise SystemExit(f"error: {len(args.references)} references but {len(domains)} domains")
    path = translator.interpolate(args.input, args.references, domains, args.out,
                                  frames_per_transition=args.frames, fps=args.fps)
    print(f"wrote {path}")


def cmd_import_official(args: argparse.Namespace) -> None:
    from stargan.official import import_official, import_official_v1

    if args.model == "v1":
        g_ckpt, d_ckpt = (args.checkpoint + [None])[:2]
        names = tuple(args.domains.split(",")) if args.domains else None
        ckpt = import_official_v1(g_ckpt, d_ckpt, out_dir=args.out, names=names, c_dim=args.c_dim)
        print(f"imported {g_ckpt} -> {ckpt}\nsample with: stargan sample {args.out} --data DIR")
        return
    if len(args.checkpoint) != 1:
        raise ValueError(f"a StarGAN v2 import takes one *_nets_ema.ckpt file, got {len(args.checkpoint)}; "
                         "two files (G.ckpt D.ckpt) are a StarGAN v1 import: add --model v1")
    args.checkpoint = args.checkpoint[0]
    domains = tuple(args.domains.split(",")) if args.domains else None
    ckpt = import_official(args.checkpoint, args.out, domains=domains)
    print(f"imported {args.checkpoint} -> {ckpt}")
    report_import_masks(Path(args.out))
    print(f"sample with: stargan sample {args.out} --data DIR")


def cmd_data_fashion_mnist(args: argparse.Namespace) -> None:
    from stargan.data.fashion_mnist import make_fashion_mnist

    out = make_fashion_mnist(args.out, classes=args.classes, source=args.source,
                             max_per_class=args.max_per_class, progress=not args.no_progress)
    print(f"wrote {out}/train and {out}/val; train with: stargan train --preset fmnist_shoes --data {out}")


def eval_settings(args: argparse.Namespace, base: EvalConfig) -> EvalConfig:
    """The run's eval settings with the command line's choices on top."""
    chosen = {"mode": args.mode, "num_outs": args.num_outs, "max_inputs": args.max_inputs,
              "backbone": args.backbone, "weights": args.weights, "lpips_weights": args.lpips_weights,
              "classifier": args.classifier, "batch_size": args.batch_size,
              "lpips": False if args.no_lpips else None}
    return dataclasses.replace(base, **{k: v for k, v in chosen.items() if v is not None})


def cmd_eval(args: argparse.Namespace) -> None:
    from stargan import checkpoints
    from stargan.metrics.evaluate import evaluate_run, headline

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
    print(f"wrote {path}")


def cmd_serve(args: argparse.Namespace) -> None:
    from stargan.serve import serve

    try:
        serve(args.run, host=args.host, port=args.port, device=args.device)
    except ImportError as err:  # the serve extra is missing
        raise SystemExit(f"error: {err}") from err


def cmd_download(args: argparse.Namespace) -> None:
    from stargan import download

    if args.list:
        print("\n".join(download.catalog_lines()))
        return
    if not args.names:
        raise SystemExit("error: name what to download (or --list); e.g. stargan download afhq")
    for name in args.names:
        made = download.download(name, args.dir, args.runs, data=args.data, progress=not args.no_progress)
        print("\n".join(str(path) for path in made))
        if download.CATALOG[name].model:
            print(f"try it: stargan serve {made[-1]}")


def cmd_classifier_train(args: argparse.Namespace) -> None:
    from stargan.metrics.classifier import train_classifier

    result = train_classifier(args.data, args.img_size, args.out, epochs=args.epochs, seed=args.seed,
                              device=args.device, progress=not args.no_progress)
    print(f"val accuracy {result.val_accuracy:.4f} (train {result.train_accuracy:.4f}); wrote {result.path}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="stargan", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def add_offline(p: argparse.ArgumentParser) -> None:
        p.add_argument("--offline", action="store_true", help="never download missing weight files (as "
                       "STARGAN_OFFLINE=1): stop with what to fetch instead")

    def add_threads(p: argparse.ArgumentParser) -> None:
        p.add_argument("--threads", type=int, help="CPU threads for torch (default: one per core, less the "
                       "cores other processes keep busy at the start; or OMP_NUM_THREADS)")

    def add_train_options(p: argparse.ArgumentParser) -> None:
        add_threads(p)
        p.add_argument("--runs", default="runs", help="parent folder of numbered run directories")
        p.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="override a config value, e.g. --set optim.lr=2e-4 (repeatable)")
        p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
        add_offline(p)
        add_mask_options(p)

    p = sub.add_parser("train", help="train StarGAN v2 (or v1: --model v1) on a dataset")
    p.add_argument("--model", choices=["v2", "v1"], help="StarGAN v2 (default) or v1; picks the default "
                   "preset (cpu or cpu-v1) and checks --preset against it")
    p.add_argument("--preset", choices=available_presets(), help="config preset (default: cpu, or cpu-v1 "
                   "with --model v1); see `stargan presets`")
    p.add_argument("--data", help="dataset folder holding train/ and val/")
    p.add_argument("--run-dir", help="exact run directory (default: RUNS/NNNNN-PRESET)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--skip-bad-images", action="store_true", help="skip unreadable images with a warning")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"],
                   help="train.precision: fp32 (default, the paper's math), bf16 (CPU/CUDA), fp16 (CUDA)")
    add_train_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("demo", help="make the built-in shapes dataset and train the demo preset on it")
    p.add_argument("--data", default=str(DEMO_DATA), help="where to write the demo dataset")
    p.add_argument("--run-dir")
    add_train_options(p)
    p.set_defaults(func=cmd_demo)

    def add_model_options(p: argparse.ArgumentParser) -> None:
        p.add_argument("run", help="run directory or checkpoint directory")
        p.add_argument("--device", default="cpu")
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--psi", type=float, default=1.0, help="truncation towards the mean style (1 = none)")
        add_offline(p)
        add_mask_options(p)

    p = sub.add_parser("sample", help="latent, reference and cycle grids from a trained run")
    add_model_options(p)
    p.add_argument("--data", help="dataset folder (default: the run's)")
    p.add_argument("--out", help="output folder (default: RUN/samples)")
    p.add_argument("--num-images", type=int, default=8)
    p.add_argument("--num-styles", type=int, default=4)
    p.set_defaults(func=cmd_sample)

    p = sub.add_parser("translate", help="translate images into a target domain")
    add_model_options(p)
    p.add_argument("--input", required=True, help="an image or a folder of images")
    p.add_argument("--domain", required=True, help="target domain name")
    p.add_argument("--reference", help="reference image of the target domain (else random styles)")
    p.add_argument("--num-styles", type=int, default=4)
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_translate)

    p = sub.add_parser("interpolate", help="GIF/MP4 interpolating styles between reference images")
    add_model_options(p)
    p.add_argument("--input", required=True, help="source image")
    p.add_argument("--references", nargs="+", required=True)
    p.add_argument("--domain", help="domain of all references")
    p.add_argument("--domains", help="comma-separated domain of each reference")
    p.add_argument("--frames", type=int, default=30, help="frames per transition")
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--out", required=True, help="output .gif or .mp4")
    p.set_defaults(func=cmd_interpolate)

    p = sub.add_parser("import-official", help="turn official StarGAN v2 (or v1) checkpoints into a run")
    p.add_argument("checkpoint", nargs="+", help="v2: NNNNNN_nets_ema.ckpt; v1: NNNNNN-G.ckpt [NNNNNN-D.ckpt]")
    p.add_argument("--model", choices=["v2", "v1"], default="v2")
    p.add_argument("--out", required=True, help="run directory to create")
    p.add_argument("--domains", help="comma-separated domain (v1: label) names (default: female,male or "
                   "cat,dog,wild; v1: the CelebA attributes or RaFD expressions)")
    p.add_argument("--c-dim", type=int, help="v1 with two datasets: the first dataset's label length (5)")
    p.set_defaults(func=cmd_import_official)

    add_align_command(sub)

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

    p = sub.add_parser("serve", help="a web page (Gradio) that translates uploaded images; needs stargan[serve]")
    p.add_argument("run", help="run directory (its latest checkpoint) or checkpoint directory")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda:0, ...")
    add_offline(p)
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("download", help="released models (imported into RUNS/NAME-official) and metric weights")
    p.add_argument("names", nargs="*", metavar="NAME", help="what to fetch; `--list` shows the names")
    p.add_argument("--list", action="store_true", help="print name, file, hash, licence and source of each file")
    p.add_argument("--dir", help="where files go (default: torch hub's checkpoint folder, where they are looked for)")
    p.add_argument("--runs", default="runs", help="where released models are imported as NAME-official")
    p.add_argument("--data", default="data", help="where datasets (afhq-data, celeba_hq-data) are unpacked")
    p.add_argument("--no-progress", action="store_true")
    add_offline(p)
    p.set_defaults(func=cmd_download)

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

    p = sub.add_parser("data", help="make a ready-to-train dataset from local files")
    data_sub = p.add_subparsers(dest="dataset", required=True)
    p = data_sub.add_parser("fashion-mnist", help="Fashion-MNIST classes as train/val domain folders (32 px)")
    p.add_argument("--classes", default="sandal,sneaker,ankle_boot", help="comma-separated class names")
    p.add_argument("--source", default="/usr/share/datasets/fashion-mnist",
                   help="folder with the four idx files (apt-get install dataset-fashion-mnist)")
    p.add_argument("--out", required=True, help="dataset folder to write (train/ and val/)")
    p.add_argument("--max-per-class", type=int, default=0, help="cap per class and split (0 = all)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=cmd_data_fashion_mnist)

    p = sub.add_parser("presets", help="list the config presets")
    p.set_defaults(func=lambda args: print("\n".join(f"{name:14s} StarGAN {load_preset(name).arch}"
                                                    for name in available_presets())))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    warnings.simplefilter("default")
    if getattr(args, "offline", False):
        os.environ["STARGAN_OFFLINE"] = "1"  # read by stargan.download wherever a file would be fetched
    from stargan.checkpoints import CheckpointWriteError
    from stargan.threads import choose_threads
    from stargan.training.runner import TrainingFailed, TrainingStopped

    try:
        if "threads" in args:  # the long jobs: training, evaluation
            choose_threads(args.threads)
        args.func(args)
    except TrainingStopped as stop:  # a stop signal, after saving: 128 + signal number (130 for Ctrl-C)
        print(stop, file=sys.stderr)
        return stop.exit_status
    except (TrainingFailed, CheckpointWriteError) as err:  # the last good checkpoint is kept
        if err.__cause__ is not None and not isinstance(err, CheckpointWriteError):
            traceback.print_exception(err.__cause__)
        print(f"error: {err}", file=sys.stderr)
        return 1
    except (ValueError, FileNotFoundError) as err:  # user errors: one clear line, no traceback
        print(f"error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # a second Ctrl-C: stopped at once, the last checkpoint stays
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
