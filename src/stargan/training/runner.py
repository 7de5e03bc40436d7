"""The training machinery shared by StarGAN v1 and v2: devices, run directories, the scalar log, resuming,
and :func:`run_loop`, which iterates a step function with progress bar, logging and checkpoints."""
from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from stargan import checkpoints
from stargan.config import AnyConfig
from stargan.distributed import World


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError(f"train.device={name!r} but CUDA is not available; use train.device=cpu")
    return torch.device(name)


def new_run_dir(root: str | Path, name: str) -> Path:
    """``root/NNNNN-name``, numbered after the highest existing run (created by :func:`train`)."""
    root = Path(root)
    numbers = [int(m.group(1)) for p in root.glob("*") if (m := re.match(r"^(\d+)-", p.name))]
    return root / f"{max(numbers, default=-1) + 1:05d}-{name or 'run'}"


class ScalarLog:
    """Scalars to ``logs/scalars.jsonl`` and TensorBoard (``logs/``)."""

    def __init__(self, log_dir: Path):
        from torch.utils.tensorboard import SummaryWriter

        log_dir.mkdir(parents=True, exist_ok=True)
        self.jsonl = open(log_dir / "scalars.jsonl", "a")
        self.tensorboard = SummaryWriter(str(log_dir))

    def write(self, step: int, scalars: dict[str, float]) -> None:
        self.jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        self.jsonl.flush()
        for key, value in scalars.items():
            self.tensorboard.add_scalar(key, value, step)

    def close(self) -> None:
        self.jsonl.close()
        self.tensorboard.close()


def resume_and_record(state: Any, config: AnyConfig, run_dir: Path, resume: bool, world: World) -> None:
    """Load the run's last checkpoint into ``state`` when resuming; write the resolved config.yaml."""
    if resume:
        ckpt = checkpoints.restore_train_state(run_dir, state, config)
        if world.is_main:
            tqdm.write(f"resumed from {ckpt} at step {state.step}")
    if world.is_main:
        config.save_yaml(run_dir / "config.yaml")


def run_loop(state: Any, config: AnyConfig, run_dir: Path, batch_iter: Iterator[dict[str, torch.Tensor]],
             step_fn: Callable[[dict[str, torch.Tensor]], dict[str, torch.Tensor]],
             on_step: Callable[[int, ScalarLog], None], progress_keys: dict[str, str],
             device: torch.device, world: World, show_progress: bool) -> Path:
    """Iterate ``step_fn`` until ``train.total_iters``; log, checkpoint, and call ``on_step`` (samples,
    metrics) on rank 0. Ctrl-C saves a checkpoint to resume from. Shared by StarGAN v2 and v1."""
    log = ScalarLog(run_dir / "logs") if world.is_main else None
    total = config.train.total_iters
    last_ckpt = None
    progress = tqdm(total=total, initial=state.step, desc="train", unit="it", dynamic_ncols=True,
                    disable=not (show_progress and world.is_main))
    try:
        while state.step < total:
            batch = {k: v.to(device, non_blocking=True) for k, v in next(batch_iter).items()}
            logs = step_fn(batch)
            progress.update(1)
            step = state.step
            if not world.is_main:
                continue
            if step % config.train.log_every == 0 or step == total:
                scalars = {k: float(v) for k, v in logs.items()}
                log.write(step, scalars)
                progress.set_postfix({short: f"{scalars[k]:.3f}" for k, short in progress_keys.items()
                                      if k in scalars}, refresh=False)
            if step % config.train.save_every == 0 or step == total:
                last_ckpt = checkpoints.save_checkpoint(run_dir, state, config, config.train.keep_last)
            on_step(step, log)
    except KeyboardInterrupt:
        if world.is_main and last_ckpt != checkpoints.checkpoint_path(run_dir, state.step):
            saved = checkpoints.save_checkpoint(run_dir, state, config, config.train.keep_last)
            tqdm.write(f"interrupted: saved {saved}; continue with --resume {run_dir}")
        raise
    finally:
        progress.close()
        if log is not None:
            log.close()
    if not world.is_main:
        return checkpoints.checkpoint_path(run_dir, state.step)
    return last_ckpt or checkpoints.resolve_checkpoint(run_dir)
