"""A few-lines Python API for translating images with a trained StarGAN v2 model.

    from stargan.api import Translator
    tr = Translator.load("runs/00000-demo")      # a run directory or a checkpoint directory
    dogs = tr.translate(Image.open("cat.jpg"), domain="dog", num_styles=4, seed=0)
    dog = tr.translate(img, domain="dog", reference=Image.open("ref.jpg"))[0]
    tr.interpolate_latent("cat.jpg", "walk.gif", domains=["dog"], seed=0)  # a walk through dog styles

A model with ``w_hpf > 0`` (CelebA-HQ) computes face masks with the FAN landmark network, whose
weights (the release's ``wing.ckpt``) must be found; ``model.masks: false`` in the config (or
``masks=False`` in :meth:`Translator.load`) opts out. A folder written by `stargan export` loads with
``Translator.load(DIR, backend="onnx")``, run by ONNX Runtime (without torch installed:
``stargan.runtime.Translator``).
"""
from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image

from stargan import animation, runtime
from stargan.sampling import v2 as sampling
from stargan.config import Config
from stargan.data.images import load_rgb, rgb_image
from stargan.data.transforms import eval_transform, to_pil
from stargan.nets.v2 import Networks

ImageInput = Image.Image | str | os.PathLike[str]


class Translator:
    """Latent- and reference-guided translation of PIL images with (EMA) StarGAN v2 networks."""

    def __init__(self, config: Config, nets: Networks, device: str | torch.device = "cpu",
                 fan_weights: str | os.PathLike[str] | None = None, run: str | os.PathLike[str] | None = None):
        """``fan_weights`` and ``run`` (whose ``fan.safetensors`` is used) locate the FAN weights of a
        w_hpf > 0 model; see :func:`stargan.faces.masks.load_mask_fn`."""
        from stargan.faces.masks import load_mask_fn

        domains = tuple(config.data.domains)
        if len(domains) != config.model.num_domains:
            raise ValueError(f"config.data.domains names {len(domains)} domains {domains} but the model "
                             f"has model.num_domains={config.model.num_domains}; they must match")
        self.config = config
        self.device = torch.device(device)
        self.mask_fn = load_mask_fn(config.model, self.device, fan_weights, run)
        self.nets = nets.to(self.device)
        for _, net in self.nets.items():
            net.eval()

    @classmethod
    def load(cls, path: str | os.PathLike[str], device: str | torch.device = "cpu", *,
             fan_weights: str | os.PathLike[str] | None = None, masks: bool | None = None,
             backend: str = "torch") -> Translator | runtime.Translator:
        """Load the EMA networks of a run directory (its latest checkpoint) or a checkpoint directory.

        ``masks=False`` runs a w_hpf > 0 model without face masks (not the released model).
        ``backend="onnx"``: ``path`` is a folder written by `stargan export`, and the translator returned
        is a :class:`stargan.runtime.Translator` (the same ``translate``), run by ONNX Runtime.
        """
        if backend == "onnx":
            if fan_weights is not None or masks is not None:
                raise ValueError("fan_weights and masks are chosen when a model is exported (stargan export "
                                 "--no-masks); an export computes its face masks as it was exported")
            return runtime.Translator.load(path, device=str(device))
        if backend != "torch":
            raise ValueError(f"backend {backend!r}: expected 'torch' (a run or checkpoint) or 'onnx' (an export)")
        from stargan.checkpoints import load_for_sampling  # lazy: keeps `import stargan.api` light

        config, nets = load_for_sampling(path, device)
        if masks is not None:
            config = config.with_overrides([f"model.masks={str(masks).lower()}"])
        return cls(config, nets, device, fan_weights=fan_weights, run=path)

    @property
    def domains(self) -> tuple[str, ...]:
        return tuple(self.config.data.domains)

    @property
    def img_size(self) -> int:
        return self.config.model.img_size

    def translate(self, image: ImageInput, domain: str, *, num_styles: int = 1, seed: int | None = None,
                  reference: ImageInput | None = None, psi: float = 1.0) -> list[Image.Image]:
        """Translate ``image`` into ``domain``; returns ``img_size`` x ``img_size`` RGB images.

        Without ``reference``: ``num_styles`` images with random styles (``seed`` makes them
        reproducible; ``psi`` < 1 trades diversity for fidelity). With ``reference`` (an image of
        ``domain``): one image in the reference's style. Images are resized to a square. An image that
        cannot be used (corrupt, too large, not an image) raises :class:`stargan.data.DataError`.
        """
        y = self._domain_index(domain)
        x = self._load(image)
        if reference is not None:
            if num_styles != 1:
                raise ValueError(f"num_styles={num_styles} needs latent styles; a reference gives exactly "
                                 "one style, so leave num_styles=1 or drop reference")
            out = sampling.translate(self.nets, x, y, x_ref=self._load(reference), psi=psi,
                                     mask_fn=self.mask_fn)
        else:
            if num_styles < 1:
                raise ValueError(f"num_styles must be >= 1, got {num_styles}")
            generator = torch.Generator().manual_seed(seed) if seed is not None else None
            z = torch.randn(num_styles, self.config.model.latent_dim, generator=generator)
            out = sampling.translate(self.nets, x, y, z=z, psi=psi, generator=generator,
                                     mask_fn=self.mask_fn)
        return [to_pil(t) for t in out]

    def interpolate(self, image: ImageInput | Sequence[ImageInput], references: Sequence[ImageInput],
                    domains: str | Sequence[str], path: str | os.PathLike[str], *,
                    frames_per_transition: int = 30, fps: int = 30) -> Path:
        """Write a looping .gif (or .mp4) of ``image`` while its style moves between ``references``.

        ``domains`` names the domain of each reference, or one name for all of them. Several
        source images may be given; each gets a row. Frames are streamed to disk one by one.
        """
        names = [domains] * len(references) if isinstance(domains, str) else list(domains)
        if len(names) != len(references):
            raise ValueError(f"{len(references)} references but {len(names)} domains; give one domain "
                             "per reference or a single domain for all")
        sources = [image] if isinstance(image, (Image.Image, str, os.PathLike)) else list(image)
        x_src = torch.cat([self._load(source) for source in sources])
        refs = torch.cat([self._load(ref) for ref in references])
        y_refs = torch.tensor([self._domain_index(name) for name in names])
        return animation.write_interpolation(self.nets, x_src, refs, y_refs, path,
                                            frames_per_transition=frames_per_transition, fps=fps,
                                            mask_fn=self.mask_fn)

    def interpolate_latent(self, image: ImageInput | Sequence[ImageInput], path: str | os.PathLike[str], *,
                           domains: str | Sequence[str] | None = None, num_styles: int = 4, seed: int = 0,
                           psi: float = 1.0, frames_per_transition: int = 30, fps: int = 30) -> Path:
        """Write a .gif (or .mp4) of ``image`` while its style walks through each domain's style space.

        For each of ``domains`` in turn (one name, several, or None for all of the model's): the
        ``num_styles`` latent styles that :meth:`translate` gives with the same ``seed`` and ``psi``,
        visited in a loop, ``frames_per_transition`` frames from one to the next (see
        :func:`stargan.animation.latent_interpolation_frames`). Frames are streamed to disk one by one.
        """
        names = self.domains if domains is None else [domains] if isinstance(domains, str) else list(domains)
        y_trgs = [self._domain_index(name) for name in names]  # before any frame
        sources = [image] if isinstance(image, (Image.Image, str, os.PathLike)) else list(image)
        x_src = torch.cat([self._load(source) for source in sources])
        return animation.write_latent_interpolation(self.nets, x_src, y_trgs, path, num_styles=num_styles,
                                                    seed=seed, psi=psi, fps=fps, mask_fn=self.mask_fn,
                                                    frames_per_transition=frames_per_transition)

    def _domain_index(self, domain: str) -> int:
        if domain not in self.domains:
            raise ValueError(f"unknown domain {domain!r}; valid domains: {', '.join(self.domains)}")
        return self.domains.index(domain)

    def _load(self, image: ImageInput) -> torch.Tensor:
        # Files and opened images pass the same checks (size limit, first frame, EXIF, any mode to RGB);
        # an unusable one raises stargan.data.DataError naming it.
        rgb = rgb_image(image) if isinstance(image, Image.Image) else load_rgb(image)
        return eval_transform(rgb, self.img_size)[None]

