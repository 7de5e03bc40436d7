"""``stargan sample``, ``translate``, ``interpolate`` and ``serve``: a trained model at work."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from stargan.cli.faces import masks_choice, note_masks
from stargan.cli.inputs import input_images
from stargan.cli.options import add_backend, add_model_options, add_offline, add_threads

LATENT_STYLES = 4  # latent codes per domain of `interpolate --latent` (Translator.interpolate_latent's default)


def cmd_sample(args: argparse.Namespace) -> None:
    from stargan import checkpoints
    from stargan.sampling import v2 as sampling
    from stargan.imaging import save_grid
    from stargan.data import fixed_batch, open_dataset
    from stargan.data.folders import check_domains

    if checkpoints.load_config(args.run).arch == "v1":
        return _v1_sample(args)
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
    grids = sampling.sample_grids(nets, x, y, num_images=args.num_images, num_styles=args.num_styles,
                                  psi=args.psi, seed=args.seed, mask_fn=mask_fn)
    out = Path(args.out or Path(args.run) / "samples")
    written = [save_grid(grid, out / f"{kind}.png") for kind, grid in grids.items()]
    print("\n".join(str(p) for p in written))


def _v1_sample(args: argparse.Namespace) -> None:
    from stargan import checkpoints
    from stargan.sampling import v1 as sampling

    if args.psi != 1.0 or args.num_styles != 4:
        raise ValueError("--psi and --num-styles are StarGAN v2 options (style codes); a v1 run has none")
    config, generator = checkpoints.load_v1_for_sampling(args.run, args.device)
    if args.data:
        config = config.with_overrides([f"data.root={args.data}"])
    if not config.data.root:
        raise SystemExit("error: this run has no dataset recorded; pass --data DIR")
    written = sampling.sample_run(generator, config, Path(args.out or Path(args.run) / "samples"),
                                  num_images=args.num_images, seed=args.seed)
    print("\n".join(str(p) for p in written))


def cmd_translate(args: argparse.Namespace) -> None:
    from tqdm import tqdm

    from stargan.data.images import DataError, load_rgb

    translate, names = (_exported_translation(args) if args.backend == "onnx" else _torch_translation(args))
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
        for name, translated in zip(names, translate(image), strict=True):
            translated.save(out / f"{path.stem}_{name}.png")
    print(f"wrote translations of {len(inputs) - len(unreadable)} images to {out}")
    if unreadable:
        raise DataError(f"{len(unreadable)} of the {len(inputs)} images in {args.input} could not be read "
                        f"(listed above, e.g. {unreadable[0]}); the others were translated")


def _torch_translation(args: argparse.Namespace) -> tuple[Callable, list[str]]:
    """(image -> translated images, their file name endings) for a run or checkpoint (StarGAN v2)."""
    from stargan.api import Translator
    from stargan.data.images import load_rgb

    translator = Translator.load(args.run, device=args.device, fan_weights=args.fan_weights,
                                 masks=masks_choice(args))
    note_masks(translator.config.model)
    return _v2_translation(translator, args, load_rgb(args.reference) if args.reference else None)


def _v2_translation(translator, args: argparse.Namespace, reference) -> tuple[Callable, list[str]]:
    num_styles = 1 if reference is not None else args.num_styles
    names = [args.domain] if reference is not None else [f"{args.domain}_style{k}" for k in range(num_styles)]
    return (lambda image: translator.translate(image, domain=args.domain, reference=reference,
                                               num_styles=num_styles, seed=args.seed, psi=args.psi)), names


def _exported_translation(args: argparse.Namespace) -> tuple[Callable, list[str]]:
    """The same for a folder written by `stargan export`, run by ONNX Runtime; StarGAN v1 exports too:
    ``--domain`` names a domain or, for a CelebA model, the comma-separated attributes of the output."""
    from stargan.data.images import load_rgb
    from stargan.runtime import Translator

    if args.fan_weights or args.no_masks:
        raise ValueError("--fan-weights and --no-masks are chosen when a model is exported (stargan export "
                         "--no-masks); an export computes its face masks as it was exported")
    try:
        translator = Translator.load(args.run, device=args.device, threads=args.threads)
    except ImportError as err:  # onnxruntime is missing
        raise SystemExit(f"error: {err}") from err
    if translator.arch == "v2":
        return _v2_translation(translator, args, load_rgb(args.reference) if args.reference else None)
    if args.reference or args.psi != 1.0 or args.num_styles != 4:
        raise ValueError("--reference, --psi and --num-styles are StarGAN v2 options (style codes); a v1 "
                         "model translates to a domain or a set of attributes (--domain)")
    if args.domain in translator.domains or not translator.attributes:
        target = {"domain": args.domain}
    else:
        target = {"attributes": [name for name in args.domain.split(",") if name]}
    return (lambda image: translator.translate(image, **target)), [args.domain.replace(",", "+")]


def cmd_interpolate(args: argparse.Namespace) -> None:
    from stargan.api import Translator

    _check_interpolate(args)  # the inputs, the output and the options, before the model is loaded
    translator = Translator.load(args.run, device=args.device, fan_weights=args.fan_weights,
                                 masks=masks_choice(args))
    note_masks(translator.config.model)
    replaced = Path(args.out).exists()
    if args.latent:
        domains = args.domains.split(",") if args.domains else args.domain  # None: every domain
        num_styles = LATENT_STYLES if args.num_styles is None else args.num_styles
        path = translator.interpolate_latent(args.input, args.out, domains=domains, num_styles=num_styles,
                                             seed=args.seed, psi=args.psi,
                                             frames_per_transition=args.frames, fps=args.fps)
    else:
        domains = args.domains.split(",") if args.domains else [args.domain] * len(args.references)
        if len(domains) != len(args.references):
            raise SystemExit(f"error: {len(args.references)} references but {len(domains)} domains")
        path = translator.interpolate(args.input, args.references, domains, args.out,
                                      frames_per_transition=args.frames, fps=args.fps)
    print(f"wrote {path}" + (" (it replaced the file that was there)" if replaced else ""))


def _check_interpolate(args: argparse.Namespace) -> None:
    from stargan.animation import check_animation_path

    if args.latent == bool(args.references):
        raise ValueError("interpolate between reference images (--references IMG IMG ...) or "
                         "between latent styles (--latent): give one of them")
    if args.latent and args.domain and args.domains:
        raise ValueError("--domain names one target domain and --domains several; give one of them")
    if not args.latent and args.psi != 1.0:
        raise ValueError("--psi pulls latent styles towards the mean style; the styles of reference "
                         "images have none: use it with --latent")
    if not args.latent and args.num_styles is not None:
        raise ValueError("--num-styles is the number of latent codes per domain of --latent; the "
                         "references are the styles of reference interpolation")
    for image in map(Path, [args.input, *(args.references or [])]):
        if not image.is_file():
            why = "it is a folder; give one image file" if image.is_dir() else "no such file"
            raise FileNotFoundError(f"cannot read image {image}: {why}")
    try:
        check_animation_path(args.out)
    except ImportError as err:  # the video extra is missing
        raise SystemExit(f"error: {err}") from err


def cmd_serve(args: argparse.Namespace) -> None:
    from stargan.serve import serve

    try:
        serve(args.run, host=args.host, port=args.port, device=args.device, backend=args.backend,
              threads=args.threads)
    except ImportError as err:  # the serve extra is missing
        raise SystemExit(f"error: {err}") from err


def add_commands(sub) -> None:
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
    add_backend(p)
    p.set_defaults(func=cmd_translate)

    p = sub.add_parser("interpolate", help="GIF/MP4 of an image while its style moves between reference "
                       "images, or (--latent) through each domain's latent styles")
    add_model_options(p)
    p.add_argument("--input", required=True, help="source image")
    p.add_argument("--references", nargs="+", help="reference images to interpolate between")
    p.add_argument("--latent", action="store_true", help="walk between the styles of latent codes "
                   "(mapping network; --seed, --psi) of each target domain instead of references")
    p.add_argument("--domain", help="domain of all references; with --latent: the one target domain")
    p.add_argument("--domains", help="comma-separated domain of each reference; with --latent: the target "
                   "domains in order (default: all of the model's)")
    p.add_argument("--num-styles", type=int, help=f"with --latent: latent codes per domain "
                   f"(default {LATENT_STYLES})")
    p.add_argument("--frames", type=int, default=30, help="frames per transition")
    p.add_argument("--fps", type=int, default=30)
    p.add_argument("--out", required=True, help="output .gif or .mp4")
    p.set_defaults(func=cmd_interpolate)

    p = sub.add_parser("serve", help="a web page (Gradio) that translates uploaded images; needs stargan[serve]")
    p.add_argument("run", help="run directory (its latest checkpoint) or checkpoint directory; with "
                   "--backend onnx, a folder written by `stargan export`")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default: this machine only)")
    p.add_argument("--port", type=int, default=7860)
    p.add_argument("--device", default="auto", help="auto (CUDA when available), cpu, cuda:0, ...")
    add_threads(p)
    add_offline(p)
    add_backend(p)
    p.set_defaults(func=cmd_serve)
