"""The training machinery shared by StarGAN v1 and v2: devices, run directories, the scalar log, resuming,
and :func:`run_loop`, which iterates a step function with progress bar, logging and checkpoints.

How a run ends (the exit status of ``stargan train``, see stargan.cli.main):
- finished: the last checkpoint is written;
- SIGINT (Ctrl-C), SIGTERM (schedulers before preemption), SIGHUP: the current iteration finishes, a
  checkpoint is written and :class:`TrainingStopped` is raised (exit status 128 + signal number);
  a second Ctrl-C stops at once, without a checkpoint (the last one stays);
- an error while loading a batch (the networks are whole): a checkpoint of the finished iterations is
  written, then :class:`TrainingFailed`;
- an error inside an iteration (out of memory, ...) or a non-finite loss: no checkpoint is written (the
  networks may be half-updated or broken); the last good checkpoint stays; :class:`TrainingFailed`.
"""
from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from stargan import checkpoints
from stargan.config import AnyConfig
from stargan.distributed import World, any_rank, wait_for_main

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)
RUN_CONTENTS = ("config.yaml", "checkpoints", "logs", "samples", "metrics")  # what marks a run directory


class TrainingFailed(RuntimeError):
    """Training stopped on an error; the message names the step, what failed and the last checkpoint."""


class TrainingStopped(Exception):
    """A stop signal ended training after a checkpoint was written."""

    def __init__(self, signum: int, step: int, checkpoint: Path | None, run_dir: Path):
        self.signum, self.step, self.checkpoint = signum, step, checkpoint
        name = signal.Signals(signum).name
        super().__init__(f"stopped by {name} after step {step}: saved {checkpoint}; "
                         f"continue with `stargan train --resume {run_dir}`")

    @property
    def exit_status(self) -> int:
        return 128 + self.signum


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"train.device={name!r} but CUDA is not available; use train.device=cpu")
    return torch.device(name)


def check_new_run_dir(run_dir: Path) -> None:
    """A new run may not start in a directory that already holds a run: it would mix the two."""
    found = [name for name in RUN_CONTENTS if (run_dir / name).exists()]
    if found:
        raise ValueError(f"{run_dir} already holds a run ({', '.join(found)}); nothing was changed. "
                         f"Continue it with `stargan train --resume {run_dir}`, or start a new run in "
                         "another directory (--run-dir NEW_DIR, or no --run-dir for a new numbered one)")


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold ``RUN/.lock`` while training, so that two processes never write into one run.

    A POSIX record lock (``lockf``): it belongs to this process alone. Forked children (data-loader
    workers) do not inherit it, so when the training process dies (kill -9) the lock dies with it and an
    immediate ``--resume`` may take it; an ``flock`` would live on in a worker until the worker noticed.
    Record locks do not exclude the process that holds them, and closing any descriptor of the file
    drops them: a second lock in the same process is refused before the file is opened again."""
    import fcntl

    run_dir.mkdir(parents=True, exist_ok=True)
    key = (run_dir / ".lock").resolve()
    if key in _HELD_IN_THIS_PROCESS:
        raise ValueError(f"{run_dir} is being trained already, by this process (pid {os.getpid()}); "
                         "wait for it to finish or stop it first")
    with open(run_dir / ".lock", "a+") as fh:
        try:
            fcntl.lockf(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            raise ValueError(f"{run_dir} is being trained by another process (pid {fh.read().strip() or '?'});"
                             " wait for it to finish or stop it first") from None
        _HELD_IN_THIS_PROCESS.add(key)
        try:
            fh.seek(0)
            fh.truncate()
            fh.write(str(os.getpid()))
            fh.flush()
            yield
        finally:
            _HELD_IN_THIS_PROCESS.discard(key)
            fcntl.lockf(fh, fcntl.LOCK_UN)


# The run locks this process holds (record locks cannot tell a second taker in the same process).
_HELD_IN_THIS_PROCESS: set[Path] = set()


def remove_stale_files(run_dir: Path) -> list[Path]:
    """Temporary files of a process that died while writing (kill -9, power loss); called under the lock."""
    stale = [*(run_dir / "checkpoints").glob(".tmp-*"), *(run_dir / "samples").glob(".*.tmp"),
             *run_dir.glob(".config.yaml.*.tmp")]
    for path in stale:
        checkpoints.remove_tree(path)
    return stale


def check_run_dir(run_dir: Path, config: AnyConfig, resume: bool) -> None:
    """Before any work: a new run needs a directory without a run in it; a resumed run may change only
    the settings that do not define its networks or data (see checkpoints.check_resume)."""
    if not resume:
        check_new_run_dir(run_dir)
    elif checkpoints.checkpoint_dirs(run_dir):
        checkpoints.check_resume(run_dir, config)


@contextlib.contextmanager
def training_run(run_dir: Path, world: World) -> Iterator[None]:
    """Rank 0 holds the run's lock while training and first clears what a killed process left behind."""
    if not world.is_main:
        yield
        return
    with run_lock(run_dir):
        stale = remove_stale_files(run_dir)
        if stale:
            tqdm.write(f"removed {len(stale)} temporary file(s) left by an interrupted process: "
                       f"{', '.join(p.name for p in stale)}")
        yield


def new_run_dir(root: str | Path, name: str) -> Path:
    """``root/NNNNN-name``, numbered after the highest existing run (created by :func:`train`)."""
    root = Path(root)
    numbers = [int(m.group(1)) for p in root.glob("*") if (m := re.match(r"^(\d+)-", p.name))]
    return root / f"{max(numbers, default=-1) + 1:05d}-{name or 'run'}"


class ScalarLog:
    """Scalars to ``logs/scalars.jsonl`` and TensorBoard (``logs/``).

    When a run resumes at ``resume_step``, entries after it (written before a crash, by iterations
    that are about to run again) are dropped from both, so each step is logged once.
    """

    def __init__(self, log_dir: Path, resume_step: int | None = None):
        from torch.utils.tensorboard import SummaryWriter

        log_dir.mkdir(parents=True, exist_ok=True)
        path = log_dir / "scalars.jsonl"
        if resume_step is not None and path.is_file():
            _truncate_jsonl(path, resume_step)
        self.jsonl = open(path, "a")
        purge = resume_step + 1 if resume_step is not None else None
        self.tensorboard = SummaryWriter(str(log_dir), purge_step=purge)

    def write(self, step: int, scalars: dict[str, float]) -> None:
        self.jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        self.jsonl.flush()
        for key, value in scalars.items():
            self.tensorboard.add_scalar(key, value, step)

    def close(self) -> None:
        self.jsonl.close()
        self.tensorboard.close()


def _truncate_jsonl(path: Path, last_step: int) -> None:
    kept = []
    for line in path.read_text().splitlines():
        try:
            if json.loads(line)["step"] <= last_step:
                kept.append(line)
        except (ValueError, KeyError, TypeError):  # a line cut short by a crash
            continue
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text("".join(f"{line}\n" for line in kept))
    os.replace(tmp, path)


def resume_and_record(state: Any, config: AnyConfig, run_dir: Path, resume: bool, world: World) -> None:
    """Load the run's last checkpoint into ``state`` when resuming (settings that may change, such as
    learning rates, take effect and are listed); write the resolved config.yaml."""
    if resume and checkpoints.checkpoint_dirs(run_dir):
        ckpt, changes = checkpoints.restore_train_state(run_dir, state, config)
        if world.is_main:
            changed = "; changed: " + ", ".join(f"{k} {old!r} -> {new!r}" for k, old, new in changes)
            tqdm.write(f"resumed from {ckpt} at step {state.step}{changed if changes else ''}")
    elif resume and world.is_main:
        tqdm.write(f"{run_dir} has no checkpoint yet: starting it from step 0")
    if world.is_main:
        config.save_yaml(run_dir / "config.yaml")


class _StopSignals:
    """Turn SIGINT, SIGTERM and SIGHUP into a request to stop after the current iteration."""

    def __init__(self) -> None:
        self.signum: int | None = None
        self._previous: dict[int, Any] = {}

    def _handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None and signum == signal.SIGINT:
            raise KeyboardInterrupt  # a second Ctrl-C: stop now
        self.signum = signum

    def __enter__(self) -> _StopSignals:
        if threading.current_thread() is threading.main_thread():
            for sig in STOP_SIGNALS:
                self._previous[sig] = signal.signal(sig, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)


class _NonFiniteGuard:
    """Notes, per loss term, the first iteration where it was NaN or infinite, without a host sync per
    step (the notes stay on the device); :meth:`check` reads them at log and save steps."""

    def __init__(self) -> None:
        self.first_bad: dict[str, torch.Tensor] = {}

    def observe(self, step: int, logs: dict[str, torch.Tensor]) -> None:
        for key, value in logs.items():
            value = torch.as_tensor(value)
            seen = self.first_bad.get(key)
            if seen is None:
                seen = torch.full((), -1, dtype=torch.long, device=value.device)
            bad = ~torch.isfinite(value).all() & (seen < 0)
            self.first_bad[key] = torch.where(bad, torch.full_like(seen, step), seen)

    def check(self) -> str | None:
        """``None``, or which terms were non-finite first, at which step."""
        steps = {key: int(first) for key, first in self.first_bad.items()}
        bad = {key: step for key, step in steps.items() if step >= 0}
        if not bad:
            return None
        first = min(bad.values())
        terms = ", ".join(key for key, step in bad.items() if step == first)
        return f"non-finite loss at step {first}: {terms}"

    def reset(self) -> None:
        self.first_bad.clear()


def run_loop(state: Any, config: AnyConfig, run_dir: Path, batch_iter: Iterator[dict[str, torch.Tensor]],
             step_fn: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
             on_step: Callable[[int, ScalarLog], None], progress_keys: dict[str, str],
             device: torch.device, world: World, show_progress: bool,
             slow_step: Callable[[int], bool] = lambda step: False,
             measure: Callable[[int], dict[str, float]] = lambda step: {}) -> Path:
    """Iterate ``step_fn`` until ``train.total_iters``; log, checkpoint, and call ``on_step`` (samples,
    metrics) on rank 0. Shared by StarGAN v2 and v1; how it ends is described at the top of this module.

    ``measure(step)`` gives scalars of rank 0's networks to log with the step's losses (in a row of their
    own when the step logs no losses); they are written before the step's checkpoint, so that a run
    killed and resumed logs each of them once.

    ``slow_step(step)`` says that ``on_step`` may take long at that step (an evaluation): the other
    ranks then wait for rank 0 without a collective timeout (see distributed.wait_for_main).
    """
    log = ScalarLog(run_dir / "logs", resume_step=state.step) if world.is_main else None
    saver = _Saver(state, config, run_dir)
    progress = tqdm(total=config.train.total_iters, initial=state.step, desc="train", unit="it",
                    dynamic_ncols=True, disable=not (show_progress and world.is_main))
    try:
        with _StopSignals() as stop:
            while state.step < config.train.total_iters:
                if any_rank(stop.signum is not None, world):
                    signum = stop.signum or signal.SIGTERM  # another rank was signalled
                    saver.save_unless_saved(world)
                    raise TrainingStopped(signum, state.step, saver.last, run_dir)
                logs = _one_iteration(state, step_fn, _next_batch(batch_iter, device, saver, world), saver)
                progress.update(1)
                if world.is_main:  # only rank 0 logs and saves, so only it watches for NaN/Inf
                    saver.guard.observe(state.step, logs)
                    _log_and_save(state.step, logs, measure(state.step), log, progress, progress_keys, config,
                                  saver)
                    on_step(state.step, log)
                if slow_step(state.step):
                    wait_for_main(world)
    finally:
        progress.close()
        if log is not None:
            log.close()
    if not world.is_main:
        return checkpoints.checkpoint_path(run_dir, state.step)
    return saver.last or checkpoints.resolve_checkpoint(run_dir)


class _Saver:
    """Writes the run's checkpoints, never one of non-finite weights, and knows the last one written."""

    def __init__(self, state: Any, config: AnyConfig, run_dir: Path):
        self.state, self.config, self.run_dir = state, config, run_dir
        self.guard = _NonFiniteGuard()
        self.last = (checkpoints.checkpoint_path(run_dir, state.step) if checkpoints.checkpoint_dirs(run_dir)
                     else None)

    def last_good(self) -> str:
        return _last_good(self.last, self.run_dir)

    def check_finite(self) -> None:
        problem = self.guard.check()
        if problem and self.config.train.stop_on_nonfinite:
            raise TrainingFailed(f"{problem}; no checkpoint was written of these weights. "
                                 f"{self.last_good()} Lower the learning rates, or "
                                 "--set train.stop_on_nonfinite=false to train on regardless")
        if problem:
            tqdm.write(f"warning: {problem} (train.stop_on_nonfinite=false: training goes on)")
            self.guard.reset()

    def save(self) -> Path:
        self.check_finite()
        self.last = checkpoints.save_checkpoint(self.run_dir, self.state, self.config, self.config.train.keep_last)
        return self.last

    def save_unless_saved(self, world: World) -> None:
        """The iterations done so far are whole: keep them (rank 0)."""
        if world.is_main and self.last != checkpoints.checkpoint_path(self.run_dir, self.state.step):
            self.save()


def _next_batch(batch_iter: Iterator[dict[str, torch.Tensor]], device: torch.device, saver: _Saver,
                world: World) -> dict[str, torch.Tensor]:
    try:
        return {k: v.to(device, non_blocking=True) for k, v in next(batch_iter).items()}
    except Exception as err:
        saver.save_unless_saved(world)
        raise TrainingFailed(f"loading the batch of iteration {saver.state.step + 1} failed "
                             f"({type(err).__name__}: {err}); {saver.last_good()}") from err


def _one_iteration(state: Any, step_fn: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
                   batch: dict[str, torch.Tensor], saver: _Saver) -> dict[str, torch.Tensor]:
    try:
        return step_fn(batch)
    except Exception as err:
        raise TrainingFailed(f"iteration {state.step + 1} failed ({type(err).__name__}: {err}); "
                             "no checkpoint was written (the networks may be half-updated). "
                             f"{saver.last_good()}") from err


def _log_and_save(step: int, logs: dict[str, torch.Tensor], measured: dict[str, float], log: ScalarLog,
                  progress: tqdm, progress_keys: dict[str, str], config: AnyConfig, saver: _Saver) -> None:
    total, train_cfg = config.train.total_iters, config.train
    if step % train_cfg.log_every == 0 or step == total:
        saver.check_finite()
        scalars = {k: float(v) for k, v in logs.items()}
        log.write(step, {**scalars, **measured})
        progress.set_postfix({short: f"{scalars[k]:.3f}" for k, short in progress_keys.items()
                              if k in scalars}, refresh=False)
    elif measured:
        log.write(step, measured)
    if step % train_cfg.save_every == 0 or step == total:
        saver.save()


def _last_good(last_ckpt: Path | None, run_dir: Path) -> str:
    if last_ckpt is None:
        return f"There is no checkpoint yet; `stargan train --resume {run_dir}` starts the run again."
    return f"The last good checkpoint is {last_ckpt}; continue with `stargan train --resume {run_dir}`."
