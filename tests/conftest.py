"""One torch thread for the test suite: its networks are tiny, and on a shared 2-core machine two
threads competing with other work make them many times slower (results do not depend on it).

And no test downloads: missing weight files stay missing (tests of downloading unset this and
serve files from a loopback server). Also the stand-ins for the StarGAN v2 release's face files
(random FAN weights, made-up mean landmarks), so that the face path runs without them."""
import os

import numpy as np
import pytest
import torch

torch.set_num_threads(1)
os.environ["STARGAN_OFFLINE"] = "1"


def random_fan(seed: int = 0):
    """A FAN with random weights and BatchNorm statistics (so every layer matters), in eval mode."""
    from stargan.faces import FAN

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        fan = FAN()
        with torch.no_grad():
            for name, tensor in fan.state_dict().items():
                if name.endswith("running_var"):
                    tensor.uniform_(0.5, 2.0)
                elif name.endswith(("running_mean", "bias")):
                    tensor.normal_(0, 0.1)
    return fan


@pytest.fixture
def face_files(tmp_path, monkeypatch):
    """torch.hub's checkpoint folder (in tmp) holding a random ``wing.ckpt`` in the release's format
    and a made-up ``celeba_lm_mean.npz``; returns the folder."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    folder = tmp_path / "hub" / "checkpoints"
    folder.mkdir(parents=True)
    torch.save({"state_dict": random_fan().state_dict()}, folder / "wing.ckpt")
    mean = np.random.default_rng(0).uniform(80, 176, (98, 2)).astype(np.float32)
    np.savez(folder / "celeba_lm_mean.npz", mean=mean)
    return folder


@pytest.fixture
def no_face_files(tmp_path, monkeypatch):
    """An empty torch.hub folder: the release's face files are missing."""
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "empty-hub"))
    return tmp_path / "empty-hub" / "checkpoints"
