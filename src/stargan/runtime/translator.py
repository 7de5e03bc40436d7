"""Translator: images in, translated images out, from a folder written by `stargan export`.

The same calls as :class:`stargan.api.Translator` (latent- and reference-guided StarGAN v2), plus
StarGAN v1 models (a target domain or a set of attributes). Latent codes are drawn with numpy, so a
seed gives other styles than the torch backend's; pass ``z`` to choose the codes themselves.
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image

from . import v1, v2
from .images import ImageInput, to_array, to_images
from .manifest import Manifest, read_manifest
from .sessions import resolve_device, session_opener

BACKENDS = ("onnx",)


class Translator:
    """An exported StarGAN v2 or v1 model, ready to translate Pillow images (or image files)."""

    def __init__(self, folder: str | os.PathLike[str], manifest: Manifest, graphs: v2.Graphs | v1.Graphs,
                 device: str = "cpu"):
        self.folder = Path(folder)
        self.manifest = manifest
        self.graphs = graphs
        self.device = device

    @classmethod
    def load(cls, folder: str | os.PathLike[str], backend: str = "onnx", *, device: str = "cpu",
             threads: int | None = None) -> Translator:
        """Open an export folder: ``device`` cpu, cuda[:N] or auto; ``threads`` see
        :func:`stargan.runtime.sessions.session_opener`."""
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r}: stargan.runtime runs ONNX exports only (backend='onnx'); "
                             "a run or checkpoint directory loads with stargan.api.Translator.load")
        folder = Path(folder)
        manifest = read_manifest(folder)
        device = resolve_device(device)
        graphs = (v2.Graphs if manifest.arch == "v2" else v1.Graphs)(folder, manifest,
                                                                    session_opener(device, threads))
        return cls(folder, manifest, graphs, device)

    @property
    def arch(self) -> str:
        return self.manifest.arch

    @property
    def domains(self) -> tuple[str, ...]:
        return self.manifest.domains

    @property
    def attributes(self) -> tuple[str, ...]:
        """v1 CelebA models: the attributes an output can be given (empty otherwise)."""
        return self.manifest.attributes

    @property
    def img_size(self) -> int:
        return self.manifest.img_size

    @property
    def licence(self) -> str | None:
        return self.manifest.licence

    def translate(self, image: ImageInput, domain: str | None = None, *, num_styles: int = 1,
                  seed: int | None = None, reference: ImageInput | None = None, psi: float = 1.0,
                  z: np.ndarray | None = None, attributes: Sequence[str] | None = None) -> list[Image.Image]:
        """Translate ``image`` into ``domain``; returns ``img_size`` x ``img_size`` RGB images.

        StarGAN v2: ``num_styles`` random styles (``seed``; ``psi`` < 1 pulls them towards the domain's
        mean style), or the codes ``z`` [K, latent_dim], or the style of ``reference`` (one image).
        StarGAN v1: one image, in ``domain`` or with exactly the ``attributes`` given (CelebA models).
        An unusable image raises :class:`stargan.runtime.ImageError`.
        """
        if self.arch == "v1":
            if num_styles != 1 or seed is not None or reference is not None or psi != 1.0 or z is not None:
                raise ValueError("num_styles, seed, reference, psi and z are StarGAN v2 options (style codes); "
                                 "a v1 model takes a domain or attributes")
            c = self.graphs.label_vector(domain, attributes)
            x = to_array(image, self.img_size, self.manifest.crop_size)
            return to_images(self.graphs.translate(x, c[None]))
        if attributes is not None:
            raise ValueError("attributes are for StarGAN v1 CelebA models; a v2 model takes a domain")
        y = self._domain_index(domain)
        x = to_array(image, self.img_size)
        if reference is not None:
            if num_styles != 1 or z is not None:
                raise ValueError(f"num_styles={num_styles} (or z) needs latent styles; a reference gives exactly "
                                 "one style, so leave num_styles=1 and z out, or drop reference")
            return to_images(self.graphs.translate(x, y, x_ref=to_array(reference, self.img_size), psi=psi))
        if z is None:
            if num_styles < 1:
                raise ValueError(f"num_styles must be >= 1, got {num_styles}")
            z = np.random.default_rng(seed).standard_normal((num_styles, self.manifest.latent_dim),
                                                            dtype=np.float32)
        elif num_styles not in (1, len(z)):
            raise ValueError(f"num_styles={num_styles} but z holds {len(z)} codes; give one or the other")
        return to_images(self.graphs.translate(x, y, z=np.asarray(z, dtype=np.float32), psi=psi))

    def _domain_index(self, domain: str | None) -> int:
        if domain not in self.domains:
            raise ValueError(f"unknown domain {domain!r}; valid domains: {', '.join(self.domains)}")
        return self.domains.index(domain)
