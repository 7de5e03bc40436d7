"""The StarGAN v1 training loop: data, progress bar, scalars, test grids and checkpoints around
:func:`stargan.training.v1.step.train_step`.

Works in one process or, like the v2 loop, in several under ``torchrun`` (each process draws its own
batches, gradients are averaged, rank 0 alone writes).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from stargan.sampling import v1 as sampling
from stargan.config import V1Config
from stargan.data import train_loader
from stargan.data.v1 import Batches, Data, open_data
from stargan.distributed import World, device_for
from stargan.nets.v1 import build_networks
from stargan.state import make_v1_train_state
from stargan.training.runner import (ScalarLog, check_run_dir, resolve_device, resume_and_record, run_loop,
                                     training_run)
from stargan.training.v1.step import train_step

PROGRESS_KEYS = {"D/real": "D_real", "D/fake": "D_fake", "D/cls": "D_cls", "D/gp": "gp",
                 "G/fake": "G_fake", "G/cls": "G_cls", "G/rec": "rec"}


def resolve_data(config: V1Config, progress: bool = True) -> tuple[V1Config, Data]:
    """Open and check the datasets; return the config with the folder domain names filled in."""
    data = open_data(config.data, config.model, progress=progress)
    folders = [images for images in data.train if not images.multi_label]
    if folders:
        config = dataclasses.replace(config, data=dataclasses.replace(config.data, domains=folders[0].names))
    return config, data


def train(config: V1Config, run_dir: Path, resume: bool = False, show_progress: bool = True,
          world: World = World()) -> Path:
    """Train (or continue training) the StarGAN v1 run in ``run_dir``; returns the last checkpoint."""
    check_run_dir(run_dir, config, resume)
    config, data = resolve_data(config, progress=show_progress)
    device = resolve_device(device_for(world, config.train.device))
    with training_run(run_dir, world):
        return _train(config, data, run_dir, resume, device, show_progress, world)


def _train(config: V1Config, data: Data, run_dir: Path, resume: bool, device: torch.device,
           show_progress: bool, world: World) -> Path:
    torch.manual_seed(config.train.seed)
    state = make_v1_train_state(build_networks(config.model).to(device), config.optim, world.world_size)
    resume_and_record(state, config, run_dir, resume, world)

    batches = Batches(data, config.model.img_size, config.data.batch_size, config.train.seed,
                      config.data.crop_sizes, config.data.flip, world.rank)
    test_batches = (sampling.fixed_test_batches(config, data.test, config.train.num_samples,
                                                seed=config.train.seed) if world.is_main else None)

    def on_step(step: int, log: ScalarLog) -> None:
        if step % config.train.sample_every == 0 or step == config.train.total_iters:
            sampling.write_test_grids(state.nets.generator, config, test_batches, data.test,
                                      run_dir / "samples", prefix=f"{step:06d}_")

    return run_loop(state, config, run_dir, train_loader(batches, state.step, config.data.num_workers),
                    step_fn=lambda batch: train_step(state, batch, config), on_step=on_step,
                    progress_keys=PROGRESS_KEYS, device=device, world=world, show_progress=show_progress)
