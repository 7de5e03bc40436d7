"""Optimizer updates shared by the StarGAN v1 and v2 training steps."""
from __future__ import annotations

import contextlib
from typing import Any

import torch
from torch import nn
from torch.profiler import record_function

from stargan.distributed import average_gradients


@contextlib.contextmanager
def frozen(*modules: nn.Module):
    """Skip parameter gradients of modules whose updates would be thrown away.

    Gradients still flow *through* the modules to their inputs, so the result is exactly the same as
    computing and discarding the parameter gradients; it only saves the work.
    """
    flags = [[p.requires_grad for p in m.parameters()] for m in modules]
    for m in modules:
        m.requires_grad_(False)
    try:
        yield
    finally:
        for m, module_flags in zip(modules, flags):
            for p, flag in zip(m.parameters(), module_flags):
                p.requires_grad_(flag)


def update(state: Any, loss: torch.Tensor, names: tuple[str, ...],
           scaler: torch.amp.GradScaler | None = None) -> None:
    """Back-propagate ``loss`` and step the optimizers of the networks ``names`` (v1 and v2 states).

    Every optimizer's gradients are cleared first, so gradients of the other networks are discarded;
    under data parallelism the stepped networks' gradients are averaged across processes. With a
    ``scaler`` (fp16) the loss is scaled, and the steps are skipped when a gradient overflowed.
    """
    for optimizer in state.optimizers.values():
        optimizer.zero_grad(set_to_none=True)
    with record_function("backward"):
        (loss if scaler is None else scaler.scale(loss)).backward()
    if state.world_size > 1:
        average_gradients([getattr(state.nets, name) for name in names], state.world_size)
    with record_function("optimizer"):
        for name in names:
            if scaler is None:
                state.optimizers[name].step()
            else:
                scaler.step(state.optimizers[name])
        if scaler is not None:
            scaler.update()
