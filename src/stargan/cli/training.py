"""``stargan train``, ``demo``, ``presets`` and ``bench``."""
from __future__ import annotations

import argparse
import functools
from pathlib import Path
from typing import TYPE_CHECKING

from stargan.cli.faces import add_mask_options, mask_overrides
from stargan.cli.options import add_offline, add_threads
from stargan.config import AnyConfig, available_presets, load_config_yaml, load_preset

if TYPE_CHECKING:
    from stargan.training.v2.finetune import InitFrom

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
    overrides = _overrides(args)
    if args.data:
        overrides.append(f"data.root={args.data}")
    if args.skip_bad_images:
        overrides.append("data.skip_bad_images=true")
    return config.with_overrides(overrides + mask_overrides(args) + _precision_override(args))


def _overrides(args: argparse.Namespace) -> list[str]:
    """``--set`` items; the ``init`` section records what ``--init-from`` did and is not set by hand."""
    overrides = list(args.set or [])
    by_hand = [item for item in overrides if item.strip().startswith("init.")]
    if by_hand:
        raise ValueError(f"--set {by_hand[0]}: the init section records the trained model a run started from "
                         "(written by --init-from), it is not set by hand")
    return overrides


def _init_from_args(args: argparse.Namespace) -> tuple[AnyConfig, InitFrom]:
    """The config of a new run that starts from ``--init-from``'s trained model (StarGAN v2 only): the
    preset's and --set's settings with the parent's model section; and what to start from."""
    from stargan.training.v2 import finetune

    if args.model == "v1":
        raise ValueError(f"--model v1: {finetune.V2_ONLY}")
    copies = finetune.parse_copies(args.init_domain or [])
    config = _config_from_args(args)
    if config.arch != "v2":
        raise ValueError(f"--preset {config.preset} is a StarGAN v1 preset: {finetune.V2_ONLY}")
    parent = finetune.read_parent(args.init_from)
    explicit = {item.partition("=")[0].strip().removeprefix("model.") for item in args.set or []
                if item.strip().startswith("model.")}
    explicit |= {"masks"} if args.no_masks else set()
    explicit |= {"fan_weights"} if args.fan_weights else set()
    config, replaced = finetune.start_config(config, parent, explicit)
    return config, finetune.InitFrom(parent, copies, replaced)


def _precision_override(args: argparse.Namespace) -> list[str]:
    return [f"train.precision={args.precision}"] if getattr(args, "precision", None) else []


def cmd_train(args: argparse.Namespace) -> Path:
    from stargan.distributed import broadcast, init_from_env
    from stargan.training.runner import new_run_dir
    from stargan.training.v1 import loop as v1_loop
    from stargan.training.v2 import loop as v2_loop

    world = init_from_env()  # several processes under torchrun, else one

    _check_init_options(args)
    init_from = None
    if args.resume:
        run_dir = Path(args.resume)
        if not (run_dir / "config.yaml").is_file():
            raise SystemExit(f"error: {run_dir} is not a run directory (no config.yaml); "
                             "--resume takes the directory a previous `stargan train` created")
        config = load_config_yaml(run_dir / "config.yaml").with_overrides(_overrides(args)
                                                                          + _precision_override(args))
        if args.data:
            config = config.with_overrides([f"data.root={args.data}"])
        if config.arch == "v2":
            config = config.with_overrides(mask_overrides(args))
    else:
        config, init_from = _init_from_args(args) if args.init_from else (_config_from_args(args), None)
        run_dir = Path(args.run_dir) if args.run_dir else new_run_dir(args.runs, config.preset)
        run_dir = broadcast(run_dir, world)
    if config.arch == "v2":
        from stargan.faces.masks import find_mask_weights

        find_mask_weights(config.model, run=run_dir)  # w_hpf > 0 without FAN weights: stop before work
    if world.is_main:
        print(f"run directory: {run_dir}")
    train = functools.partial(v2_loop.train, init_from=init_from) if config.arch == "v2" else v1_loop.train
    ckpt = train(config, run_dir, resume=bool(args.resume), show_progress=not args.no_progress, world=world)
    if world.is_main:
        _report(run_dir, ckpt)
    if world.is_distributed:
        import torch.distributed as dist

        dist.destroy_process_group()
    return run_dir


def _check_init_options(args: argparse.Namespace) -> None:
    if args.init_from and args.resume:
        raise ValueError("--init-from starts a new run from a trained model and --resume continues a run; "
                         "pass one of them")
    if args.init_domain and not args.init_from:
        raise ValueError("--init-domain says how --init-from's model starts a new domain; pass --init-from too")


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
                                    "resume": None, "skip_bad_images": False, "init_from": None,
                                    "init_domain": None}))


def cmd_bench(args: argparse.Namespace) -> None:
    """The s/iter of a preset's candidate speed settings on this machine, and what ``auto`` picks."""
    import dataclasses

    import torch

    from stargan import hardware
    from stargan.training.v2.probe import resolve_speed
    from stargan.training.runner import resolve_device

    config = load_preset(args.preset).with_overrides(list(args.set or []) + _precision_override(args))
    if config.arch != "v2":
        raise SystemExit(f"error: stargan bench measures the StarGAN v2 step; {args.preset} is a v1 preset")
    config = dataclasses.replace(config, model=dataclasses.replace(config.model, num_domains=args.domains))
    device = resolve_device(config.train.device)
    print(f"machine: {hardware.describe(device)}; {torch.get_num_threads()} threads")
    t = config.train
    other = {"fp32": "bf16", "bf16": "fp32"}
    shipped = dataclasses.replace(config, train=dataclasses.replace(
        t, compile=False if args.no_compile else t.compile))
    picked, lines, _ = resolve_speed(shipped, device, fresh=True)  # measured now; cached for `train`
    for line in lines:
        print(line)
    if picked.train.precision in other and device.type in ("cpu", "cuda"):  # the precision not picked
        alt = dataclasses.replace(config, train=dataclasses.replace(
            t, precision=other[picked.train.precision], channels_last="auto", compile=False))
        for line in resolve_speed(alt, device, fresh=True)[1]:
            print(line)
    p = picked.train
    print(f"{args.preset} (precision {t.precision}, channels_last {str(t.channels_last).lower()}, compile "
          f"{str(t.compile).lower()}) runs here with: precision={p.precision}, channels_last="
          f"{str(p.channels_last).lower()}, compile={str(p.compile).lower()}"
          + (" (compile left out: --no-compile)" if args.no_compile else ""))


def add_train_options(p: argparse.ArgumentParser) -> None:
    add_threads(p)
    p.add_argument("--runs", default="runs", help="parent folder of numbered run directories")
    p.add_argument("--set", action="append", metavar="KEY=VALUE",
                   help="override a config value, e.g. --set optim.lr=2e-4 (repeatable)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")
    add_offline(p)
    add_mask_options(p)


def add_commands(sub) -> None:
    p = sub.add_parser("train", help="train StarGAN v2 (or v1: --model v1) on a dataset")
    p.add_argument("--model", choices=["v2", "v1"], help="StarGAN v2 (default) or v1; picks the default "
                   "preset (cpu or cpu-v1) and checks --preset against it")
    p.add_argument("--preset", choices=available_presets(), help="config preset (default: cpu, or cpu-v1 "
                   "with --model v1); see `stargan presets`")
    p.add_argument("--data", help="dataset folder holding train/ and val/")
    p.add_argument("--run-dir", help="exact run directory (default: RUNS/NNNNN-PRESET)")
    p.add_argument("--resume", metavar="RUN_DIR", help="continue the run in RUN_DIR from its last checkpoint")
    p.add_argument("--init-from", metavar="RUN_OR_CHECKPOINT", help="start a new run from a trained StarGAN v2 "
                   "model (a run, a checkpoint, an imported release): its networks and their shapes, heads "
                   "kept by domain name; fresh optimizers and step (README: Start from a trained model)")
    p.add_argument("--init-domain", action="append", metavar="NEW=OLD", help="with --init-from: start the "
                   "heads of NEW, a domain the model lacks, as copies of OLD's (default: halfway from the mean "
                   "of all its heads to a dropped domain's, the dropped domains in order, then the mean; "
                   "repeatable)")
    p.add_argument("--skip-bad-images", action="store_true", help="skip unreadable images with a warning")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"],
                   help="train.precision (default: the preset's; auto for the CPU presets, fp32 for the "
                   "paper's): auto = bf16 where the hardware runs it natively, else fp32; fp32 = the "
                   "paper's math; bf16 (CPU/CUDA); fp16 (CUDA)")
    add_train_options(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("demo", help="make the built-in shapes dataset and train the demo preset on it")
    p.add_argument("--data", default=str(DEMO_DATA), help="where to write the demo dataset")
    p.add_argument("--run-dir")
    add_train_options(p)
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("bench", help="s/iter of a preset's speed settings on this machine, and what auto picks")
    p.add_argument("--preset", default="cpu-small", choices=available_presets())
    p.add_argument("--domains", type=int, default=3, help="domains of the data (the heads' count)")
    p.add_argument("--precision", choices=["auto", "fp32", "bf16", "fp16"], help="instead of the preset's")
    p.add_argument("--no-compile", action="store_true", help="leave torch.compile out (it takes a minute or "
                   "more to compile on a CPU)")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override a config value")
    add_threads(p)
    p.set_defaults(func=cmd_bench)

    p = sub.add_parser("presets", help="list the config presets")
    p.set_defaults(func=lambda args: print("\n".join(f"{name:14s} StarGAN {load_preset(name).arch}"
                                                    for name in available_presets())))
