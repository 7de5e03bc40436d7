"""A small CNN domain classifier, trained on a dataset's train split, that scores translations.

StarGAN (v1, Sec. 5) reports how often translated images are classified as their target domain; the
same network's penultimate features give FID/KID in a space that tells the domains apart.

File (``.safetensors``): the network's tensors; metadata ``format`` (:data:`FORMAT`), ``config``
(JSON of :class:`ClassifierConfig`), ``val_accuracy`` and ``train`` (JSON of the training settings).
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import Tensor, nn
from torchvision.transforms.v2 import functional as TF
from tqdm import tqdm

from stargan.data import ImageFolder, load_rgb, open_dataset
from stargan.data.batches import step_generator
from stargan.data.transforms import crop_params

FORMAT = "stargan-classifier/1"
TRAIN_HINT = "train one with `stargan classifier train DATA --out FILE`"


class ClassifierError(ValueError):
    """A classifier file that is missing, unreadable or not a stargan classifier."""


@dataclass(frozen=True)
class ClassifierConfig:
    img_size: int                  # power of two >= 16; images are resized to it
    domains: tuple[str, ...]       # logit i is domains[i]
    width: int = 32                # channels of the first conv block, doubled per block
    feature_dim: int = 256         # penultimate features (the FID/KID space); also the channel cap

    def __post_init__(self) -> None:
        _check_arch(self.img_size, len(self.domains), self.width, self.feature_dim)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "ClassifierConfig":
        return cls(img_size=int(data["img_size"]), domains=tuple(data["domains"]),
                   width=int(data["width"]), feature_dim=int(data["feature_dim"]))

    def build(self) -> "DomainClassifier":
        return DomainClassifier(self.img_size, len(self.domains), self.width, self.feature_dim)


def _check_arch(img_size: int, num_domains: int, width: int, feature_dim: int) -> None:
    if img_size < 16 or img_size & (img_size - 1):
        raise ValueError(f"classifier img_size must be a power of two >= 16, got {img_size}")
    if num_domains < 2:
        raise ValueError(f"a domain classifier needs at least 2 domains, got {num_domains}")
    if width < 1 or feature_dim < 1:
        raise ValueError(f"width and feature_dim must be >= 1, got width={width}, feature_dim={feature_dim}")


def _conv_block(c_in: int, c_out: int) -> list[nn.Module]:
    return [nn.Conv2d(c_in, c_out, 3, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.LeakyReLU(0.2)]


class DomainClassifier(nn.Module):
    """``[B, 3, S, S]`` in [-1, 1] -> ``[B, num_domains]`` logits.

    Conv blocks (conv3x3-BN-LeakyReLU-maxpool, widths ``width * 2**i`` capped at ``feature_dim``) halve
    the side down to 4x4, a last conv block maps to ``feature_dim`` channels, global average pooling
    gives the features and a linear layer the logits.
    """

    def __init__(self, img_size: int, num_domains: int, width: int = 32, feature_dim: int = 256):
        super().__init__()
        _check_arch(img_size, num_domains, width, feature_dim)
        self.img_size, self.num_domains, self.feature_dim = img_size, num_domains, feature_dim
        layers: list[nn.Module] = []
        c_in = 3
        for i in range(int(math.log2(img_size)) - 2):
            c_out = min(width * 2**i, feature_dim)
            layers += [*_conv_block(c_in, c_out), nn.MaxPool2d(2)]
            c_in = c_out
        self.body = nn.Sequential(*layers, *_conv_block(c_in, feature_dim))
        self.head = nn.Linear(feature_dim, num_domains)

    def features(self, x: Tensor) -> Tensor:
        """Penultimate features ``[B, feature_dim]``."""
        s = self.img_size
        if x.ndim != 4 or tuple(x.shape[1:]) != (3, s, s):
            raise ValueError(f"DomainClassifier expects images [B, 3, {s}, {s}] in [-1, 1], got "
                             f"{list(x.shape)}; resize them first (resize_images, or use ClassifierFeatures)")
        # channels_last: about 30% faster training steps on CPU (oneDNN).
        return self.body(x.contiguous(memory_format=torch.channels_last)).mean(dim=(2, 3))

    def forward(self, x: Tensor) -> Tensor:
        return self.head(self.features(x))


def resize_images(x: Tensor, img_size: int) -> Tensor:
    """``[B, 3, H, W]`` -> float32 ``[B, 3, img_size, img_size]`` (bilinear, antialiased; as is if equal)."""
    if x.ndim != 4 or x.shape[1] != 3:
        raise ValueError(f"expected images [B, 3, H, W] in [-1, 1], got {list(x.shape)}")
    x = x.float()
    if tuple(x.shape[-2:]) != (img_size, img_size):
        x = F.interpolate(x, size=(img_size, img_size), mode="bilinear", align_corners=False, antialias=True)
    return x


class ClassifierFeatures(nn.Module):
    """FID/KID feature extractor in the classifier's penultimate space (the metrics' FeatureExtractor).

    Always in eval mode: BatchNorm uses its running statistics, so the feature space is fixed.
    """

    name: str = "classifier"
    weights_verified: bool = True  # a file of the user's own training, identified by its hash

    def __init__(self, classifier: DomainClassifier, config: ClassifierConfig, weights_sha256: str,
                 val_accuracy: float | None = None):
        super().__init__()
        self.classifier = classifier.requires_grad_(False)
        self.config = config
        self.domains = config.domains
        self.img_size = config.img_size
        self.feature_dim = config.feature_dim
        self.weights_sha256 = weights_sha256
        self.val_accuracy = val_accuracy  # as stored in the file by train_classifier
        self.protocol = (f"classifier features (penultimate, {config.feature_dim}-d) at img_size "
                         f"{config.img_size}, input [-1,1] resized bilinear+antialias; "
                         f"domains {','.join(config.domains)}")
        self.train(False)

    @classmethod
    def from_file(cls, path: str | Path, device: str | torch.device = "cpu") -> "ClassifierFeatures":
        model, config = load_classifier(path, device)
        stored = read_classifier_info(path).get("val_accuracy")
        return cls(model, config, file_sha256(path), stored)

    def train(self, mode: bool = True) -> "ClassifierFeatures":
        return super().train(False)

    def _fit(self, x: Tensor) -> Tensor:
        return resize_images(x.to(self.classifier.head.weight.device), self.img_size)

    def forward(self, x: Tensor) -> Tensor:
        """``[B, 3, H, W]`` in [-1, 1] -> float32 ``[B, feature_dim]``."""
        return self.classifier.features(self._fit(x)).float()

    def logits(self, x: Tensor) -> Tensor:
        """``[B, 3, H, W]`` in [-1, 1] -> ``[B, num_domains]``, logit i for ``domains[i]``."""
        return self.classifier(self._fit(x)).float()


def load_images(folder: ImageFolder, img_size: int, indices: Sequence[int] | None = None,
                progress: bool = False) -> Tensor:
    """Decode and resize images of ``folder`` once: uint8 ``[N, 3, img_size, img_size]`` (the pixels of
    ``eval_transform``; :func:`to_float` maps them to [-1, 1])."""
    indices = range(len(folder)) if indices is None else indices

    def one(i: int) -> Tensor:
        return TF.pil_to_tensor(TF.resize(load_rgb(folder.files[i]), [img_size, img_size], antialias=True))

    with ThreadPoolExecutor(max_workers=4) as pool, \
            tqdm(total=len(indices), desc=f"loading {folder.root.name}", unit="img", dynamic_ncols=True,
                 disable=not progress or len(indices) < 500) as bar:
        images = []
        for image in pool.map(one, indices):
            images.append(image)
            bar.update(1)
    if not images:
        raise ValueError(f"{folder.root} has no images")
    return torch.stack(images)


def to_float(x: Tensor) -> Tensor:
    """uint8 ``[..., 3, H, W]`` -> float32 in [-1, 1], exactly as ``eval_transform``."""
    return TF.normalize(TF.to_dtype(x, torch.float32, scale=True), mean=[0.5] * 3, std=[0.5] * 3)


def augment(x: Tensor, generator: torch.Generator, crop_prob: float) -> Tensor:
    """``train_transform``'s augmentation on a batch ``[B, 3, S, S]``: a random resized crop (probability
    ``crop_prob``, same distribution) and a random horizontal flip, as one bilinear resampling."""
    b, _, s, _ = x.shape
    rows = []
    for _ in range(b):
        top, left, h, w = 0, 0, s, s
        if torch.rand((), dtype=torch.float64, generator=generator).item() < crop_prob:
            top, left, h, w = crop_params(s, s, generator)
        flip = -1.0 if torch.rand((), dtype=torch.float64, generator=generator).item() < 0.5 else 1.0
        # Output coordinate u in [-1, 1] samples the input at (w / s) * u + (2 * left + w) / s - 1.
        rows.append([[flip * w / s, 0.0, (2 * left + w) / s - 1], [0.0, h / s, (2 * top + h) / s - 1]])
    theta = torch.tensor(rows, dtype=x.dtype, device=x.device)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)


def _subset(folder: ImageFolder, per_domain: int | None, seed: int) -> list[int]:
    """All indices, or a seeded random ``per_domain`` of each domain."""
    if per_domain is None:
        return list(range(len(folder)))
    g = torch.Generator().manual_seed(seed)
    picked: list[int] = []
    for idx in (folder.indices_of(label) for label in range(len(folder.domains))):
        picked += sorted(idx[k] for k in torch.randperm(len(idx), generator=g)[:per_domain].tolist())
    return picked


def _unwrap(classifier: DomainClassifier | ClassifierFeatures) -> DomainClassifier:
    return classifier.classifier if isinstance(classifier, ClassifierFeatures) else classifier


@torch.no_grad()
def accuracy(classifier: DomainClassifier | ClassifierFeatures, images: Tensor, labels: Tensor,
             batch_size: int = 256) -> float:
    """Fraction of ``images`` (``[N, 3, H, W]`` in [-1, 1] or uint8, resized to the classifier's size)
    whose arg-max logit is ``labels`` (``[N]`` domain indices)."""
    if len(images) == 0 or len(images) != len(labels):
        raise ValueError(f"accuracy needs as many labels as images (and at least one), got "
                         f"{len(images)} images and {len(labels)} labels")
    model = _unwrap(classifier)
    device = model.head.weight.device
    was_training = model.training
    model.eval()
    correct = 0
    try:
        for i in range(0, len(images), batch_size):
            x = images[i:i + batch_size].to(device)
            x = resize_images(to_float(x) if x.dtype == torch.uint8 else x, model.img_size)
            correct += int((model(x).argmax(1).cpu() == labels[i:i + batch_size].cpu()).sum())
    finally:
        model.train(was_training)
    return correct / len(images)


def evaluate_folder(classifier: DomainClassifier | ClassifierFeatures, folder: ImageFolder,
                    batch_size: int = 256, progress: bool = False) -> float:
    """Accuracy on the real images of ``folder`` (e.g. the val split), resized like ``eval_transform``."""
    model = _unwrap(classifier)
    names = list(classifier.domains) if isinstance(classifier, ClassifierFeatures) else None
    if model.num_domains != len(folder.domains) or names not in (None, list(folder.domains)):
        raise ValueError(f"the classifier's domains ({names or model.num_domains}) do not match the "
                         f"domains of {folder.root}: {list(folder.domains)}")
    images = load_images(folder, model.img_size, progress=progress)
    return accuracy(model, images, torch.tensor(folder.labels), batch_size)


@dataclass(frozen=True)
class ClassifierResult:
    path: Path
    config: ClassifierConfig
    val_accuracy: float        # on the real val images, no augmentation
    train_accuracy: float      # running accuracy over the last epoch (augmented images, train mode)
    epochs: int
    train_images: int
    val_images: int
    seconds: float


def _train_epoch(model: DomainClassifier, optimizer: torch.optim.Optimizer,
                 schedule: torch.optim.lr_scheduler.LRScheduler, images: Tensor, labels: Tensor,
                 generator: torch.Generator, batch_size: int, crop_prob: float, bar: tqdm,
                 epoch_label: str) -> float:
    """One pass in a seeded random order; returns the running accuracy."""
    device = model.head.weight.device
    model.train()
    order = torch.randperm(len(images), generator=generator)
    correct = seen = 0
    loss_sum = 0.0
    for i in range(0, len(order), batch_size):
        idx = order[i:i + batch_size]
        x = augment(to_float(images[idx]), generator, crop_prob).to(device)
        y = labels[idx].to(device)
        logits = model(x)
        loss = F.cross_entropy(logits, y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        schedule.step()
        correct += int((logits.argmax(1) == y).sum())
        seen += len(idx)
        loss_sum += loss.item() * len(idx)
        bar.update(1)
        bar.set_postfix(epoch=epoch_label, loss=f"{loss_sum / seen:.3f}", acc=f"{correct / seen:.3f}",
                        refresh=False)
    return correct / seen


def train_classifier(data_root: str | Path, img_size: int, out_path: str | Path, *, epochs: int = 4,
                     batch_size: int = 64, lr: float = 2e-3, width: int = 32, feature_dim: int = 256,
                     crop_prob: float = 0.5, max_images_per_domain: int | None = None, seed: int = 0,
                     device: str | torch.device = "cpu", skip_bad_images: bool = False,
                     progress: bool = True) -> ClassifierResult:
    """Train a :class:`DomainClassifier` on ``data_root/train`` (Adam, cosine-decayed learning rate,
    augmentation as in StarGAN v2 training), measure it on ``data_root/val`` and save it to
    ``out_path``. The same seed (and thread count) gives the same weights.

    Images are decoded once and kept in memory as uint8 at ``img_size``; ``max_images_per_domain``
    caps their number. The final weights are saved (no selection on val, so val accuracy is unbiased).
    """
    cap = max_images_per_domain
    if min(epochs, batch_size, 1 if cap is None else cap) < 1 or lr <= 0 or not 0.0 <= crop_prob <= 1.0:
        raise ValueError(f"need epochs, batch_size, max_images_per_domain (or None) >= 1, lr > 0 and "
                         f"crop_prob in [0, 1], got epochs={epochs}, batch_size={batch_size}, "
                         f"max_images_per_domain={cap}, lr={lr}, crop_prob={crop_prob}")
    started = time.perf_counter()
    out_path = Path(out_path)
    out_path.parent.mkdir(parents=True, exist_ok=True)  # fail now, not after training
    # Unreadable images raise a DataError naming the file while loading; check up front only to skip them.
    train_set, val_set = open_dataset(data_root, skip_bad_images, check_images=skip_bad_images)
    config = ClassifierConfig(img_size, train_set.domains, width, feature_dim)
    indices = _subset(train_set, max_images_per_domain, seed)
    images = load_images(train_set, img_size, indices, progress)
    labels = torch.tensor([train_set.labels[i] for i in indices])

    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's RNG
        torch.manual_seed(seed)
        model = config.build().to(device)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    steps_per_epoch = -(-len(images) // batch_size)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
    with tqdm(total=epochs * steps_per_epoch, desc="classifier", unit="batch", dynamic_ncols=True,
              disable=not progress) as bar:
        for epoch in range(epochs):
            train_accuracy = _train_epoch(model, optimizer, schedule, images, labels,
                                          step_generator(seed, epoch), batch_size, crop_prob, bar,
                                          f"{epoch + 1}/{epochs}")
    val_accuracy = evaluate_folder(model, val_set, progress=progress)

    settings = {"data_root": str(data_root), "epochs": epochs, "batch_size": batch_size, "lr": lr,
                "crop_prob": crop_prob, "max_images_per_domain": max_images_per_domain, "seed": seed,
                "train_images": len(images), "val_images": len(val_set), "train_accuracy": train_accuracy}
    save_classifier(model, config, out_path, val_accuracy, settings)
    return ClassifierResult(out_path, config, val_accuracy, train_accuracy, epochs, len(images),
                            len(val_set), time.perf_counter() - started)


def save_classifier(model: DomainClassifier, config: ClassifierConfig, path: str | Path,
                    val_accuracy: float | None = None, settings: dict[str, Any] | None = None) -> Path:
    """Write ``path`` atomically (temporary file, fsync, rename)."""
    path = Path(path)
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    metadata = {"format": FORMAT, "config": json.dumps(dataclasses.asdict(config)),
                "val_accuracy": json.dumps(val_accuracy), "train": json.dumps(settings or {})}
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        save_file(tensors, str(tmp), metadata=metadata)
        with open(tmp, "rb") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def _metadata(path: Path) -> dict[str, str]:
    if not path.exists():
        raise ClassifierError(f"classifier file {path} does not exist; {TRAIN_HINT}")
    if path.is_dir():
        raise ClassifierError(f"{path} is a directory; pass the classifier's .safetensors file")
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
    except (SafetensorError, OSError) as err:
        raise ClassifierError(f"cannot read {path} as a safetensors file ({err}); expected a classifier "
                              f"file: {TRAIN_HINT}") from err
    found = metadata.get("format")
    if found != FORMAT:
        newer = " (a newer format: upgrade stargan)" if str(found).startswith("stargan-classifier/") else ""
        raise ClassifierError(f"{path} is not a stargan classifier file: its metadata format is {found!r}, "
                              f"expected {FORMAT!r}{newer}; {TRAIN_HINT}")
    return metadata


def read_classifier_info(path: str | Path) -> dict[str, Any]:
    """The metadata of a classifier file: ``config`` (ClassifierConfig), ``val_accuracy``, ``train``."""
    path = Path(path)
    metadata = _metadata(path)
    try:
        return {"format": FORMAT, "config": ClassifierConfig.from_dict(json.loads(metadata["config"])),
                "val_accuracy": json.loads(metadata.get("val_accuracy", "null")),
                "train": json.loads(metadata.get("train", "{}"))}
    except (KeyError, TypeError, ValueError) as err:
        raise ClassifierError(f"{path} has a malformed classifier config ({type(err).__name__}: {err}); "
                              f"{TRAIN_HINT}") from err


def load_classifier(path: str | Path,
                    device: str | torch.device = "cpu") -> tuple[DomainClassifier, ClassifierConfig]:
    """The classifier stored in ``path`` (in eval mode, on ``device``) and its config."""
    path = Path(path)
    config = read_classifier_info(path)["config"]
    model = config.build()
    with safe_open(str(path), framework="pt") as f:
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    try:
        model.load_state_dict(tensors)
    except RuntimeError as err:
        raise ClassifierError(f"{path}: the tensors do not match the stored config {config}: {err}") from err
    return model.eval().to(device), config


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()
