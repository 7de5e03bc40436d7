"""What training changes and a checkpoint stores: the networks, their optimizers, the step.

Below both :mod:`stargan.checkpoints` (which saves and restores these) and :mod:`stargan.training`
(which advances them), so that saving a state never needs the training code.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Protocol

import torch

from stargan.config import OptimConfig, V1OptimConfig
from stargan.nets.v1 import Networks as V1Networks
from stargan.nets.v2 import Networks


class Augmentation(Protocol):
    """What D sees is ``augmentation(image)``; its random state (and ADA's p) is checkpointed."""

    def __call__(self, x: torch.Tensor) -> torch.Tensor: ...
    def state_dict(self) -> dict[str, torch.Tensor]: ...
    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None: ...


@dataclass
class TrainState:
    """Everything that changes while training StarGAN v2; a checkpoint stores all of it."""

    nets: Networks
    ema: Networks                  # moving averages of G, F, E (no discriminator)
    optimizers: dict[str, torch.optim.Optimizer]
    step: int = 0                  # number of iterations done
    world_size: int = 1            # processes whose gradients are averaged (see distributed.py)
    augment: Augmentation | None = None  # training.v2.augment's DiffAugment or ADA, when train.augment is on


@dataclass
class V1TrainState:
    """Everything that changes while training StarGAN v1; a checkpoint stores all of it."""

    nets: V1Networks
    optimizers: dict[str, torch.optim.Optimizer]   # "generator", "discriminator"
    step: int = 0                  # number of iterations done
    world_size: int = 1            # processes whose gradients are averaged (see distributed.py)


def make_train_state(nets: Networks, optim: OptimConfig, world_size: int = 1, fused: bool = False
                     ) -> TrainState:
    """A fresh v2 state: the moving averages start as copies of G, F and E. ``fused`` (CUDA): Adam's
    fused kernels, which also let fp16's loss scaler skip steps on overflow without a host sync (a
    non-fused optimizer makes ``GradScaler.step`` read a flag back per step)."""
    ema = Networks(copy.deepcopy(nets.generator), copy.deepcopy(nets.mapping_network),
                   copy.deepcopy(nets.style_encoder))
    for _, net in ema.items():
        net.requires_grad_(False).eval()
    optimizers = {name: torch.optim.Adam(net.parameters(), **optim.adam_settings(name),
                                         **({"fused": True} if fused else {}))
                  for name, net in nets.items()}
    return TrainState(nets=nets, ema=ema, optimizers=optimizers, world_size=world_size)


def make_v1_train_state(nets: V1Networks, optim: V1OptimConfig, world_size: int = 1) -> V1TrainState:
    optimizers = {name: torch.optim.Adam(net.parameters(), **optim.adam_settings(name))
                  for name, net in nets.items()}
    return V1TrainState(nets=nets, optimizers=optimizers, world_size=world_size)
