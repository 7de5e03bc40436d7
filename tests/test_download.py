"""`stargan download` against a loopback HTTP server: fixture files in the releases' formats, written
from our own networks; the releases' URLs are pointed at the server. (Fetching one file: tests/test_hub.py.)"""
from __future__ import annotations

import dataclasses
import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stargan import download, hub
from stargan.api import Translator
from stargan.checkpoints import load_v1_for_sampling
from stargan.cli import main
from stargan.config import ModelConfig, V1ModelConfig
from stargan.hub import RELEASES
from stargan.metrics import weights
from stargan.nets.v1 import build_networks as build_v1_networks
from stargan.nets.v2 import build_networks
from tests.loopback import Files, fake_weights, online, server, served, serving  # noqa: F401 (fixtures)


@pytest.fixture(autouse=True)
def _online(online) -> None:
    """Every test here may fetch (see tests.loopback.online)."""


def serve_as(monkeypatch: pytest.MonkeyPatch, server: Files, name: str, contents: list[bytes],
             pin: bool = True) -> None:
    """Point release ``name`` at ``server``, serving ``contents`` (one per file of the release)."""
    entry = RELEASES[name]
    files = tuple(served(server, file, body, pin) for file, body in zip(entry.files, contents))
    monkeypatch.setitem(RELEASES, name, dataclasses.replace(entry, files=files))


# ------------------------------------------------------------------------------------------------ first use, the command

def test_metric_weights_are_fetched_on_first_use(server: Files, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    body = fake_weights()
    monkeypatch.setitem(weights.REGISTRY, "alexnet", served(server, weights.REGISTRY["alexnet"], body))
    found = weights.resolve_weights("alexnet")
    assert found.path == hub.hub_dir() / "alexnet-owt-7be5be79.pth" and found.path.read_bytes() == body
    assert "downloading it once from http://127.0.0.1" in capsys.readouterr().out
    weights.resolve_weights("alexnet")
    assert len(server.requests) == 1


def test_cli_list_and_offline_flag(server: Files, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
                                   capsys: pytest.CaptureFixture) -> None:
    assert main(["download", "--list"]) == 0
    listing = capsys.readouterr().out
    assert "celeba_hq" in listing and "CC BY-NC 4.0" in listing and "alexnet-owt-7be5be79.pth" in listing
    serve_as(monkeypatch, server, "alexnet", [fake_weights()])
    monkeypatch.setenv("STARGAN_OFFLINE", "0")  # restored after the test; --offline sets it to 1
    assert main(["download", "alexnet", "--offline", "--dir", str(tmp_path)]) == 2
    assert "`stargan download alexnet`" in capsys.readouterr().err and server.requests == []


# ------------------------------------------------------------------------------------------------ models

def official_v2_bytes() -> bytes:
    """A StarGAN v2 release file (dict of EMA state dicts), 256 px and 3 domains but narrow."""
    model = ModelConfig(img_size=256, num_domains=3, latent_dim=4, style_dim=8, hidden_dim=16,
                        max_conv_dim=64, w_hpf=0)
    torch.manual_seed(0)
    nets = build_networks(model, with_discriminator=False)
    buffer = io.BytesIO()
    torch.save({name: net.state_dict() for name, net in nets.items()}, buffer)
    return buffer.getvalue()


def official_v1_zip() -> bytes:
    """The StarGAN v1 release zip: 200000-G.ckpt and 200000-D.ckpt (bare state dicts)."""
    torch.manual_seed(0)
    nets = build_v1_networks(V1ModelConfig(img_size=32, c_dim=5, g_conv_dim=8, d_conv_dim=8, g_repeat_num=1,
                                           d_repeat_num=3))
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as zf:
        for role, net in (("G", nets.generator), ("D", nets.discriminator)):
            member = io.BytesIO()
            torch.save(net.state_dict(), member)
            zf.writestr(f"stargan_celeba_128/models/200000-{role}.ckpt", member.getvalue())
    return buffer.getvalue()


@pytest.mark.slow
def test_download_import_and_translate_a_v2_release(server: Files, monkeypatch: pytest.MonkeyPatch,
                                                    tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    serve_as(monkeypatch, server, "afhq", [official_v2_bytes()], pin=False)
    runs = tmp_path / "runs"
    assert main(["download", "afhq", "--dir", str(tmp_path / "w"), "--runs", str(runs), "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.count("licence CC BY-NC 4.0") == 1 and f"stargan serve {runs / 'afhq-official'}" in out
    assert (runs / "afhq-official" / "config.yaml").read_text().startswith("# licence: CC BY-NC 4.0")
    translator = Translator.load(runs / "afhq-official")
    assert translator.domains == ("cat", "dog", "wild")
    image = translator.translate(Image.new("RGB", (64, 48), "gray"), "dog", seed=0)[0]
    assert image.size == (256, 256)
    # Again: nothing downloaded, nothing imported twice.
    assert main(["download", "afhq", "--dir", str(tmp_path / "w"), "--runs", str(runs), "--no-progress"]) == 0
    assert len(server.requests) == 1 and "not imported again" in capsys.readouterr().out


def test_download_and_import_a_v1_release(server: Files, monkeypatch: pytest.MonkeyPatch,
                                          tmp_path: Path) -> None:
    serve_as(monkeypatch, server, "celeba128", [official_v1_zip()], pin=False)
    made = download.download("celeba128", tmp_path / "w", tmp_path / "runs", progress=False)
    assert made[-1] == tmp_path / "runs" / "celeba128-official"
    config, generator = load_v1_for_sampling(made[-1])
    assert config.model.img_size == 32 and config.data.attrs[3] == "Male"
    assert sorted(p.name for p in (tmp_path / "w" / "stargan-v1-celeba-128x128-5attrs").iterdir()) == \
        ["200000-D.ckpt", "200000-G.ckpt"]


def test_wing_brings_both_files(server: Files, monkeypatch: pytest.MonkeyPatch) -> None:
    mean = io.BytesIO()
    np.savez(mean, mean=np.zeros((98, 2), dtype=np.float32))
    serve_as(monkeypatch, server, "wing", [fake_weights(), mean.getvalue()], pin=False)
    paths = download.files_of("wing", progress=False)
    assert [p.name for p in paths] == ["wing.ckpt", "celeba_lm_mean.npz"]
    assert all(p.parent == hub.hub_dir() for p in paths)
    assert np.load(paths[1])["mean"].shape == (98, 2)


def test_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown download 'imagenet'; known: celeba_hq, afhq"):
        download.release("imagenet")


def test_a_dataset_is_unpacked_into_domain_folders(server: Files, monkeypatch: pytest.MonkeyPatch,
                                                   tmp_path: Path) -> None:
    buffer = io.BytesIO()
    png = io.BytesIO()
    Image.new("RGB", (8, 8), "red").save(png, format="PNG")
    with zipfile.ZipFile(buffer, "w") as zf:
        for member in ("afhq/train/cat/a.png", "afhq/train/dog/b.PNG", "afhq/val/wild/c.png",
                       "afhq/train/cat/notes.txt", "__MACOSX/afhq/train/cat/._a.png", "../val/cat/evil.png",
                       "afhq/train/../../val/x.png", "afhq/val/../d.png"):
            zf.writestr(member, png.getvalue())
    serve_as(monkeypatch, server, "afhq-data", [buffer.getvalue()], pin=False)
    made = download.download("afhq-data", tmp_path / "w", data=tmp_path / "data", progress=False)
    out = tmp_path / "data" / "afhq"
    assert made[-1] == out
    written = sorted(str(p.relative_to(out)) for p in out.rglob("*") if p.is_file() and p.name != ".complete")
    # "../val/cat/evil.png" is written as val/cat/evil.png inside out: only the last three names count
    assert written == ["train/cat/a.png", "train/dog/b.PNG", "val/cat/evil.png", "val/wild/c.png"]
    assert not (tmp_path / "data" / "val").exists() and not (tmp_path / "val").exists()
    download.download("afhq-data", tmp_path / "w", data=tmp_path / "data", progress=False)  # reused
    assert len(server.requests) == 1
