"""The StarGAN v1 training loop: data, progress bar, scalars, test grids and checkpoints around
:func:`stargan.training.step_v1.train_step_v1`.

Works in one process or, like the v2 loop, in several under ``torchrun`` (each process draws its own
batches, gradients are averaged, rank 0 alone writes).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from stargan import sampling_v1
from stargan.config import V1Config
from stargan.data import train_loader
from stargan.data.v1 import V1Batches, V1Data, open_v1_data
from stargan.distributed import World, device_for
from stargan.nets.v1 import build_v1_networks
from stargan.state import make_v1_train_state
from stargan.training.runner import (ScalarLog, check_run_dir, resolve_device, resume_and_record, run_loop,
                                     training_run)
from stargan.training.step_v1 import train_step_v1

PROGRESS_KEYS = {"D/real": "D_real", "D/fake": "D_fake", "D/cls": "D_cls", "D/gp": "gp",
                 "G/fake": "G_fake", "G/cls": "G_cls", "G/rec": "rec"}


def resolve_v1_data(config: V1Config, progress: bool = True) -> tuple[V1Config, V1Data]:
    """Open and check the datasets; return the config with the folder domain names filled in."""
    data = open_v1_data(config.data, config.model, progress=progress)
    folders = [images for images in data.train if not images.multi_label]
    if folders:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, domains=folders[0].names))
    return config, data


def train_v1(config: V1Config, run_dir: Path, resume: bool = False, show_progress: bool = True,
             world: World = World()) -> Path:
    """Train (or continue training) the StarGAN v1 run in ``run_dir``; returns the last checkpoint."""
    v2_only = {"precision": "fp32", "channels_last": False, "compile": False, "augment": "none"}
    used = [f"train.{k}={getattr(config.train, k)}" for k, plain in v2_only.items()
            if getattr(config.train, k) not in (plain, "auto")]
    if used:
        raise ValueError(f"{', '.join(used)}: StarGAN v2 only; StarGAN v1 trains in fp32 on the images as "
                         "they are (remove those --set options)")
    # auto means the fastest exact-enough setting; for v1 that is fp32, contiguous, eager: recorded so
    config = dataclasses.replace(config, train=dataclasses.replace(
        config.train, **{k: plain for k, plain in v2_only.items() if k != "augment"}))
    check_run_dir(run_dir, config, resume)
    config, data = resolve_v1_data(config, progress=show_progress)
    device = resolve_device(device_for(world, config.train.device))
    with training_run(run_dir, world):
        return _train_v1(config, data, run_dir, resume, device, show_progress, world)


def _train_v1(config: V1Config, data: V1Data, run_dir: Path, resume: bool, device: torch.device,
              show_progress: bool, world: World) -> Path:
    torch.manual_seed(config.train.seed)
    state = make_v1_train_state(build_v1_networks(config.model).to(device), config.optim, world.world_size)
    resume_and_record(state, config, run_dir, resume, world)

    batches = V1Batches(data, config.model.img_size, config.data.batch_size, config.train.seed,
                        config.data.crop_sizes, config.data.flip, world.rank)
    test_batches = (sampling_v1.fixed_test_batches(config, data.test, config.train.num_samples,
                                                   seed=config.train.seed) if world.is_main else None)

    def on_step(step: int, log: ScalarLog) -> None:
        if step % config.train.sample_every == 0 or step == config.train.total_iters:
            sampling_v1.write_test_grids(state.nets.generator, config, test_batches, data.test,
                                         run_dir / "samples", prefix=f"{step:06d}_")

    return run_loop(state, config, run_dir, train_loader(batches, state.step, config.data.num_workers),
                    step_fn=lambda batch: train_step_v1(state, batch, config), on_step=on_step,
                    progress_keys=PROGRESS_KEYS, device=device, world=world, show_progress=show_progress)
