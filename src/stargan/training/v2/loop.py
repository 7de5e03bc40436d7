"""The StarGAN v2 training loop: data, progress bar, scalars, sample grids and checkpoints around
:func:`stargan.training.v2.step.train_step`."""
from __future__ import annotations

import dataclasses
import itertools
import warnings
from collections.abc import Iterator
from pathlib import Path

import torch
from tqdm import tqdm

from stargan.sampling import v2 as sampling
from stargan.config import Config
from stargan.data import ImageFolder, TrainBatches, fixed_batch, open_dataset, train_loader
from stargan.distributed import World, broadcast, device_for
from stargan.faces.masks import load_mask_fn, opt_out_note
from stargan.imaging import save_grid
from stargan.nets.v2 import MaskFn, build_networks
from stargan.state import TrainState, make_train_state
from stargan.training.v2.augment import make_augment
from stargan.training.v2.finetune import InitFrom, describe, load_parent, with_init
from stargan.training.v2.probe import resolve_speed
from stargan.training.runner import (ScalarLog, check_run_dir, resolve_device, resume_and_record, run_loop,
                                     training_run)
from stargan.training.v2.speed import Speed, make_speed, prepare_networks, verify_compiled
from stargan.training.v2.step import ema_beta_at, train_step
from stargan.training.v2.watch import KEY, InputWatch, batch_source_kept, warning_text, watch_from

PROGRESS_KEYS = {"D/latent_real": "D_real", "D/latent_fake": "D_fake", "G/latent_adv": "G_adv",
                 "G/latent_sty": "sty", "G/latent_ds": "ds", "G/latent_cyc": "cyc"}


def resolve_data(config: Config, progress: bool = True) -> tuple[Config, ImageFolder, ImageFolder]:
    """Scan and check the dataset; return the config with the domain names and count filled in."""
    if not config.data.root:
        raise ValueError("no dataset given: pass --data DIR (a folder with train/<domain>/ and "
                         "val/<domain>/) or set data.root")
    train_set, val_set = open_dataset(config.data.root, skip_bad_images=config.data.skip_bad_images,
                                      progress=progress)
    if config.data.domains and tuple(config.data.domains) != tuple(train_set.domains):
        raise ValueError(f"the run expects domains {list(config.data.domains)} but {config.data.root} "
                         f"has {list(train_set.domains)}")
    resolved = dataclasses.replace(
        config,
        data=dataclasses.replace(config.data, domains=tuple(train_set.domains)),
        model=dataclasses.replace(config.model, num_domains=len(train_set.domains)))
    return resolved, train_set, val_set


def write_samples(state: TrainState, config: Config, val_batch: tuple[torch.Tensor, torch.Tensor],
                  out_dir: Path, mask_fn: MaskFn | None = None) -> list[Path]:
    """Cycle, latent-guided and reference-guided grids from the EMA networks on a fixed batch."""
    grids = sampling.sample_grids(state.ema, *val_batch, num_images=config.train.num_samples,
                                  num_styles=4, psi=config.train.psi, seed=config.train.seed,
                                     mask_fn=mask_fn)
    prefix = out_dir / f"{state.step:06d}"
    return [save_grid(grid, f"{prefix}_{kind}.png") for kind, grid in grids.items()]


def watch_input_use(state: TrainState, config: Config, val_batch: tuple[torch.Tensor, torch.Tensor],
                    watch: InputWatch, mask_fn: MaskFn | None = None) -> dict[str, float]:
    """``val/source_kept`` of the EMA networks on the fixed batch (to log); warns once if G ignores its input."""
    kept = batch_source_kept(state.ema, *val_batch, seed=config.train.seed, mask_fn=mask_fn)
    if kept is None:
        return {}
    if watch.observe(state.step, kept):
        tqdm.write(warning_text(kept, state.step, watch.low_since, watch.threshold, config,
                                state.ema.generator.num_downsamples))
    return {KEY: kept}


def evaluate_and_log(state: TrainState, config: Config, run_dir: Path, log: ScalarLog,
                     show_progress: bool, mask_fn: MaskFn | None = None) -> Path:
    """The StarGAN v2 metrics of the EMA networks, as ``metrics/step-NNNNNN.json`` and scalars."""
    from stargan.metrics.evaluate import evaluate_networks, headline, write_results

    summary = evaluate_networks(state.ema, config, config.eval, seed=config.train.seed, progress=show_progress,
                                mask_fn=mask_fn)
    log.write(state.step, {f"eval/{key}": value for key, value in headline(summary).items()})
    return write_results(summary, run_dir, state.step)


def train(config: Config, run_dir: Path, resume: bool = False, show_progress: bool = True,
          world: World = World(), init_from: InitFrom | None = None) -> Path:
    """Train (or continue training) the run in ``run_dir``; returns the last checkpoint.

    With several processes (``world``), each trains on its own batches and rank 0 alone writes.
    A model with w_hpf > 0 needs the FAN weights for its face masks (or ``model.masks: false``).
    ``init_from``: a new run starts from a trained model (see :mod:`stargan.training.v2.finetune`).
    """
    if init_from is not None and resume:
        raise ValueError("a run resumes from its own checkpoints; --init-from starts a new run")
    check_run_dir(run_dir, config, resume)
    config, train_set, val_set = resolve_data(config, progress=show_progress)
    if init_from is not None:
        config = with_init(config, init_from)  # --init-domain errors stop here, before any file
        if world.is_main:
            print(describe(init_from, config.init), flush=True)
    device = resolve_device(device_for(world, config.train.device))
    mask_fn = load_mask_fn(config.model, device, run=run_dir)  # a missing wing.ckpt stops here
    if opt_out_note(config.model) and world.is_main:
        print(opt_out_note(config.model))
    config = choose_speed(config, device, world)
    if config.eval.every > 0 and world.is_main:
        from stargan.metrics.evaluate import preflight

        preflight(config.eval, domains=config.data.domains)
    with training_run(run_dir, world):
        return _train(config, train_set, val_set, run_dir, resume, device, show_progress, world, mask_fn,
                      init_from)


def choose_speed(config: Config, device: torch.device, world: World) -> Config:
    """``config`` with its ``auto`` speed settings resolved for this machine (rank 0 decides, saying
    how; see :mod:`stargan.training.v2.probe`); the resolved values are what config.yaml records."""
    if world.is_main:
        config, lines, warns = resolve_speed(config, device)
        for line in lines:
            print(line, flush=True)
        for text in warns:
            warnings.warn(text, stacklevel=2)
    return broadcast(config, world)


def check_compiled(state: TrainState, speed: Speed, batch: dict[str, torch.Tensor], mask_fn: MaskFn | None,
                   world: World) -> bool:
    """Compare the compiled passes with eager on the first batch, before any optimizer step; on any
    failure the run goes on eagerly (one warning naming the passes). Returns whether it passed."""
    failed = verify_compiled(state.nets, speed, batch, mask_fn)
    if failed:
        speed.compiled = {}
        if world.is_main:
            warnings.warn("train.compile: " + "; ".join(f"the compiled {name} {why}" for name, why in
                                                        failed.items()) + "; training continues eagerly",
                          stacklevel=2)
    return not failed


def _train(config: Config, train_set: ImageFolder, val_set: ImageFolder, run_dir: Path, resume: bool,
           device: torch.device, show_progress: bool, world: World, mask_fn: MaskFn | None,
           init_from: InitFrom | None) -> Path:
    state = _new_state(config, device, world, init_from)
    resume_and_record(state, config, run_dir, resume, world)
    speed = make_speed(config.train.precision, device, config.train.shared_passes, config.train.channels_last)
    prepare_networks(state.nets, speed, compile_nets=config.train.compile)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True  # fixed image and batch sizes: pick the fastest kernels once

    batches = TrainBatches(train_set, config.model.img_size, config.data.batch_size,
                           config.model.latent_dim, config.train.seed, config.data.crop_prob, world.rank)
    per_domain = -(-config.train.num_samples // len(val_set.domains))  # ceil: every domain shown
    val_batch = (fixed_batch(val_set, config.model.img_size, per_domain, seed=config.train.seed)
                 if world.is_main else None)

    watch = InputWatch(from_step=watch_from(config.train.total_iters))

    def evaluates_at(step: int) -> bool:
        return config.eval.every > 0 and (step % config.eval.every == 0 or step == config.train.total_iters)

    def samples_at(step: int) -> bool:
        return step % config.train.sample_every == 0 or step == config.train.total_iters

    def measure(step: int) -> dict[str, float]:  # logged with the step's losses, before its checkpoint
        return watch_input_use(state, config, val_batch, watch, mask_fn) if samples_at(step) else {}

    def on_step(step: int, log: ScalarLog) -> None:
        if samples_at(step):
            write_samples(state, config, val_batch, run_dir / "samples", mask_fn)
        if evaluates_at(step):
            tqdm.write(f"metrics: {evaluate_and_log(state, config, run_dir, log, show_progress, mask_fn)}")

    loader = train_loader(batches, state.step, config.data.num_workers)
    if speed.compiled:
        config, loader = _checked_compile(state, speed, config, loader, run_dir, device, world, mask_fn)
    return run_loop(state, config, run_dir, loader,
                    step_fn=lambda batch: train_step(state, batch, config.loss,
                                                     ema_beta_at(state.step, config.optim),
                                                     mask_fn=mask_fn, speed=speed),
                    on_step=on_step, progress_keys=PROGRESS_KEYS, device=device, world=world,
                    show_progress=show_progress, slow_step=evaluates_at, measure=measure)


def _new_state(config: Config, device: torch.device, world: World, init_from: InitFrom | None = None
               ) -> TrainState:
    """Networks drawn from ``train.seed`` (then the parent's weights, for a run started from a trained
    model), their optimizers and moving averages, and D's augmentation."""
    torch.manual_seed(config.train.seed)
    state = make_train_state(build_networks(config.model).to(device), config.optim, world.world_size,
                             fused=device.type == "cuda" and config.train.precision == "fp16")
    if init_from is not None:
        load_parent(state, init_from, config)
    t = config.train
    state.augment = make_augment(t.augment, t.ada_target, t.ada_kimg, t.ada_interval, config.data.batch_size,
                                 device, seed=t.seed + world.rank)  # own draws per process
    return state


def _checked_compile(state: TrainState, speed: Speed, config: Config, loader: Iterator, run_dir: Path,
                     device: torch.device, world: World, mask_fn: MaskFn | None) -> tuple[Config, Iterator]:
    """Check the compiled passes on the first batch (:func:`check_compiled`); when they fail, the run goes
    on eagerly and says so in config.yaml (and so in its checkpoints). The batch is still trained on."""
    first = next(loader)
    if not check_compiled(state, speed, {k: v.to(device) for k, v in first.items()}, mask_fn, world):
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, compile=False))
        if world.is_main:
            config.save_yaml(run_dir / "config.yaml")
    return config, itertools.chain([first], loader)
