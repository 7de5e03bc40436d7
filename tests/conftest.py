"""One torch thread for the test suite: its networks are tiny, and on a shared 2-core machine two
threads competing with other work make them many times slower (results do not depend on it). The
commands the tests start in new processes get one thread too (OMP_NUM_THREADS), so they do not look
for busy cores (stargan.threads) either.

And no test downloads: missing weight files stay missing (tests of downloading unset this and
serve files from a loopback server). Also the stand-ins for the StarGAN v2 release's face files
(random FAN weights, made-up mean landmarks), so that the face path runs without them.

And the demo data of the tiny runs (tests/tiny.py), made once per session."""
import os

import numpy as np
import pytest
import torch

from tests.release_fixtures import mean_face, random_fan
from tests.tiny import make_demo

torch.set_num_threads(1)
os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ["STARGAN_OFFLINE"] = "1"


@pytest.fixture
def face_files(tmp_path, monkeypatch):
    """torch.hub's checkpoint folder (in tmp) holding a random ``wing.ckpt`` in the release's format
    and a made-up ``celeba_lm_mean.npz``; returns the folder."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save({"state_dict": random_fan().state_dict()}, folder / "wing.ckpt")
    np.savez(folder / "celeba_lm_mean.npz", mean=mean_face())
    return folder


@pytest.fixture
def no_face_files(tmp_path, monkeypatch):
    """An empty torch.hub folder: the release's face files are missing."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))
    return tmp_path / "empty-hub" / "checkpoints"


@pytest.fixture(scope="session")
def demo_data(tmp_path_factory):
    """``tiny.make_demo``: the demo shapes at 16 px, 4 training and 2 validation images per domain. Read
    only: a test that changes images works on a copy."""
    return make_demo(tmp_path_factory.mktemp("demo"))
