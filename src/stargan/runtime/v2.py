"""The graphs of an exported StarGAN v2 model, run with ONNX Runtime on numpy arrays.

:meth:`Graphs.translate` is ``stargan.sampling.v2.translate`` without torch: latent codes go through
the mapping network F (and psi pulls them towards the domain's mean style), reference images through
the style encoder E; a w_hpf > 0 model's face masks come from ``masks.onnx`` once per source image.
"""
from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .manifest import Manifest
from .sessions import run


class Graphs:
    """F, E, G (and the face masks) of one export, with the mean styles psi needs."""

    def __init__(self, folder: Path, manifest: Manifest, open_session: Callable[[Path], Any]):
        self.manifest = manifest
        self.sessions = {name: open_session(folder / graph.file) for name, graph in manifest.graphs.items()}
        self.mean_styles = (np.load(folder / manifest.mean_styles, allow_pickle=False)
                            if manifest.mean_styles else None)

    def run(self, name: str, *arrays: np.ndarray) -> list[np.ndarray]:
        graph = self.manifest.graphs[name]
        return run(self.sessions[name], graph.inputs, graph.outputs, *arrays)

    @property
    def num_domains(self) -> int:
        return len(self.manifest.domains)

    def masks(self, x: np.ndarray) -> list[np.ndarray]:
        """The (coarse, fine) face masks of images ``x``, each [B, 1, 256, 256]; none without masks."""
        return self.run("masks", x) if self.manifest.masks else []

    def translate(self, x: np.ndarray, y: int | np.ndarray, *, z: np.ndarray | None = None,
                  x_ref: np.ndarray | None = None, psi: float = 1.0) -> np.ndarray:
        """Images ``x`` [B, 3, S, S] in domain ``y`` with latent codes ``z`` [K, latent_dim] or the
        styles of references ``x_ref`` [K, 3, S, S]; a batch of one on either side is broadcast against
        the other. Returns [max(B, K), 3, S, S] in [-1, 1]."""
        if (z is None) == (x_ref is None):
            raise ValueError("pass exactly one of z (latent-guided) or x_ref (reference-guided), "
                             f"got {'both' if z is not None else 'neither'}")
        self._check_images(x, "x")
        if z is not None:
            dim = self.manifest.latent_dim
            if z.ndim != 2 or z.shape[1] != dim or len(z) == 0:
                raise ValueError(f"z must be latent codes of shape [K, {dim}] with K >= 1, got {z.shape}")
        else:
            self._check_images(x_ref, "x_ref")
            if psi != 1.0:
                raise ValueError(f"psi={psi} only applies to latent codes; leave psi=1.0 with x_ref")
        codes = z if z is not None else x_ref
        batch = max(len(x), len(codes))
        if {len(x), len(codes)} - {1, batch}:
            raise ValueError(f"x has {len(x)} images and {'z' if z is not None else 'x_ref'} has {len(codes)}; "
                             "they must match or one of them must be 1")
        y = self._domains(y, batch)
        if z is not None:
            (s,) = self.run("mapping_network", _repeat(z.astype(np.float32), batch), y)
            if psi != 1.0:
                s = _lerp(self.mean_styles[y], s, psi)
        else:
            (s,) = self.run("style_encoder", _repeat(x_ref, batch), y)
        masks = [_repeat(m, batch) for m in self.masks(x)]  # once per source, then repeated
        (out,) = self.run("generator", _repeat(x, batch), s, *masks)
        return out

    def _check_images(self, x: np.ndarray, name: str) -> None:
        size = self.manifest.img_size
        if not isinstance(x, np.ndarray) or x.shape[1:] != (3, size, size) or len(x) == 0:
            shape = x.shape if isinstance(x, np.ndarray) else type(x).__name__
            raise ValueError(f"{name} must be an image batch of shape [B, 3, {size}, {size}], got {shape}")

    def _domains(self, y: int | np.ndarray, batch: int) -> np.ndarray:
        y = np.full(batch, y, dtype=np.int64) if np.ndim(y) == 0 else np.asarray(y, dtype=np.int64)
        if y.shape != (batch,):
            raise ValueError(f"y must be a domain index or {batch} of them, got shape {y.shape}")
        if ((y < 0) | (y >= self.num_domains)).any():
            raise ValueError(f"domain indices {sorted(set(y.tolist()))} out of range: the model has "
                             f"{self.num_domains} domains (0..{self.num_domains - 1})")
        return y


def _repeat(a: np.ndarray, batch: int) -> np.ndarray:
    return a if len(a) == batch else np.repeat(a, batch, axis=0)


def _lerp(start: np.ndarray, end: np.ndarray, weight: float) -> np.ndarray:
    """torch.lerp, in the same two forms (from the nearer end), so psi matches the torch backend."""
    diff = end - start
    w = np.float32(weight)
    return start + w * diff if weight < 0.5 else end - diff * (np.float32(1) - w)
