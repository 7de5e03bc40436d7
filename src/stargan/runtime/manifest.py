"""``manifest.json``: what an export folder holds, read and written here so both sides share one format.

`stargan export` (:mod:`stargan.export`) writes the folder; the runtime reads it. The manifest names
each ONNX graph with its inputs and outputs in order, the model's domains, image size and value range,
the style and latent sizes (v2) or label layout (v1), the checkpoint it came from (with the SHA-256 of
its networks file), the licence of an imported release, and how the export was made and checked.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import MISSING, asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

FORMAT = "stargan-onnx/1"
MANIFEST_FILE = "manifest.json"
VALUE_RANGE = (-1.0, 1.0)  # every image input and output: RGB, NCHW float32, x / 127.5 - 1
PREPROCESSING = ("8-bit RGB; v1: center crop to crop_size when 0 < crop_size <= both sides; resize to "
                 "img_size x img_size (Pillow bilinear); x / 255 * 2 - 1; NCHW float32. Outputs back to "
                 "8 bits: round((clip(x, -1, 1) + 1) * 127.5)")
MEAN_STYLES_FILE = "mean_styles.npy"


V2_FIELDS = ("latent_dim", "style_dim", "w_hpf", "masks", "mean_styles", "mean_styles_latents")
V1_FIELDS = ("attributes", "label_sizes", "crop_size")


class ExportError(ValueError):
    """An export folder that cannot be used (or written); the message says which file and what to do."""


@dataclass(frozen=True)
class Graph:
    """One ONNX file of an export. The first axis of every input and output is the (dynamic) batch."""

    file: str
    inputs: tuple[str, ...]    # in order; names of the graph's inputs
    outputs: tuple[str, ...]
    exporter: str              # "dynamo" (torch.onnx.export(dynamo=True)) or "torchscript" (dynamo=False)
    sha256: str = ""
    about: str = ""            # the inputs' and outputs' shapes, types and meaning


@dataclass(frozen=True)
class Source:
    """Where the weights of an export came from."""

    checkpoint: str            # the checkpoint directory
    sha256: str                # of its networks.safetensors
    step: int = 0
    preset: str = ""           # "official:FILE" for an imported release
    fan_weights: str = ""      # w_hpf > 0 with masks: the FAN weight file inside masks.onnx
    fan_sha256: str = ""


@dataclass(frozen=True)
class Manifest:
    arch: str                            # "v2" or "v1"
    img_size: int
    domains: tuple[str, ...]             # v2: one per style head; v1: folder domains (may be empty)
    graphs: dict[str, Graph]             # v2: mapping_network, style_encoder, generator[, masks]; v1: generator
    source: Source
    licence: str | None                  # of an imported release; None for one's own model
    opset: int
    exporter: str                        # torch.onnx and torch version
    value_range: tuple[float, float] = VALUE_RANGE
    preprocessing: str = PREPROCESSING
    # StarGAN v2
    latent_dim: int = 0
    style_dim: int = 0
    w_hpf: float = 0.0
    masks: bool = False                  # masks.onnx gives the generator's last two inputs (w_hpf > 0)
    mean_styles: str = ""                # .npy [num_domains, style_dim]: psi's mean style of each domain
    mean_styles_latents: int = 0         # latent codes averaged per domain (seed 0)
    # StarGAN v1
    attributes: tuple[str, ...] = ()     # CelebA attributes (mode celeba or both)
    label_sizes: tuple[int, ...] = ()    # G's label layout: (c_dim,) or (c_dim, c2_dim) (+ a mask of 2)
    crop_size: int = 0
    check: dict[str, float] = field(default_factory=dict)  # ONNX Runtime vs PyTorch, in 8-bit levels
    format: str = FORMAT

    def to_json(self) -> str:
        """The manifest as JSON, without the other model kind's fields."""
        other = V1_FIELDS if self.arch == "v2" else V2_FIELDS
        return json.dumps({k: v for k, v in asdict(self).items() if k not in other}, indent=2) + "\n"

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: str = MANIFEST_FILE) -> Manifest:
        if not isinstance(data, dict) or data.get("format") != FORMAT:
            found = data.get("format") if isinstance(data, dict) else type(data).__name__
            raise ExportError(f"{where} is not a stargan ONNX manifest (format {found!r}, expected "
                              f"{FORMAT!r}); write the folder with `stargan export`")
        known = {f.name for f in fields(cls)}
        required = {f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING}
        missing = sorted(required - data.keys())
        if missing:
            raise ExportError(f"{where} lacks {missing}: the export is incomplete; export the checkpoint again")
        values = {k: v for k, v in data.items() if k in known}
        try:
            values["graphs"] = {name: Graph(**{**g, "inputs": tuple(g["inputs"]), "outputs": tuple(g["outputs"])})
                                for name, g in data["graphs"].items()}
            values["source"] = Source(**data["source"])
        except (TypeError, KeyError, AttributeError) as error:
            raise ExportError(f"{where}: malformed graphs or source entry ({error}); export again") from error
        for key in ("domains", "value_range", "attributes", "label_sizes"):
            if key in values:
                values[key] = tuple(values[key])
        return cls(**values)



def sha256_file(path: str | os.PathLike[str]) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def read_manifest(folder: str | os.PathLike[str]) -> Manifest:
    """The manifest of an export folder, checked: its graphs and files are there."""
    folder = Path(folder)
    path = folder / MANIFEST_FILE
    if not path.is_file():
        hint = (" (a run or checkpoint directory: export it first with `stargan export RUN --out DIR`)"
                if (folder / "checkpoints").is_dir() or (folder / "state.pt").is_file() else "")
        raise ExportError(f"{path} not found: {folder} is not a folder written by `stargan export`{hint}")
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise ExportError(f"cannot read {path}: {error}") from error
    manifest = Manifest.from_dict(data, str(path))
    expected = {"v2": ("mapping_network", "style_encoder", "generator") + (("masks",) if manifest.masks else ()),
                "v1": ("generator",)}
    if manifest.arch not in expected:
        raise ExportError(f"{path}: unknown arch {manifest.arch!r} (expected v2 or v1)")
    missing = [name for name in expected[manifest.arch] if name not in manifest.graphs]
    files = [g.file for g in manifest.graphs.values()] + ([manifest.mean_styles] if manifest.mean_styles else [])
    absent = [name for name in files if not (folder / name).is_file()]
    if missing or absent:
        raise ExportError(f"{folder} is incomplete: " + "; ".join(
            part for part in (f"the manifest lists no {missing} graph" if missing else "",
                              f"{absent} missing" if absent else "") if part)
            + "; export the checkpoint again")
    return manifest
