"""``stargan import-official``, ``export``, ``download`` and ``data``: models, weights and datasets from
elsewhere, and models for elsewhere (ONNX)."""
from __future__ import annotations

import argparse
from pathlib import Path

from stargan.cli.faces import add_mask_options, masks_choice, report_import_masks
from stargan.cli.options import add_offline, add_threads

EXPORTERS = ("auto", "dynamo", "torchscript")  # stargan.export.EXPORTERS (not imported: it needs torch)


def cmd_import_official(args: argparse.Namespace) -> None:
    from stargan.official import import_official, import_v1_official

    if args.model == "v1":
        g_ckpt, d_ckpt = (args.checkpoint + [None])[:2]
        names = tuple(args.domains.split(",")) if args.domains else None
        ckpt = import_v1_official(g_ckpt, d_ckpt, out_dir=args.out, names=names, c_dim=args.c_dim)
        print(f"imported {g_ckpt} -> {ckpt}\nsample with: stargan sample {args.out} --data DIR")
        return
    if len(args.checkpoint) != 1:
        raise ValueError(f"a StarGAN v2 import takes one *_nets_ema.ckpt file, got {len(args.checkpoint)}; "
                         "two files (G.ckpt D.ckpt) are a StarGAN v1 import: add --model v1")
    (checkpoint,) = args.checkpoint
    domains = tuple(args.domains.split(",")) if args.domains else None
    ckpt = import_official(checkpoint, args.out, domains=domains)
    print(f"imported {checkpoint} -> {ckpt}")
    report_import_masks(Path(args.out))
    print(f"sample with: stargan sample {args.out} --data DIR")


def cmd_export(args: argparse.Namespace) -> None:
    from stargan.export import export_onnx

    try:
        manifest = export_onnx(args.run, args.out, fan_weights=args.fan_weights, masks=masks_choice(args),
                               exporter=args.exporter)
    except ImportError as err:  # the onnx extra is missing
        raise SystemExit(f"error: {err}") from err
    out = Path(args.out)
    files = ", ".join(f"{g.file} ({(out / g.file).stat().st_size / 2**20:.1f} MiB, {g.exporter})"
                      for g in manifest.graphs.values())
    print(f"exported {manifest.source.checkpoint} (StarGAN {manifest.arch}) to {out}: {files}; ONNX Runtime "
          f"matches PyTorch within {max(manifest.check.values())} of 255 levels")
    if manifest.licence:
        print(f"licence: {manifest.licence}")
    target = manifest.domains[-1] if manifest.domains else ",".join(manifest.attributes[:1])
    print(f"try it: stargan translate {out} --backend onnx --input IMAGE --domain {target} --out DIR")


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
        if download.release(name).model:
            print(f"try it: stargan serve {made[-1]}")


def cmd_data_fashion_mnist(args: argparse.Namespace) -> None:
    from stargan.data.fashion_mnist import make_fashion_mnist

    out = make_fashion_mnist(args.out, classes=args.classes, source=args.source,
                             max_per_class=args.max_per_class, progress=not args.no_progress)
    print(f"wrote {out}/train and {out}/val; train with: stargan train --preset fmnist_shoes --data {out}")


def cmd_data_font_styles(args: argparse.Namespace) -> None:
    from stargan.data.font_styles import make_font_styles

    out = make_font_styles(args.out, styles=args.styles, img_size=args.img_size,
                           train_per_domain=args.train_per_domain, val_per_domain=args.val_per_domain,
                           seed=args.seed, progress=not args.no_progress)
    _say_style_set_written(out, "fonts")


def cmd_data_icon_themes(args: argparse.Namespace) -> None:
    from stargan.data.icon_themes import make_icon_themes

    out = make_icon_themes(args.out, themes=args.themes, img_size=args.img_size,
                           train_per_domain=args.train_per_domain, val_per_domain=args.val_per_domain,
                           seed=args.seed, icons_dir=args.icons_dir, progress=not args.no_progress)
    _say_style_set_written(out, "themes")


def _say_style_set_written(out, what: str) -> None:
    print(f"wrote {out}/train and {out}/val ({what} and licences: {out}/README.txt); train with: stargan train "
          f"--preset cpu-style --data {out}. Its val/ is paired by file name: `stargan eval` reports how far "
          "reference-guided outputs are from the true translation (paired_l1)")


def _add_style_set_options(p) -> None:
    """The options the paired style datasets (font-styles, icon-themes) share."""
    p.add_argument("--out", required=True, help="dataset folder to write (train/, val/, README.txt, LICENSES/)")
    p.add_argument("--img-size", type=int, default=32)
    p.add_argument("--train-per-domain", type=int, default=1000)
    p.add_argument("--val-per-domain", type=int, default=100)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")


def add_commands(sub) -> None:
    p = sub.add_parser("import-official", help="turn official StarGAN v2 (or v1) checkpoints into a run")
    p.add_argument("checkpoint", nargs="+", help="v2: NNNNNN_nets_ema.ckpt; v1: NNNNNN-G.ckpt [NNNNNN-D.ckpt]")
    p.add_argument("--model", choices=["v2", "v1"], default="v2")
    p.add_argument("--out", required=True, help="run directory to create")
    p.add_argument("--domains", help="comma-separated domain (v1: label) names (default: female,male or "
                   "cat,dog,wild; v1: the CelebA attributes or RaFD expressions)")
    p.add_argument("--c-dim", type=int, help="v1 with two datasets: the first dataset's label length (5)")
    p.set_defaults(func=cmd_import_official)

    p = sub.add_parser("export", help="ONNX graphs of a trained model, run without torch by stargan.runtime "
                       "(`translate --backend onnx`); needs stargan[onnx]")
    p.add_argument("run", help="run directory (its latest checkpoint) or checkpoint directory")
    p.add_argument("--out", required=True, help="folder to create (new or empty): the .onnx files, manifest.json")
    p.add_argument("--exporter", choices=EXPORTERS, default="auto", help="torch.onnx's exporter: dynamo "
                   "(torch.export), torchscript (the legacy one), or auto: dynamo, else torchscript (default)")
    add_mask_options(p)
    add_threads(p)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("download", help="released models (imported into RUNS/NAME-official) and metric weights")
    p.add_argument("names", nargs="*", metavar="NAME", help="what to fetch; `--list` shows the names")
    p.add_argument("--list", action="store_true", help="print name, file, hash, licence and source of each file")
    p.add_argument("--dir", help="where files go (default: torch hub's checkpoint folder, where they are looked for)")
    p.add_argument("--runs", default="runs", help="where released models are imported as NAME-official")
    p.add_argument("--data", default="data", help="where datasets (afhq-data, celeba_hq-data) are unpacked")
    p.add_argument("--no-progress", action="store_true")
    add_offline(p)
    p.set_defaults(func=cmd_download)

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
    p = data_sub.add_parser("font-styles", help="one picture of a character per file name, drawn in several "
                            "Debian fonts: a style dataset paired by name")
    p.add_argument("--styles", default="sans,serif,script",
                   help="comma-separated styles (sans: fonts-dejavu-core, serif: fonts-liberation2, "
                   "script: fonts-dancingscript)")
    _add_style_set_options(p)
    p.set_defaults(func=cmd_data_font_styles)
    p = data_sub.add_parser("icon-themes", help="one desktop icon per file name, drawn by several Debian icon "
                            "themes: a style dataset of colour pictures paired by name")
    p.add_argument("--themes", default="tango,gnome,elementary",
                   help="comma-separated themes (tango: tango-icon-theme, gnome: gnome-icon-theme, "
                   "elementary: elementary-xfce-icon-theme)")
    p.add_argument("--icons-dir", default="/usr/share/icons", help="where the themes are installed")
    _add_style_set_options(p)
    p.set_defaults(func=cmd_data_icon_themes)
