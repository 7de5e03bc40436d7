"""Training batches as a pure function of ``(seed, step)``, and the fixed validation batch.

Because batch ``step`` depends on nothing else, resuming at any step, or loading with any number of
workers, gives exactly the same tensors as an uninterrupted single-process run.
"""
from __future__ import annotations

import itertools
import signal
from collections.abc import Iterator

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import DataLoader, Dataset, Sampler

from stargan.data.folders import ImageFolder, load_rgb
from stargan.data.transforms import eval_images, train_transform

NUM_STEPS = 2**62  # batches are indexed by training step; there is no end


def step_generator(seed: int, step: int, rank: int = 0) -> torch.Generator:
    """A generator whose state depends on ``seed``, ``step`` and the process ``rank`` only (mixed, so
    nearby values differ)."""
    if seed < 0 or step < 0 or rank < 0:
        raise ValueError(f"seed, step and rank must be >= 0, got seed={seed}, step={step}, rank={rank}")
    entropy = [seed, step] if rank == 0 else [seed, step, rank]
    low, high = np.random.SeedSequence(entropy).generate_state(2, np.uint32)
    return torch.Generator().manual_seed(int(high) << 32 | int(low))


class TrainBatches(Dataset):
    """``batches[step]`` is the whole training batch of iteration ``step``.

    Source and target domains are each drawn uniformly over domains, then an image uniformly within
    the domain (so small domains are seen as often as large ones). ``x_ref`` and ``x_ref2`` are two
    different images of domain ``y_trg`` whenever that domain has more than one.
    """

    def __init__(self, folder: ImageFolder, img_size: int, batch_size: int, latent_dim: int,
                 seed: int, crop_prob: float = 0.5, rank: int = 0):
        if img_size < 1 or batch_size < 1 or latent_dim < 1:
            raise ValueError(f"img_size, batch_size and latent_dim must be >= 1, got {img_size}, "
                             f"{batch_size}, {latent_dim}")
        if not 0.0 <= crop_prob <= 1.0:
            raise ValueError(f"crop_prob must be in [0, 1], got {crop_prob}")
        self.by_domain = tuple(tuple(folder.indices_of(d)) for d in range(len(folder.domains)))
        empty = [folder.domains[d] for d, idx in enumerate(self.by_domain) if not idx]
        if empty:
            raise ValueError(f"domains {empty} of {folder.root} have no images")
        self.folder = folder
        self.img_size = img_size
        self.batch_size = batch_size
        self.latent_dim = latent_dim
        self.seed = seed
        self.crop_prob = crop_prob
        self.rank = rank  # each data-parallel process draws its own batches

    def __len__(self) -> int:
        return NUM_STEPS

    @staticmethod
    def _below(limits: list[int], generator: torch.Generator) -> list[int]:
        """One integer uniformly in ``[0, n)`` for each ``n`` (0 where ``n`` is 0)."""
        n = torch.tensor(limits, dtype=torch.float64)
        u = torch.rand(len(limits), dtype=torch.float64, generator=generator)
        return (u * n).floor().long().minimum((n.long() - 1).clamp(min=0)).tolist()

    def _load(self, labels: Tensor, positions: list[int], generator: torch.Generator) -> Tensor:
        images = [load_rgb(self.folder.files[self.by_domain[y][k]])
                  for y, k in zip(labels.tolist(), positions)]
        return torch.stack([train_transform(im, self.img_size, generator, self.crop_prob) for im in images])

    def __getitem__(self, step: int) -> dict[str, Tensor]:
        g = step_generator(self.seed, int(step), self.rank)
        num_domains, b = len(self.by_domain), self.batch_size
        y_org = torch.randint(num_domains, (b,), generator=g)
        y_trg = torch.randint(num_domains, (b,), generator=g)
        sizes_org = [len(self.by_domain[y]) for y in y_org.tolist()]
        sizes_trg = [len(self.by_domain[y]) for y in y_trg.tolist()]
        src = self._below(sizes_org, g)
        ref = self._below(sizes_trg, g)
        # The second reference is uniform over the domain's other images (the same one if it is alone).
        skip = self._below([n - 1 for n in sizes_trg], g)
        ref2 = [(r + 1 + k) % n if n > 1 else r for r, k, n in zip(ref, skip, sizes_trg)]
        z_trg = torch.randn(b, self.latent_dim, generator=g)
        z_trg2 = torch.randn(b, self.latent_dim, generator=g)
        return {
            "x_real": self._load(y_org, src, g),
            "y_org": y_org,
            "x_ref": self._load(y_trg, ref, g),
            "x_ref2": self._load(y_trg, ref2, g),
            "y_trg": y_trg,
            "z_trg": z_trg,
            "z_trg2": z_trg2,
        }


class _Steps(Sampler[int]):
    def __init__(self, start: int):
        self.start = start

    def __iter__(self) -> Iterator[int]:
        return itertools.count(self.start)


def train_loader(batches: TrainBatches, start_step: int, num_workers: int) -> Iterator[dict[str, Tensor]]:
    """Batches for steps ``start_step, start_step + 1, ...`` forever, loaded by ``num_workers`` workers."""
    loader = DataLoader(batches, batch_size=None, sampler=_Steps(start_step), num_workers=num_workers,
                        persistent_workers=num_workers > 0, pin_memory=False,
                        worker_init_fn=ignore_stop_signals if num_workers > 0 else None)
    return iter(loader)


def ignore_stop_signals(worker_id: int = 0) -> None:
    """Data workers leave Ctrl-C, SIGTERM and SIGHUP to the training process, which finishes its
    iteration and saves; a worker killed by them would otherwise fail that iteration."""
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, signal.SIG_IGN)


def fixed_batch(folder: ImageFolder, img_size: int, per_domain: int, seed: int = 0) -> tuple[Tensor, Tensor]:
    """``per_domain`` images (fewer if a domain has fewer) of every domain, in domain order.

    Returns ``x`` ``[N, 3, img_size, img_size]`` (no augmentation) and labels ``y`` ``[N]``.
    """
    if per_domain < 1:
        raise ValueError(f"per_domain must be >= 1, got {per_domain}")
    g = torch.Generator().manual_seed(seed)
    picked, ys = [], []
    for label in range(len(folder.domains)):
        files = folder.files_of(label)
        for k in torch.randperm(len(files), generator=g)[:per_domain].tolist():
            picked.append(files[k])
            ys.append(label)
    if not picked:
        raise ValueError(f"{folder.root} has no images")
    return eval_images(picked, img_size), torch.tensor(ys, dtype=torch.long)
