"""The model behind the web page: loaded once, described in a few lines, asked for translations.

Nothing here knows about the web framework, so the page's logic is tested without a browser.
StarGAN v2 runs translate with latent or reference styles (through :class:`stargan.api.Translator`);
StarGAN v1 runs translate to a chosen domain, or to a chosen set of attributes (CelebA models).
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image

from stargan import checkpoints, runtime
from stargan.api import Translator
from stargan.data import to_pil
from stargan.data.v1 import condition_vector, transform as v1_transform
from stargan.data.folders import list_images
from stargan.hub import run_licence

MAX_STYLES = 8             # outputs per latent-guided request
GIF_FRAMES = 12            # frames per transition of the interpolation GIF (two transitions: A->B->A)
TIME_LIMIT_S = 60.0        # refuse requests estimated to take longer than this
EXAMPLES_PER_DOMAIN = 2
BACKENDS = ("torch", "onnx")


class RequestError(ValueError):
    """A request the page refuses (too slow, unknown domain, ...); the message is for the user."""


@dataclass(frozen=True)
class Example:
    label: str   # "circle/00000.png": what the page lists
    path: Path   # found on disk when the server starts; requests name the label, never a path


class ServedModel:
    """A StarGAN v2 or v1 model, ready to translate PIL images on one device.

    ``backend="onnx"``: ``path`` is a folder written by `stargan export`, run by ONNX Runtime
    (:class:`stargan.runtime.Translator`, with ``threads``); it translates as the torch backend does,
    without the interpolation GIF.
    """

    def __init__(self, path: str | Path, device: str = "cpu", time_limit: float = TIME_LIMIT_S,
                 backend: str = "torch", threads: int | None = None):
        if backend not in BACKENDS:
            raise ValueError(f"backend {backend!r}: expected one of {', '.join(BACKENDS)}")
        self.backend = backend
        self.time_limit = time_limit
        if backend == "onnx":
            self._load_export(Path(path), device, threads)
        else:
            self._load_checkpoint(path, device)
        self.seconds_per_image = self._time_one_image()

    def _load_checkpoint(self, path: str | Path, device: str) -> None:
        self.checkpoint = checkpoints.resolve_checkpoint(path)
        self.run_dir = checkpoints.run_dir_of(self.checkpoint)
        self.config = checkpoints.load_config(self.checkpoint)
        self.arch = self.config.arch
        self.device = torch.device(_pick_device(device))
        if self.arch == "v2":
            self.translator = Translator.load(self.checkpoint, device=self.device)
            self.domains, self.attributes = self.translator.domains, ()
        else:
            _, self.generator = checkpoints.load_v1_for_sampling(self.checkpoint, self.device)
            data, model = self.config.data, self.config.model
            self.attributes = tuple(data.attrs) if data.mode in ("celeba", "both") else ()
            self.domains = () if self.attributes else (
                tuple(data.domains) or tuple(f"domain{i}" for i in range(model.c_dim)))
            self.label_sizes = (model.c_dim, model.c2_dim) if model.c2_dim else (model.c_dim,)
        self.img_size = self.config.model.img_size
        self.examples = find_examples(self.config.data.root, self.domains)

    def _load_export(self, folder: Path, device: str, threads: int | None) -> None:
        self.translator = runtime.Translator.load(folder, device=device, threads=threads)
        self.checkpoint = self.run_dir = folder
        self.config = None
        self.arch = self.translator.arch
        self.device = f"{self.translator.device} (ONNX Runtime)"
        # v1 as the torch backend serves it: a CelebA model by attributes, else by domain
        self.attributes = self.translator.attributes
        self.domains = () if self.attributes else self.translator.domains
        self.img_size = self.translator.img_size
        self.examples = []  # an export records no dataset

    @property
    def interpolates(self) -> bool:
        """Whether it makes the style interpolation GIF (StarGAN v2, torch backend)."""
        return self.arch == "v2" and self.backend == "torch"

    # ---------------------------------------------------------------- translation
    def translate(self, image: Image.Image, domain: str = "", *, num_styles: int = 1, seed: int = 0,
                  psi: float = 1.0, reference: Image.Image | None = None,
                  attributes: tuple[str, ...] = ()) -> list[Image.Image]:
        """Latent-guided (``num_styles`` outputs), reference-guided (one), or v1 (one) translation."""
        if self.arch == "v1":
            self._check_time(1)
            return [self._v1_translate(image, domain, attributes)]
        self._check_domain(domain)
        if reference is not None:
            self._check_time(2)
            return self.translator.translate(image, domain, reference=reference, psi=psi)
        if not 1 <= num_styles <= MAX_STYLES:
            raise RequestError(f"number of styles must be between 1 and {MAX_STYLES}, got {num_styles}")
        if not 0.0 <= psi <= 1.0:
            raise RequestError(f"psi must be between 0 and 1, got {psi}")
        self._check_time(num_styles)
        return self.translator.translate(image, domain, num_styles=num_styles, seed=seed, psi=psi)

    def interpolate(self, image: Image.Image, references: tuple[Image.Image, Image.Image], domain: str,
                    path: str | Path) -> Path:
        """A looping GIF of ``image`` while its style moves between the two references."""
        if self.arch != "v2":
            raise RequestError("style interpolation needs a StarGAN v2 model (v1 has no style codes)")
        if not self.interpolates:
            raise RequestError("style interpolation runs on the torch backend (stargan serve RUN), not on an "
                               "ONNX export")
        self._check_domain(domain)
        self._check_time(2 * GIF_FRAMES + 2)
        return self.translator.interpolate(image, list(references), domain, path,
                                           frames_per_transition=GIF_FRAMES, fps=12)

    def _v1_translate(self, image: Image.Image, domain: str, attributes: tuple[str, ...]) -> Image.Image:
        if self.attributes:
            unknown = [a for a in attributes if a not in self.attributes]
            if unknown:
                raise RequestError(f"unknown attributes {unknown}; this model knows {', '.join(self.attributes)}")
        else:
            self._check_domain(domain)
        if self.backend == "onnx":
            target = {"attributes": attributes} if self.attributes else {"domain": domain}
            return self.translator.translate(image, **target)[0]
        if self.attributes:
            labels = torch.tensor([[float(a in attributes) for a in self.attributes]])
        else:
            labels = torch.tensor([self.domains.index(domain)])
        c = condition_vector(labels, 0, self.label_sizes).to(self.device)
        x = v1_transform(image, self.img_size, self.config.data.crop_size, flip=False)[None].to(self.device)
        with torch.inference_mode():
            return to_pil(self.generator(x, c)[0])

    def _check_domain(self, domain: str) -> None:
        if domain not in self.domains:
            raise RequestError(f"choose a target domain: one of {', '.join(self.domains)}")

    def _check_time(self, num_images: int) -> None:
        estimate = num_images * self.seconds_per_image
        if estimate > self.time_limit:
            raise RequestError(f"this request would take about {estimate:.0f} s on {self.device}, above the "
                               f"server's limit of {self.time_limit:.0f} s per request; ask for fewer images")

    def _time_one_image(self) -> float:
        """Seconds for one forward pass of one image (the second of two: the first warms up)."""
        blank = Image.new("RGB", (self.img_size, self.img_size))
        seconds = 0.0
        for _ in range(2):
            start = time.perf_counter()
            if self.arch == "v2":
                self.translator.translate(blank, self.domains[0], num_styles=1, seed=0)
            else:
                self._v1_translate(blank, self.domains[0] if self.domains else "", ())
            seconds = time.perf_counter() - start
        return seconds

    # ---------------------------------------------------------------- description
    def describe(self) -> str:
        """Markdown: what the model is, its latest metrics, and its licence when it was imported."""
        if self.backend == "onnx":
            return self._describe_export()
        kind = "domains" if self.domains else "attributes"
        names = ", ".join(self.domains or self.attributes)
        step = checkpoints.step_of(self.checkpoint)
        lines = [f"**StarGAN {self.arch}** · {self.img_size} x {self.img_size} px · step {step} · "
                 f"{len(self.domains or self.attributes)} {kind}: {names}",
                 f"checkpoint `{self.checkpoint}` · device {self.device}"]
        if self.arch == "v2" and self.config.model.w_hpf > 0:
            lines.append("face model (w_hpf > 0): masks as `stargan translate` computes them")
        metrics = latest_metrics(self.run_dir)
        if metrics:
            lines.append("latest metrics: " + ", ".join(f"{k} {v:.3f}" for k, v in metrics.items()))
        licence = run_licence(self.config.preset, self.run_dir)
        if licence:
            lines.append(f"licence: {licence}")
        return "  \n".join(lines)

    def _describe_export(self) -> str:
        manifest = self.translator.manifest
        kind = "domains" if self.domains else "attributes"
        lines = [f"**StarGAN {self.arch}** · {self.img_size} x {self.img_size} px · step {manifest.source.step} · "
                 f"{len(self.domains or self.attributes)} {kind}: {', '.join(self.domains or self.attributes)}",
                 f"ONNX export `{self.checkpoint}` of checkpoint `{manifest.source.checkpoint}` · {self.device}"]
        if manifest.arch == "v2" and manifest.w_hpf > 0:
            lines.append("face model (w_hpf > 0): " + ("masks from the export's masks.onnx" if manifest.masks
                                                       else "exported without face masks"))
        if manifest.licence:
            lines.append(f"licence: {manifest.licence}")
        return "  \n".join(lines)


def _pick_device(device: str) -> str:
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    return device


def find_examples(root: str, domains: tuple[str, ...]) -> list[Example]:
    """A few images of each domain from ``ROOT/val/<domain>/`` (none when the folders are missing)."""
    examples: list[Example] = []
    if not root:
        return examples
    for domain in domains:
        folder = Path(root) / "val" / domain
        if folder.is_dir():
            examples += [Example(f"{domain}/{p.name}", p) for p in list_images(folder)[:EXAMPLES_PER_DOMAIN]]
    return examples


def latest_metrics(run_dir: Path, limit: int = 6) -> dict[str, float]:
    """The flat ``mode/metric`` means of the run's newest ``metrics/step-*.json`` (empty when none)."""
    files = sorted((run_dir / "metrics").glob("step-*.json"))
    if not files:
        return {}
    try:
        summary = json.loads(files[-1].read_text())
        means = {f"{mode}/{key}": float(value) for mode, part in summary.items() if isinstance(part, dict)
                 for key, value in part.get("mean", {}).items() if isinstance(value, (int, float))}
    except (OSError, ValueError, AttributeError):
        return {}
    return dict(list(means.items())[:limit])
