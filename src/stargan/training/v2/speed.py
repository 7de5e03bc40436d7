"""How a training step runs, apart from its math: precision, memory format, compilation.

None of it is saved: weights, optimizer states and moving averages stay fp32 in every mode (and are
written contiguous), so a checkpoint is the same whatever the options, and a run can resume under others.

- ``bf16`` (CPU and CUDA) and ``fp16`` (CUDA only) run the networks' forward and backward passes under
  ``torch.autocast``, through the wrappers of :meth:`Speed.passes`, which give every output back in
  fp32: the losses, the augmentation and the R1 penalty's gradient w.r.t. the real images are fp32
  arithmetic (the convolutions of R1's double backward run in the autocast dtype, like every other
  backward convolution).
- ``fp16`` scales each phase's loss with its own ``GradScaler`` (four phases, so a phase whose gradients
  overflow lowers only its own scale); the R1 gradient is taken of the scaled output and unscaled.
- ``channels_last`` converts the networks and the images to NHWC once; the weights keep their values.
- ``compile`` wraps G, F and E, and D where no double backward goes through it, in ``torch.compile``.
  Before the first optimizer step :func:`verify_compiled` runs every compiled pass and its eager twin
  on the same batch, forward and backward; a pass that fails to compile, gives a non-finite value or
  differs from eager beyond :data:`VERIFY_TOLERANCE` turns compilation off for the run, with one
  warning naming the pass. A compilation error later on falls back to eager the same way. (A compiler
  that crashes the process is caught earlier, by the child-process probe of
  :mod:`stargan.training.v2.probe`.)
"""
from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from stargan import hardware, losses

PRECISIONS = ("fp32", "bf16", "fp16")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
# How far a compiled pass may be from eager: the relative L2 distance of its outputs (all together) and
# of its parameter gradients (all together). fp32: at most VERIFY_TOLERANCE from eager fp32 (rounding
# in another order; measured below 1e-5 on the test networks). bf16/fp16: eager autocast itself moves
# the values from fp32 by some distance d (the gradients of the cpu-small decoder by about 0.1); the
# compiled pass may be LOW_PRECISION_SLACK * d from fp32, and at least the precision's floor (D's
# output is one logit per image: on a batch of 2, d itself is a noisy estimate; a compiled D was
# 0.013 from fp32 there). No worse than the eager step it replaces, within rounding; a broken pass is
# off by O(1) or non-finite.
VERIFY_TOLERANCE = {"fp32": 1e-4, "bf16": 0.05, "fp16": 0.01}
LOW_PRECISION_SLACK = 2.0
COMPILED_PASSES = ("generator.encode_image", "generator.decode_from", "mapping_network", "style_encoder",
                   "discriminator")


@dataclass
class Speed:
    precision: str = "fp32"        # fp32 | bf16 | fp16
    shared_passes: bool = True     # compute once the passes several phases reuse (exact; see v2/step.py)
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

    def passes(self, nets) -> Passes:
        """The passes of the v2 networks ``nets`` as the training step calls them (see :class:`Passes`)."""
        dtype = next(nets.generator.parameters()).dtype

        def run(fn, back_to: torch.dtype | None = dtype):
            return fn if self.precision == "fp32" else _InPrecision(self, fn, back_to)

        return Passes(encode=run(self.fn(nets, "generator.encode_image"), back_to=None),
                      decode=run(self.fn(nets, "generator.decode_from")),
                      mapping_network=run(self.fn(nets, "mapping_network")),
                      style_encoder=run(self.fn(nets, "style_encoder")),
                      discriminator=run(self.fn(nets, "discriminator")),
                      discriminator_for_r1=run(nets.discriminator))

    def r1_penalty(self, phase: str, d_out: torch.Tensor, x_real: torch.Tensor) -> torch.Tensor:
        """:func:`stargan.losses.r1_penalty`; under fp16's loss scaling, of the output scaled by the
        phase's scale (so that the half-precision gradients do not underflow), divided by its square."""
        scaler = self.scaler(phase)
        if scaler is None:
            return losses.r1_penalty(d_out, x_real)
        scale = scaler.scale(torch.ones((), device=d_out.device))  # a tensor: no host sync
        return losses.r1_penalty(d_out * scale, x_real) / scale**2


@dataclass(frozen=True)
class Passes:
    """The v2 networks' passes as the training step calls them, run the way a :class:`Speed` says.

    In bf16/fp16 each runs under autocast and gives its outputs back in the weights' dtype (fp32), so
    that the step's own arithmetic is never half precision; G's encoder features stay in the autocast
    dtype (only G's decoder reads them). Compiled where :func:`prepare_networks` compiled them.
    In fp32 eager, the networks' own methods.
    """

    encode: Callable[..., Any]                      # G's encoder half: (x, masks) -> features
    decode: Callable[..., torch.Tensor]             # G's styled half: (features, s, masks) -> image
    mapping_network: Callable[..., torch.Tensor]    # F: (z, y) -> s
    style_encoder: Callable[..., torch.Tensor]      # E: (x, y) -> s
    discriminator: Callable[..., torch.Tensor]      # D on fake images: compiled when asked
    discriminator_for_r1: Callable[..., torch.Tensor]  # D on real images: eager (R1 differentiates it twice)


class _InPrecision:
    """``fn`` under the speed's autocast, its floating outputs cast to ``back_to`` (None: as they are)."""

    def __init__(self, speed: Speed, fn, back_to: torch.dtype | None) -> None:
        self.speed, self.fn, self.back_to = speed, fn, back_to

    def __call__(self, *args):
        with self.speed.autocast():
            out = self.fn(*args)
        return out if self.back_to is None else _cast(out, self.back_to)


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
    quiet_compile()
    speed.compiled = {name: CompiledOrEager(speed, speed.fn(nets, name)) for name in COMPILED_PASSES}


def quiet_compile() -> None:
    """Set up compilation: keep torch's "No CUDA runtime is found, using CUDA_HOME=..." (logged when
    inductor first builds C++ on a machine without CUDA) from the user's terminal, and give inductor a
    cache of this machine's own (:func:`inductor_cache_dir`)."""
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)
    os.environ["TORCHINDUCTOR_CACHE_DIR"] = str(inductor_cache_dir())


def inductor_cache_dir() -> Path:
    """Where inductor keeps its compiled graphs for this process: ``TORCHINDUCTOR_CACHE_DIR`` when the
    user set it, else ``$XDG_CACHE_HOME/stargan/inductor/<machine key>`` (:func:`hardware.machine_key`).

    Why not torch's default ``/tmp/torchinductor_$USER``: its FX-graph cache key leaves out the vector
    ISA (torch 2.14.1). A graph compiled with ``ATEN_CPU_CAPABILITY=avx2`` and loaded by a process on
    the default AVX-512 path corrupts the heap ("corrupted size vs. prev_size") or computes garbage; a
    disk that moves between CPUs (a VM image, a shared /tmp) carries the same trap. Keyed by machine,
    each ISA gets its own cache.
    """
    from torch._inductor.runtime.cache_dir_utils import default_cache_dir

    own = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if own and os.path.abspath(own) != os.path.abspath(default_cache_dir()) and "stargan" not in own:
        return Path(own)
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "stargan" / "inductor" / hardware.machine_key()


def verify_compiled(nets, speed: Speed, batch: dict[str, torch.Tensor], mask_fn=None) -> dict[str, str]:
    """Run each compiled pass and the eager module on the same inputs from ``batch``, forward and
    backward (gradients of a fixed random projection of the outputs w.r.t. the module's parameters);
    return ``{pass: problem}`` for those that raise, give non-finite values, or differ from eager by
    more than ``VERIFY_TOLERANCE`` (empty when all agree, or when nothing is compiled)."""
    if not speed.compiled:
        return {}
    x_real, x_ref = speed.images(batch["x_real"]), speed.images(batch["x_ref"])
    masks = mask_fn(x_real) if mask_fn is not None else None
    with torch.no_grad(), speed.autocast():
        features = nets.generator.encode_image(x_real, masks)
        style = nets.mapping_network(batch["z_trg"], batch["y_trg"])
    inputs = {"generator.encode_image": (x_real, masks), "generator.decode_from": (features, style, masks),
              "mapping_network": (batch["z_trg"], batch["y_trg"]), "style_encoder": (x_ref, batch["y_trg"]),
              "discriminator": (x_real, batch["y_org"])}
    problems = {}
    for name, wrapper in speed.compiled.items():
        module = getattr(nets, name.partition(".")[0])
        reference = _values_and_grads(wrapper.eager, _fp32(inputs[name]), module, Speed())
        expected = (reference if speed.precision == "fp32"
                    else _values_and_grads(wrapper.eager, inputs[name], module, speed))
        try:
            got = _values_and_grads(wrapper.compiled, inputs[name], module, speed)
        except Exception as error:  # noqa: BLE001 - any backend failure means eager
            problems[name] = f"{type(error).__name__}: {str(error)[:200]}"
            continue
        problem = _difference(got, expected, reference, speed.precision)
        if problem:
            problems[name] = problem
    return problems


def _fp32(value):
    return _cast(value, torch.float32)


def _cast(value, dtype: torch.dtype):
    """The floating tensors of ``value`` (a tensor, or a tuple, list or dict of them) in ``dtype``."""
    if isinstance(value, torch.Tensor):
        return value.to(dtype) if value.is_floating_point() else value
    if isinstance(value, dict):
        return {k: _cast(v, dtype) for k, v in value.items()}
    if isinstance(value, (tuple, list)):
        return type(value)(_cast(v, dtype) for v in value)
    return value


def _values_and_grads(fn, args, module: nn.Module, speed: Speed) -> list[tuple[str, torch.Tensor]]:
    with speed.autocast():
        out = fn(*args)
    flat = [t for t in _tensors(out) if t.is_floating_point()]
    g = torch.Generator().manual_seed(0)
    projection = sum((t.float() * torch.randn(t.shape, generator=g).to(t.device)).sum() for t in flat)
    params = [(n, p) for n, p in module.named_parameters() if p.requires_grad]
    grads = torch.autograd.grad(projection, [p for _, p in params], allow_unused=True)
    return ([(f"output {i}", t.detach().float()) for i, t in enumerate(flat)]
            + [(f"gradient of {n}", gr.float()) for (n, _), gr in zip(params, grads) if gr is not None])


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, dict):
        value = [value[k] for k in sorted(value)]
    if isinstance(value, (tuple, list)):
        return [t for v in value for t in _tensors(v)]
    return []


def _difference(got: list[tuple[str, torch.Tensor]], expected: list[tuple[str, torch.Tensor]],
                reference: list[tuple[str, torch.Tensor]], precision: str) -> str | None:
    """Non-finite values by name; else the relative L2 distance from fp32 eager of all outputs together
    and of all parameter gradients together (a bias before an instance norm has a gradient that is
    rounding noise around 0: tensor by tensor the distance would mean nothing)."""
    if not [n for n, _ in got] == [n for n, _ in expected] == [n for n, _ in reference]:
        return "gives other outputs or gradients than eager"
    for (name, a), (_, b) in zip(got, expected):
        if not torch.isfinite(a).all():
            return f"non-finite {name}" + ("" if torch.isfinite(b).all() else " (eager too)")

    def distance(values, kind: str) -> float:
        a = torch.cat([t.flatten() for n, t in values if n.startswith(kind)] or [torch.zeros(1)])
        b = torch.cat([t.flatten() for n, t in reference if n.startswith(kind)] or [torch.zeros(1)])
        return ((a - b).norm() / b.norm().clamp_min(1e-12)).item()

    for kind in ("output", "gradient"):
        error = distance(got, kind)
        floor = VERIFY_TOLERANCE[precision]
        if precision == "fp32":
            if error > floor:
                return f"differs from eager in its {kind}s by {error:.2g} relative (tolerance {floor:g})"
            continue
        eager = distance(expected, kind)
        if error > max(LOW_PRECISION_SLACK * eager, floor):
            return (f"is {error:.2g} (relative) from fp32 in its {kind}s where eager {precision} is "
                    f"{eager:.2g}: over {LOW_PRECISION_SLACK:g}x and over {floor:g}")
    return None


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
