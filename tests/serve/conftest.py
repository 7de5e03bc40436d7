"""A tiny trained run (16 px, two iterations, demo shapes) shared by the serve tests."""
from __future__ import annotations

from pathlib import Path

import pytest

from stargan.cli import main
from tests import tiny


@pytest.fixture(scope="session")
def tiny_run(demo_data: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    run = tmp_path_factory.mktemp("serve") / "runs" / "tiny"
    assert main(["train", "--preset", "demo", "--data", str(demo_data), "--run-dir", str(run), "--no-progress",
                 *tiny.as_cli_flags(tiny.V2 + ["train.total_iters=2"])]) == 0
    return run
