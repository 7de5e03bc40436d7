"""`stargan export`: a checkpoint's networks as ONNX graphs, which :mod:`stargan.runtime` runs without torch.

A StarGAN v2 export holds the EMA networks: ``mapping_network.onnx`` F(z, y) -> s, ``style_encoder.onnx``
E(x, y) -> s and ``generator.onnx`` G(x, s) -> image; a w_hpf > 0 model (CelebA-HQ) adds
``masks.onnx``, the FAN landmark network with its heatmaps-to-masks steps, x -> (mask_coarse,
mask_fine), whose outputs are G's last two inputs (so one source's masks serve all its styles), and
``mean_styles.npy`` holds each domain's mean style for psi. A v1 export holds G(x, c) -> image. Every
graph has a dynamic batch axis; ``manifest.json`` (:mod:`stargan.runtime.manifest`) says the rest.

The folder is built beside its destination, checked (ONNX Runtime's translations against PyTorch's,
in 8-bit levels, recorded in the manifest) and renamed into place: a failed export leaves nothing
behind, and every problem known in advance (no checkpoint, missing FAN weights, a folder already in
use, onnx not installed) stops it before any file is written.
"""
from __future__ import annotations

import contextlib
import io
import os
import re
import shutil
import warnings
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path

import numpy as np
import torch
from torch import nn

import stargan
from stargan import checkpoints
from stargan.config import AnyConfig, Config, V1Config
from stargan.faces.masks import find_mask_weights
from stargan.faces.weights import load_fan
from stargan.hub import run_licence, sha256_file
from stargan.nets.v1 import Generator as V1Generator
from stargan.nets.v2 import Networks
from stargan.runtime import v1 as runtime_v1, v2 as runtime_v2
from stargan.runtime.images import to_uint8
from stargan.runtime.manifest import (MANIFEST_FILE, MEAN_STYLES_FILE, ExportError, Graph, Manifest, Source,
                                      read_manifest)
from stargan.runtime.sessions import session_opener
from stargan.sampling.v2 import mean_style, translate

OPSET = 18                   # the dynamo exporter's own opset (no version conversion); ONNX Runtime >= 1.14
EXPORTERS = ("auto", "dynamo", "torchscript")  # auto: dynamo, and TorchScript for a graph dynamo fails on
MEAN_STYLE_LATENTS = 10_000  # latent codes averaged per domain for psi (as stargan.sampling.v2.mean_style)
CHECK_LEVELS = 1             # allowed difference between ONNX Runtime and PyTorch, in 8-bit levels
INSTALL_HINT = "pip install 'stargan[onnx]' (onnx, onnxscript and onnxruntime)"


def check_installed() -> dict[str, str]:
    """The versions of the packages an export needs; ImportError naming the extra when one is missing."""
    versions = {}
    for name in ("onnx", "onnxscript", "onnxruntime"):
        try:
            versions[name] = __import__(name).__version__
        except ImportError as error:
            raise ImportError(f"`stargan export` needs {name}: {INSTALL_HINT}") from error
    return versions


def export_onnx(path: str | os.PathLike[str], out: str | os.PathLike[str], *,
                fan_weights: str | os.PathLike[str] | None = None, masks: bool | None = None,
                exporter: str = "auto") -> Manifest:
    """Export the checkpoint ``path`` (or a run's latest) into the new folder ``out``.

    ``fan_weights`` and ``masks`` (False: a w_hpf > 0 generator without face masks) are those of
    :meth:`stargan.api.Translator.load`. ``exporter``: one of :data:`EXPORTERS`.
    """
    if exporter not in EXPORTERS:
        raise ValueError(f"exporter {exporter!r}: expected one of {', '.join(EXPORTERS)}")
    versions = check_installed()
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ExportError(f"{out} already exists and is not an empty folder; choose a new --out folder "
                          "(or delete the old export)")
    if Path(path).is_file():
        raise ExportError(f"{path} is a file; export takes a run directory or a checkpoint directory "
                          "(official .ckpt files: `stargan import-official` them first)")
    ckpt = checkpoints.resolve_checkpoint(path)
    config = checkpoints.load_config(ckpt)
    if config.arch == "v2":
        config, nets = checkpoints.load_for_sampling(ckpt)
        if masks is not None:
            config = config.with_overrides([f"model.masks={str(masks).lower()}"])
        fan_path = find_mask_weights(config.model, fan_weights, run=path)  # WeightsError before any file
        domains = tuple(config.data.domains)
        if len(domains) != config.model.num_domains:
            raise ExportError(f"{ckpt}: config.data.domains names {len(domains)} domains {domains} but the "
                              f"model has {config.model.num_domains}; they must match")
    else:
        if masks is not None or fan_weights is not None:
            raise ValueError("--fan-weights and --no-masks are for StarGAN v2 models with w_hpf > 0; this "
                             "checkpoint is StarGAN v1")
        config, generator = checkpoints.load_v1_for_sampling(ckpt)
        fan_path = None
    about = Manifest(arch=config.arch, img_size=config.model.img_size, domains=(), graphs={},
                     source=_source(ckpt, config, fan_path), licence=_licence(ckpt, config), opset=OPSET,
                     exporter=(f"torch.onnx.export, torch {torch.__version__}, "
                               + ", ".join(f"{k} {v}" for k, v in versions.items())
                               + f", stargan {stargan.__version__}"))
    if config.arch == "v2":
        return _write_atomically(out, partial(_write_v2, about=about, config=config, nets=nets,
                                              fan_path=fan_path, exporter=exporter))
    return _write_atomically(out, partial(_write_v1, about=about, config=config, generator_net=generator,
                                          exporter=exporter))


def _write_atomically(out: Path, build: Callable[[Path], Manifest]) -> Manifest:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        manifest = build(tmp)
        (tmp / MANIFEST_FILE).write_text(manifest.to_json())
        read_manifest(tmp)  # what the runtime will check
        if out.is_dir():
            out.rmdir()     # empty (checked before)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _source(ckpt: Path, config: AnyConfig, fan_path: Path | None) -> Source:
    return Source(checkpoint=str(ckpt.resolve()), sha256=sha256_file(ckpt / "networks.safetensors"),
                  step=checkpoints.step_of(ckpt), preset=config.preset,
                  fan_weights=str(fan_path.resolve()) if fan_path else "",
                  fan_sha256=sha256_file(fan_path) if fan_path else "")


def _licence(ckpt: Path, config: AnyConfig) -> str | None:
    return run_licence(config.preset, checkpoints.run_dir_of(ckpt)) or None


# ------------------------------------------------------------------------------------------------
# Graphs

class _Method(nn.Module):
    """``owner.method`` as a module's forward: what torch.onnx.export traces (FAN.get_heatmap)."""

    def __init__(self, owner: nn.Module, method: str):
        super().__init__()
        self.owner = owner
        self.method = method

    def forward(self, x: torch.Tensor):  # one named input: what dynamic_shapes can describe
        return getattr(self.owner, self.method)(x)


def export_graph(module: nn.Module, args: tuple, file: Path, inputs: tuple[str, ...], outputs: tuple[str, ...],
                 exporter: str = "auto", about: str = "") -> Graph:
    """One ONNX file of ``module`` on example ``args`` (batch axis dynamic); the exporter that worked."""
    errors = []
    for kind in (("dynamo", "torchscript") if exporter == "auto" else (exporter,)):
        try:
            with torch.no_grad(), warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
                warnings.simplefilter("ignore")  # the exporters' progress and deprecation notes
                if kind == "dynamo":
                    batch = torch.export.Dim("batch", min=1)
                    shapes = tuple(tuple({0: batch} for _ in a) if isinstance(a, tuple) else {0: batch}
                                   for a in args)
                    torch.onnx.export(module, args, file, dynamo=True, input_names=list(inputs),
                                      output_names=list(outputs), dynamic_shapes=shapes, opset_version=OPSET,
                                      external_data=False)
                else:
                    torch.onnx.export(module, args, file, dynamo=False, input_names=list(inputs),
                                      output_names=list(outputs), opset_version=OPSET,
                                      dynamic_axes={name: {0: "batch"} for name in inputs + outputs})
            return Graph(file=file.name, inputs=inputs, outputs=outputs, exporter=kind, sha256=sha256_file(file),
                         about=about)
        except Exception as error:  # each exporter fails in its own ways
            errors.append(f"{kind}: {_reason(error)}")
            file.unlink(missing_ok=True)
    raise ExportError(f"cannot export {file.stem} to ONNX ({'; '.join(errors)})")


def _reason(error: BaseException) -> str:
    """The first line of the innermost cause (torch.export wraps the one that says what failed)."""
    while error.__cause__ is not None:
        error = error.__cause__
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(error)).strip()  # the exporter colours its messages
    return f"{type(error).__name__}: {(text.splitlines() or [''])[0][:300]}"


def _examples(img_size: int, seed: int = 0) -> tuple[torch.Generator, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return generator, torch.rand(2, 3, img_size, img_size, generator=generator) * 2 - 1


def _write_v2(folder: Path, *, about: Manifest, config: Config, nets: Networks, fan_path: Path | None,
              exporter: str) -> Manifest:
    model = config.model
    generator, x = _examples(model.img_size)
    y = torch.tensor([0, model.num_domains - 1])
    z = torch.randn(2, model.latent_dim, generator=generator)
    s = torch.randn(2, model.style_dim, generator=generator)
    fan = load_fan(fan_path) if fan_path is not None else None
    size, image = model.img_size, f"[batch, 3, {model.img_size}, {model.img_size}] float32 in [-1, 1]"
    graphs = {
        "mapping_network": export_graph(
            nets.mapping_network, (z, y), folder / "mapping_network.onnx", ("z", "y"), ("s",), exporter,
            f"F(z, y) -> s: z [batch, {model.latent_dim}] float32 from N(0, I); y [batch] int64, the target "
            f"domain's index; s [batch, {model.style_dim}] float32, a style code"),
        "style_encoder": export_graph(
            nets.style_encoder, (x, y), folder / "style_encoder.onnx", ("x", "y"), ("s",), exporter,
            f"E(x, y) -> s: x {image}, reference images; y [batch] int64, their domain's index; "
            f"s [batch, {model.style_dim}] float32"),
    }
    generator_about = (f"G(x, s) -> image: x {image}, source images; s [batch, {model.style_dim}] float32; "
                       f"image [batch, 3, {size}, {size}] float32, clip to [-1, 1] before 8 bits")
    if fan is not None:
        graphs["masks"] = export_graph(
            _Method(fan, "get_heatmap"), (x,), folder / "masks.onnx", ("x",), ("mask_coarse", "mask_fine"),
            exporter, f"the FAN face masks of x {image}: mask_coarse, mask_fine [batch, 1, 256, 256] float32 "
            "in [0, 1], the generator's last two inputs for the same images")
        graphs["generator"] = export_graph(
            nets.generator, (x, s, fan.get_heatmap(x)), folder / "generator.onnx",
            ("x", "s", "mask_coarse", "mask_fine"), ("image",), exporter,
            generator_about.replace("G(x, s)", "G(x, s, mask_coarse, mask_fine)") + "; masks from masks.onnx")
    else:
        graphs["generator"] = export_graph(nets.generator, (x, s), folder / "generator.onnx", ("x", "s"),
                                           ("image",), exporter, generator_about)
    # One fresh seed per domain: what sampling.v2.translate(psi=..., generator=seed 0) uses for one domain.
    means = torch.cat([mean_style(nets, d, MEAN_STYLE_LATENTS, generator=torch.Generator().manual_seed(0))
                       for d in range(model.num_domains)])
    np.save(folder / MEAN_STYLES_FILE, means.numpy().astype(np.float32), allow_pickle=False)
    manifest = replace(about, domains=tuple(config.data.domains), graphs=graphs, latent_dim=model.latent_dim,
                       style_dim=model.style_dim, w_hpf=model.w_hpf, masks=fan is not None,
                       mean_styles=MEAN_STYLES_FILE, mean_styles_latents=MEAN_STYLE_LATENTS)
    return _with_check(manifest, _check_v2(folder, manifest, nets, fan.get_heatmap if fan is not None else None))


def _write_v1(folder: Path, *, about: Manifest, config: V1Config, generator_net: V1Generator,
              exporter: str) -> Manifest:
    model, data = config.model, config.data
    _, x = _examples(model.img_size)
    c = torch.eye(model.label_dim)[[0, model.label_dim - 1]]
    graphs = {"generator": export_graph(
        generator_net, (x, c), folder / "generator.onnx", ("x", "c"), ("image",), exporter,
        f"G(x, c) -> image: x [batch, 3, {model.img_size}, {model.img_size}] float32 in [-1, 1]; c [batch, "
        f"{model.label_dim}] float32 labels (label_sizes: attributes or one-hot domain, then with two datasets "
        "the other's zeros and a one-hot mask of the dataset); image like x")}
    attributes = tuple(data.attrs) if data.mode in ("celeba", "both") else ()
    num_domains = model.c2_dim if data.mode == "both" else 0 if attributes else model.c_dim
    manifest = replace(about, domains=tuple(data.domains) or tuple(f"domain{i}" for i in range(num_domains)),
                       graphs=graphs, attributes=attributes, crop_size=data.crop_size,
                       label_sizes=(model.c_dim, model.c2_dim) if model.c2_dim else (model.c_dim,))
    return _with_check(manifest, _check_v1(folder, manifest, generator_net))


# ------------------------------------------------------------------------------------------------
# The check: ONNX Runtime against PyTorch on a test batch, in 8-bit levels

def levels(a: np.ndarray, b: np.ndarray) -> int:
    """The largest difference between two image batches in [-1, 1] after conversion to 8 bits."""
    return int(np.abs(to_uint8(a).astype(np.int16) - to_uint8(b).astype(np.int16)).max())


def _with_check(manifest: Manifest, check: dict[str, int]) -> Manifest:
    worst = max(check.values())
    if worst > CHECK_LEVELS:
        raise ExportError(f"ONNX Runtime's translations differ from PyTorch's by up to {worst} levels of 255 "
                          f"({check}; at most {CHECK_LEVELS} allowed), so nothing was written; try another "
                          f"--exporter ({', '.join(EXPORTERS)}) and report it")
    return replace(manifest, check=check)


def _check_v2(folder: Path, manifest: Manifest, nets, mask_fn) -> dict[str, int]:
    graphs = runtime_v2.Graphs(folder, manifest, session_opener("cpu"))
    generator, x = _examples(manifest.img_size, seed=1)
    _, x_ref = _examples(manifest.img_size, seed=2)
    y = torch.tensor([0, len(manifest.domains) - 1])
    z = torch.randn(2, manifest.latent_dim, generator=generator)
    latent = translate(nets, x, y, z=z, mask_fn=mask_fn)
    y0 = torch.zeros(2, dtype=torch.long)  # one domain: translate's mean style is then the exported one
    truncated = translate(nets, x, y0, z=z, psi=0.5, generator=torch.Generator().manual_seed(0), mask_fn=mask_fn)
    reference = translate(nets, x, y, x_ref=x_ref, mask_fn=mask_fn)
    return {"latent": levels(latent.numpy(), graphs.translate(x.numpy(), y.numpy(), z=z.numpy())),
            "latent_psi_0.5": levels(truncated.numpy(),
                                     graphs.translate(x.numpy(), y0.numpy(), z=z.numpy(), psi=0.5)),
            "reference": levels(reference.numpy(), graphs.translate(x.numpy(), y.numpy(), x_ref=x_ref.numpy()))}


def _check_v1(folder: Path, manifest: Manifest, generator_net) -> dict[str, int]:
    graphs = runtime_v1.Graphs(folder, manifest, session_opener("cpu"))
    _, x = _examples(manifest.img_size, seed=1)
    c = (torch.rand(2, sum(manifest.label_sizes) + (2 if len(manifest.label_sizes) > 1 else 0),
                    generator=torch.Generator().manual_seed(3)) > 0.5).float()
    with torch.inference_mode():
        expected = generator_net(x, c)
    return {"labels": levels(expected.numpy(), graphs.translate(x.numpy(), c.numpy()))}
