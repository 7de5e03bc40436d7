"""How a training step runs, apart from its math: precision, memory format, compilation.

None of it is saved: weights, optimizer states and moving averages stay fp32 in every mode (and are
written contiguous), so a checkpoint is the same whatever the options, and a run can resume under others.

- ``bf16`` (CPU and CUDA) and ``fp16`` (CUDA only) run the networks' forward and backward passes under
  ``torch.autocast``; every loss is reduced in fp32 (outputs are cast back first), and the R1 penalty's
  gradient w.r.t. the real images is an fp32 tensor squared and summed in fp32 (the convolutions of
  its double backward run in the autocast dtype, like every other backward convolution).
- ``fp16`` scales each phase's loss with its own ``GradScaler`` (four phases, so a phase whose gradients
  overflow lowers only its own scale); the R1 gradient is taken of the scaled output and unscaled.
- ``channels_last`` converts the networks and the images to NHWC once; the weights keep their values.
- ``compile`` wraps G, F and E, and D where no double backward goes through it, in ``torch.compile``;
  a failure falls back to eager with one warning.
"""
from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass, field

import torch
from torch import nn

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass
class Speed:
    precision: str = "fp32"        # fp32 | bf16 | fp16
    shared_passes: bool = True     # reuse G's encoder and no-grad passes across phases (exact)
    channels_last: bool = False
    device_type: str = "cpu"
    scalers: dict[str, torch.amp.GradScaler] = field(default_factory=dict)  # fp16: one per phase
    compiled: dict[str, nn.Module] = field(default_factory=dict)            # name -> compiled module

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise ValueError(f"train.precision={self.precision!r}; expected one of {', '.join(PRECISIONS)}")
        if self.precision == "fp16" and self.device_type != "cuda":
            raise ValueError("train.precision=fp16 needs CUDA (fp16 autocast with loss scaling); "
                             "on a CPU use train.precision=bf16")
        if self.precision == "fp16" and not self.scalers:
            self.scalers = {phase: torch.amp.GradScaler("cuda")
                            for phase in ("D/latent", "D/ref", "G/latent", "G/ref")}

    def autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device_type, dtype=DTYPES[self.precision])

    def scaler(self, phase: str) -> torch.amp.GradScaler | None:
        return self.scalers.get(phase)

    def images(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last and x.dim() == 4 else x

    def fn(self, nets, name: str):
        """What to call for ``name`` (``"style_encoder"``, ``"generator.decode_from"``): the compiled
        function if there is one, else the module or its method."""
        if name in self.compiled:
            return self.compiled[name]
        net, _, method = name.partition(".")
        return getattr(getattr(nets, net), method) if method else getattr(nets, net)


def make_speed(precision: str = "fp32", device: torch.device | str = "cpu", shared_passes: bool = True,
               channels_last: bool = False) -> Speed:
    return Speed(precision=precision, shared_passes=shared_passes, channels_last=channels_last,
                 device_type=torch.device(device).type)


def prepare_networks(nets, speed: Speed, compile_nets: bool = False) -> None:
    """Apply the memory format to ``nets`` in place, and compile their passes into ``speed.compiled``.

    Compiled: G's encoder and decoder halves, F, E, and D for the fake images (the R1 pass on real
    images needs a double backward, which compiled graphs do not support, so it stays eager).
    """
    if speed.channels_last:
        for _, net in nets.items():
            net.to(memory_format=torch.channels_last)
    if not compile_nets:
        return
    names = ("generator.encode_image", "generator.decode_from", "mapping_network", "style_encoder",
             "discriminator")
    speed.compiled = {name: CompiledOrEager(speed, speed.fn(nets, name)) for name in names}


class CompiledOrEager:
    """``torch.compile(fn)``, falling back to eager ``fn`` for every pass of the step (one warning)
    as soon as any compilation fails, e.g. without a working C++ compiler."""

    def __init__(self, speed: Speed, fn) -> None:
        self.speed, self.eager, self.compiled = speed, fn, torch.compile(fn)

    def __call__(self, *args, **kwargs):
        if self.speed.compiled:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as error:  # noqa: BLE001 - any backend failure means eager
                warnings.warn(f"train.compile: torch.compile failed ({type(error).__name__}: "
                              f"{str(error)[:300]}); training continues eagerly", stacklevel=2)
                self.speed.compiled = {}
        return self.eager(*args, **kwargs)
