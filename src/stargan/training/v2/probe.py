"""Which speed settings win on this machine: ``auto`` resolved by rule, or by a short measurement.

- ``train.precision: auto``: bf16 where the device computes it natively (:mod:`stargan.hardware`),
  else fp32. A rule: no measurement needed.
- ``train.channels_last: auto`` and ``train.compile: auto``: no rule holds on every machine (NHWC
  helps oneDNN's bf16 convolutions and can slow fp32 ones; what torch.compile gains depends on the CPU
  and the shapes), so the candidates are measured on the run's own network shapes and batch size.

The probe runs in a child process (``python -m stargan.training.v2.probe``): a compiler that crashes
(seen: a segmentation fault in a compiled bf16 pass) takes the child down, not the run. It times a few
iterations of each candidate on random data, in turns, and checks every compiled pass against eager
(:func:`stargan.training.v2.speed.verify_compiled`). Its answer is cached per machine (CPU or GPU model,
its bf16 support, the ISA caps in the environment), torch version, thread count, shapes and precision,
in ``$XDG_CACHE_HOME/stargan/speed/`` (default ``~/.cache``), as cudnn.benchmark keeps its choice:
the next run with the same key starts at once. An explicit ``compile: true`` is probed the same way,
and a crash or a failed check turns it off with a warning.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from stargan import hardware
from stargan.config import Config, LossConfig, ModelConfig, TrainConfig

PROBE_ITERS = 3          # timed iterations per candidate (after one or two warm-up iterations)
MARGIN = 0.05            # a setting that adds machinery must be this much faster to be chosen
PROBE_TIMEOUT = 900.0    # seconds; compiling the five passes takes about a minute on 2 CPU cores


@dataclasses.dataclass(frozen=True)
class Candidate:
    channels_last: bool
    compile: bool

    @property
    def label(self) -> str:
        return ("channels_last" if self.channels_last else "contiguous") + ("+compile" if self.compile else "")

    @property
    def machinery(self) -> int:
        return int(self.channels_last) + int(self.compile)


@dataclasses.dataclass
class Measured:
    candidate: Candidate
    seconds: float | None = None   # per iteration; None when it failed
    problem: str = ""


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "stargan" / "speed"


def resolve_precision(precision: str, device: torch.device) -> tuple[str, str | None, str | None]:
    """(precision, what to print, a warning): ``auto`` by the bf16 rule; an explicit ``bf16`` where it
    is emulated runs as asked, with a warning."""
    support = hardware.bf16_support(device)
    if precision == "auto":
        chosen = "bf16" if support.native else "fp32"
        return chosen, f"precision: {chosen} (auto: {support.reason})", None
    if precision == "bf16" and not support.native:
        return precision, None, (f"precision bf16: {support.reason}; bf16 is emulated here and slower "
                                 "than fp32 (precision auto would pick fp32)")
    return precision, None, None


def candidates(train: TrainConfig) -> list[Candidate]:
    def options(value: bool | str) -> list[bool]:
        return [False, True] if value == "auto" else [bool(value)]

    return [Candidate(cl, comp) for comp in options(train.compile) for cl in options(train.channels_last)]


def probe_key(request: dict[str, Any]) -> str:
    device = torch.device(request["device"])
    facts = {"request": request, "torch": torch.__version__, "machine": hardware.describe(device),
             "isa": {k: os.environ.get(k, "") for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY")},
             "version": 2}
    return hashlib.sha256(json.dumps(facts, sort_keys=True).encode()).hexdigest()[:20]


def run_probe(request: dict[str, Any], command: list[str] | None = None, timeout: float = PROBE_TIMEOUT
              ) -> list[Measured]:
    """Measure ``request["candidates"]`` in a child process; a crash or a time-out fails every candidate
    it had not finished (compiled candidates are measured last)."""
    command = command or [sys.executable, "-m", "stargan.training.v2.probe"]
    cands = [Candidate(**c) for c in request["candidates"]]
    try:
        done = subprocess.run(command, input=json.dumps(request), capture_output=True, text=True,
                              timeout=timeout)
    except subprocess.TimeoutExpired:
        return [Measured(c, None, f"the probe took over {timeout:.0f} s") for c in cands]
    results = {}  # the last line of a candidate wins (an eager one is timed again beside compile)
    for line in done.stdout.splitlines():
        if line.startswith("{"):
            item = json.loads(line)
            results[Candidate(**item["candidate"])] = Measured(Candidate(**item["candidate"]),
                                                               item["seconds"], item["problem"])
    if done.returncode != 0:
        died = (f"signal {-done.returncode}" if done.returncode < 0 else f"exit status {done.returncode}")
        tail = done.stderr.strip().splitlines()[-1:] or [""]
        reason = f"the probe process died ({died}) {tail[0][:200]}".strip()
        eager = [c for c in cands if not c.compile and c not in results]
        if eager and len(eager) < len(cands):  # measure the eager ones again, without the compiler
            again = run_probe({**request, "candidates": [dataclasses.asdict(c) for c in eager]}, command,
                              timeout)
            results.update({m.candidate: m for m in again})
        return [results.get(c) or Measured(c, None, reason) for c in cands]
    return [results.get(c) or Measured(c, None, "not measured") for c in cands]


def cached_probe(request: dict[str, Any], probe: Callable[[dict[str, Any]], list[Measured]] | None = None,
                 fresh: bool = False) -> tuple[list[Measured], Path, bool]:
    """(measurements, cache file, whether they came from the cache); ``fresh`` measures again."""
    path = cache_dir() / f"{probe_key(request)}.json"
    try:
        if not fresh:
            data = json.loads(path.read_text())
            return [Measured(Candidate(**m["candidate"]), m["seconds"], m["problem"]) for m in data], path, True
    except (OSError, ValueError, KeyError, TypeError):
        pass
    measured = (probe or run_probe)(request)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps([{"candidate": dataclasses.asdict(m.candidate), "seconds": m.seconds,
                                "problem": m.problem} for m in measured]))
    os.replace(tmp, path)
    return measured, path, False


def choose(measured: list[Measured]) -> Candidate | None:
    """The fastest candidate that passed; one with more machinery (channels_last, compile) must beat the
    simpler ones by ``MARGIN`` per setting it adds. None if every candidate failed."""
    ok = [m for m in measured if m.seconds is not None]
    if not ok:
        return None
    return min(ok, key=lambda m: m.seconds * (1 + MARGIN * m.candidate.machinery)).candidate


def resolve_speed(config: Config, device: torch.device,
                  probe: Callable[[dict[str, Any]], list[Measured]] | None = None, fresh: bool = False
                  ) -> tuple[Config, list[str], list[str]]:
    """``config`` with ``train.precision``, ``channels_last`` and ``compile`` resolved for ``device``;
    the lines to print and the warnings to give (the precision's line is printed at once, before a
    probe that may take a minute)."""
    t = config.train
    precision, said, warning = resolve_precision(t.precision, device)
    if said:
        print(said, flush=True)
    lines, warns = [], [warning] if warning else []
    cands = candidates(t)
    if len(cands) == 1 and not cands[0].compile:  # nothing to measure
        chosen = cands[0]
    else:
        request = {"model": dataclasses.asdict(config.model), "loss": dataclasses.asdict(config.loss),
                   "batch_size": config.data.batch_size, "device": str(device), "precision": precision,
                   "threads": torch.get_num_threads(), "iters": PROBE_ITERS,
                   "candidates": [dataclasses.asdict(c) for c in cands]}
        started = time.monotonic()
        if not fresh and not (cache_dir() / f"{probe_key(request)}.json").is_file():
            print(f"speed: measuring {', '.join(c.label for c in cands)} on this machine (once; a child "
                  "process" + (", compiling takes a minute or more" if any(c.compile for c in cands)
                               else "") + ")", flush=True)
        measured, path, cached = cached_probe(request, probe, fresh)
        chosen = choose(measured)
        figures = ", ".join(f"{m.candidate.label} " + (
            f"{m.seconds:.3f} s/it" if m.seconds is not None
            else f"skipped ({m.problem})" if m.problem.startswith("not compiled")
            else f"failed ({m.problem})") for m in measured)
        how = "cached" if cached else f"measured in {time.monotonic() - started:.0f} s"
        all_failed = chosen is None  # only compiled candidates can fail: the eager step is ours
        if all_failed:
            chosen = Candidate(cands[0].channels_last if len(cands) == 1 else False, False)
        lines.append(f"speed ({precision}, batch {config.data.batch_size}, {torch.get_num_threads()} "
                     f"threads; {how}, {path}): {figures} -> channels_last={str(chosen.channels_last).lower()}, "
                     f"compile={str(chosen.compile).lower()}")
        failed = [m for m in measured if m.candidate.compile and m.seconds is None
                  and not m.problem.startswith("not compiled")]
        if failed and (t.compile is True or all_failed):
            warns.append(f"train.compile={str(t.compile).lower()}: {failed[0].problem}; training runs eagerly")
    resolved = dataclasses.replace(t, precision=precision, channels_last=chosen.channels_last,
                                   compile=chosen.compile)
    return dataclasses.replace(config, train=resolved), lines, warns


# ---- the child process ------------------------------------------------------------------------------

def _measure(request: dict[str, Any]) -> None:
    """Time each candidate on random data of the request's shapes; print one JSON line per candidate.

    Eager candidates first, in turns; then torch.compile with the memory format that was faster eagerly
    (compiling takes about a minute per format on 2 CPU cores), timed in turns with that eager twin.
    """
    bench = _Bench(request)
    cands = [Candidate(**c) for c in request["candidates"]]
    eager = {cand: bench.setup(cand) for cand in cands if not cand.compile}
    for state, speed in eager.values():
        bench.step(state, speed)  # warm-up
    eager_times = bench.timed(eager)
    for cand, seconds in eager_times.items():
        _emit(cand, seconds, "" if seconds is not None else "non-finite losses")
    for cand in _compiled_to_measure(cands, eager_times):
        _measure_compiled(bench, cand, eager)


class _Bench:
    """Networks, a random batch and the step of the request, and a timer that runs candidates in turns."""

    def __init__(self, request: dict[str, Any]):
        torch.set_num_threads(request["threads"])
        self.request, self.device = request, torch.device(request["device"])
        self.model = ModelConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in request["model"].items()})
        self.loss = LossConfig(**request["loss"])
        self.batch = random_batch(self.model, request["batch_size"], self.device)

    def setup(self, cand: Candidate) -> tuple[Any, Any]:
        from stargan.nets.v2 import build_networks
        from stargan.state import make_train_state
        from stargan.training.v2.speed import make_speed, prepare_networks

        torch.manual_seed(0)
        state = make_train_state(build_networks(self.model).to(self.device), Config().optim)
        speed = make_speed(self.request["precision"], self.device, channels_last=cand.channels_last)
        prepare_networks(state.nets, speed, compile_nets=cand.compile)
        return state, speed

    def step(self, state, speed) -> dict[str, torch.Tensor]:
        from stargan.training.v2.step import train_step

        return train_step(state, self.batch, self.loss, 0.999, speed=speed)

    def timed(self, runs: dict[Candidate, tuple]) -> dict[Candidate, float | None]:
        """The median seconds per step of each candidate (None when a step's losses were non-finite)."""
        times: dict[Candidate, list[float]] = {cand: [] for cand in runs}
        for _ in range(self.request["iters"]):
            for cand, (state, speed) in runs.items():  # in turns: a busy spell slows all alike
                _sync(self.device)
                start = time.perf_counter()
                logs = self.step(state, speed)
                _sync(self.device)
                finite = all(bool(torch.isfinite(v).all()) for v in logs.values())
                times[cand].append(time.perf_counter() - start if finite else float("nan"))
        return {cand: (None if any(t != t for t in ts) else sorted(ts)[len(ts) // 2])
                for cand, ts in times.items()}


def _compiled_to_measure(cands: list[Candidate], eager_times: dict[Candidate, float | None]) -> list[Candidate]:
    """The compiled candidates worth compiling: only the memory format that won eagerly (the others are
    reported as skipped)."""
    compiled = [c for c in cands if c.compile]
    if len(compiled) <= 1:
        return compiled
    best = min((c for c, s in eager_times.items() if s is not None), key=eager_times.get, default=None)
    keep = next((c for c in compiled if best is not None and c.channels_last == best.channels_last), compiled[0])
    for cand in compiled:
        if cand != keep:
            _emit(cand, None, f"not compiled: {keep.label.split('+')[0]} was faster eagerly")
    return [keep]


def _measure_compiled(bench: _Bench, cand: Candidate, eager: dict[Candidate, tuple]) -> None:
    """Check the compiled passes against eager; if they pass, time the compiled step in turns with its
    eager twin (timed beside it: comparable) and report both."""
    from stargan.training.v2.speed import verify_compiled

    state, speed = bench.setup(cand)
    failed = verify_compiled(state.nets, speed, bench.batch)
    if failed:
        _emit(cand, None, "; ".join(f"{name}: {why}" for name, why in failed.items()))
        return
    for _ in range(2):  # warm-up: compiles the graphs of the step's other calls too
        bench.step(state, speed)
    twin = Candidate(cand.channels_last, False)
    seconds = bench.timed({cand: (state, speed), **({twin: eager[twin]} if twin in eager else {})})
    _emit(cand, seconds[cand], "" if seconds[cand] is not None else "non-finite losses")
    if twin in eager and seconds[twin] is not None:
        _emit(twin, seconds[twin], "")


def random_batch(model: ModelConfig, batch: int, device: torch.device) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    size, n = model.img_size, model.num_domains
    x = lambda: torch.rand(batch, 3, size, size, generator=g) * 2 - 1  # noqa: E731
    y = lambda: torch.randint(0, n, (batch,), generator=g)  # noqa: E731
    z = lambda: torch.randn(batch, model.latent_dim, generator=g)  # noqa: E731
    out = {"x_real": x(), "y_org": y(), "x_ref": x(), "x_ref2": x(), "y_trg": y(), "z_trg": z(), "z_trg2": z()}
    return {k: v.to(device) for k, v in out.items()}


def _emit(cand: Candidate, seconds: float | None, problem: str) -> None:
    print(json.dumps({"candidate": dataclasses.asdict(cand), "seconds": seconds, "problem": problem}),
          flush=True)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


if __name__ == "__main__":
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _measure(json.loads(sys.stdin.read()))
