"""A tiny trained run (16 px, two iterations, demo shapes) shared by the serve tests."""
from __future__ import annotations

from pathlib import Path

import pytest

from stargan.cli import main
from stargan.data.demo import make_demo_dataset

TINY = ["--set", "model.img_size=16", "--set", "model.latent_dim=4", "--set", "model.style_dim=8",
        "--set", "model.hidden_dim=16", "--set", "model.max_conv_dim=16", "--set", "model.base_dim=8",
        "--set", "data.batch_size=2", "--set", "data.num_workers=0", "--set", "train.total_iters=2",
        "--set", "train.sample_every=2", "--set", "train.save_every=2",
        "--set", "train.num_samples=3"]


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("serve")
    data = make_demo_dataset(root / "data", img_size=16, train_per_domain=4, val_per_domain=2)
    run = root / "runs" / "tiny"
    assert main(["train", "--preset", "demo", "--data", str(data), "--run-dir", str(run), "--no-progress",
                 *TINY]) == 0
    return run
