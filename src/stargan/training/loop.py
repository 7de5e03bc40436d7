"""The StarGAN v2 training loop: data, progress bar, scalars, sample grids and checkpoints around
:func:`stargan.training.step.train_step`."""
from __future__ import annotations

import dataclasses
import json
import re
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from stargan import checkpoints, sampling
from stargan.config import AnyConfig, Config
from stargan.data import TrainBatches, fixed_batch, open_dataset, train_loader
from stargan.distributed import World, device_for
from stargan.nets.v2 import build_networks
from stargan.training.step import TrainState, make_train_state, train_step

PROGRESS_KEYS = {"D/latent_real": "D_real", "D/latent_fake": "D_fake", "G/latent_adv": "G_adv",
                 "G/latent_sty": "sty", "G/latent_ds": "ds", "G/latent_cyc": "cyc"}


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


def resolve_data(config: Config) -> tuple[Config, object, object]:
    """Scan and check the dataset; return the config with the domain names and count filled in."""
    if not config.data.root:
        raise ValueError("no dataset given: pass --data DIR (a folder with train/<domain>/ and "
                         "val/<domain>/) or set data.root")
    train_set, val_set = open_dataset(config.data.root, skip_bad_images=config.data.skip_bad_images)
    if config.data.domains and tuple(config.data.domains) != tuple(train_set.domains):
        raise ValueError(f"the run expects domains {list(config.data.domains)} but {config.data.root} "
                         f"has {list(train_set.domains)}")
    resolved = dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, domains=tuple(train_set.domains)),
        model=dataclasses.replace(config.model, num_domains=len(train_set.domains)))
    return resolved, train_set, val_set


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


def write_samples(state: TrainState, config: Config, val_batch: tuple[torch.Tensor, torch.Tensor],
                  out_dir: Path) -> list[Path]:
    """Cycle, latent-guided and reference-guided grids from the EMA networks on a fixed batch."""
    grids = sampling.sample_grids(state.ema, *val_batch, num_images=config.train.num_samples,
                                  num_styles=4, psi=config.train.psi, seed=config.train.seed)
    prefix = out_dir / f"{state.step:06d}"
    return [sampling.save_grid(grid, f"{prefix}_{kind}.png") for kind, grid in grids.items()]


def resume_and_record(state: Any, config: AnyConfig, run_dir: Path, resume: bool, world: World) -> None:
    """Load the run's last checkpoint into ``state`` when resuming; write the resolved config.yaml."""
    if resume:
        ckpt = checkpoints.restore_train_state(run_dir, state, config)
        if world.is_main:
            tqdm.write(f"resumed from {ckpt} at step {state.step}")
    if world.is_main:
        config.save_yaml(run_dir / "config.yaml")


def evaluate_and_log(state: TrainState, config: Config, run_dir: Path, log: ScalarLog,
                     show_progress: bool) -> Path:
    """The StarGAN v2 metrics of the EMA networks, as ``metrics/step-NNNNNN.json`` and scalars."""
    from stargan.metrics.evaluate import evaluate_networks, headline, write_results

    summary = evaluate_networks(state.ema, config, config.eval, seed=config.train.seed, progress=show_progress)
    log.write(state.step, {f"eval/{key}": value for key, value in headline(summary).items()})
    return write_results(summary, run_dir, state.step)


def train(config: Config, run_dir: Path, resume: bool = False, show_progress: bool = True,
          world: World = World()) -> Path:
    """Train (or continue training) the run in ``run_dir``; returns the last checkpoint.

    With several processes (``world``), each trains on its own batches and rank 0 alone writes.
    """
    config, train_set, val_set = resolve_data(config)
    device = resolve_device(device_for(world, config.train.device))
    if config.eval.every > 0 and world.is_main:
        from stargan.metrics.evaluate import preflight

        preflight(config.eval, domains=config.data.domains)
    if world.is_main:
        run_dir.mkdir(parents=True, exist_ok=True)
    if config.model.w_hpf > 0 and world.is_main:
        warnings.warn(f"model.w_hpf={config.model.w_hpf}: no face landmark model is available, so the "
                      "high-pass masks are off (the generator keeps its w_hpf architecture)", stacklevel=2)

    torch.manual_seed(config.train.seed)
    state = make_train_state(build_networks(config.model).to(device), config.optim, world.world_size)
    resume_and_record(state, config, run_dir, resume, world)

    batches = TrainBatches(train_set, config.model.img_size, config.data.batch_size,
                           config.model.latent_dim, config.train.seed, config.data.crop_prob, world.rank)
    per_domain = -(-config.train.num_samples // len(val_set.domains))  # ceil: every domain shown
    val_batch = (fixed_batch(val_set, config.model.img_size, per_domain, seed=config.train.seed)
                 if world.is_main else None)

    def on_step(step: int, log: ScalarLog) -> None:
        if step % config.train.sample_every == 0 or step == config.train.total_iters:
            write_samples(state, config, val_batch, run_dir / "samples")
        if config.eval.every > 0 and (step % config.eval.every == 0 or step == config.train.total_iters):
            tqdm.write(f"metrics: {evaluate_and_log(state, config, run_dir, log, show_progress)}")

    return run_loop(state, config, run_dir, train_loader(batches, state.step, config.data.num_workers),
                    step_fn=lambda batch: train_step(state, batch, config.loss, config.optim.ema_beta),
                    on_step=on_step, progress_keys=PROGRESS_KEYS, device=device, world=world,
                    show_progress=show_progress)


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
