"""`stargan download` against a loopback HTTP server: fixture files in the releases' formats, written
from our own networks; the catalog's URLs are pointed at the server."""
from __future__ import annotations

import dataclasses
import hashlib
import http.server
import io
import socket
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from stargan import download
from stargan.api import Translator
from stargan.checkpoints import load_v1_for_sampling
from stargan.cli import main
from stargan.config import ModelConfig, V1ModelConfig
from stargan.download import CATALOG, DownloadError, RemoteFile, Release, fetch
from stargan.metrics import weights
from stargan.nets.v1 import build_v1_networks
from stargan.nets.v2 import build_networks


class Files(http.server.ThreadingHTTPServer):
    """Serves ``files`` (path -> bytes) with Range support; can drop a connection or ignore Range."""

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), Handler)
        self.files: dict[str, bytes] = {}
        self.requests: list[tuple[str, str | None]] = []  # (path, Range header)
        self.drop_after: dict[str, int] = {}  # path -> bytes sent before the first response is cut
        self.ignore_range = False
        self.lock = threading.Lock()

    def url(self, name: str) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}/{name}"


class Handler(http.server.BaseHTTPRequestHandler):
    server: Files

    def do_GET(self) -> None:  # noqa: N802 (http.server's name)
        path = self.path.lstrip("/")
        with self.server.lock:
            self.server.requests.append((path, self.headers.get("Range")))
            drop = self.server.drop_after.pop(path, None)
        body = self.server.files.get(path)
        if body is None:
            self.send_error(404, "Not Found")
            return
        start = 0
        if self.headers.get("Range") and not self.server.ignore_range:
            start = int(self.headers["Range"].split("=")[1].split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload = body[start:] if drop is None else body[start:start + drop]
        self.wfile.write(payload)
        if drop is not None:
            self.close_connection = True

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server() -> Iterator[Files]:
    files = Files()
    thread = threading.Thread(target=files.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield files
    files.shutdown()
    files.server_close()


@pytest.fixture(autouse=True)
def online(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("STARGAN_OFFLINE", raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # torch.hub's folder, per test
    monkeypatch.setattr(download, "TIMEOUT_S", 5)


def serve_as(monkeypatch: pytest.MonkeyPatch, server: Files, name: str, contents: list[bytes],
             pin: bool = True) -> None:
    """Point catalog entry ``name`` at ``server``, serving ``contents`` (one per file of the entry)."""
    entry = CATALOG[name]
    files = []
    for remote, body in zip(entry.files, contents):
        server.files[remote.filename] = body
        digest = hashlib.sha256(body).hexdigest() if pin else None
        files.append(dataclasses.replace(remote, url=server.url(remote.filename), sha256=digest))
    monkeypatch.setitem(CATALOG, name, dataclasses.replace(entry, files=tuple(files)))


def fake_weights(size: int = 300_000) -> bytes:
    buffer = io.BytesIO()
    torch.save({"weight": torch.arange(size // 4, dtype=torch.float32)}, buffer)
    return buffer.getvalue()


def remote(server: Files, body: bytes, name: str = "w.pth", pin: bool = True) -> RemoteFile:
    server.files[name] = body
    return RemoteFile(name, server.url(name), hashlib.sha256(body).hexdigest() if pin else None)


# ------------------------------------------------------------------------------------------------ one file

def test_download_with_progress_and_hash(server: Files, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    body = fake_weights()
    path = fetch(remote(server, body), tmp_path / "w")
    assert path.read_bytes() == body
    assert sorted(p.name for p in path.parent.iterdir()) == ["w.pth", "w.pth.lock"]  # no .part left
    assert "w.pth: 100%" in capsys.readouterr().err  # the tqdm bar
    fetch(remote(server, body), tmp_path / "w")  # verified copy present: no second request
    assert len(server.requests) == 1


def test_resume_after_a_dropped_connection(server: Files, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    body = fake_weights()
    server.drop_after["w.pth"] = 100_000
    path = fetch(remote(server, body), tmp_path)
    assert path.read_bytes() == body
    assert server.requests == [("w.pth", None), ("w.pth", "bytes=100000-")]
    assert "connection lost after 100,000 bytes" in capsys.readouterr().out


def test_resume_a_part_left_by_an_earlier_run(server: Files, tmp_path: Path) -> None:
    body = fake_weights()
    (tmp_path / "w.pth.part").write_bytes(body[:123_456])
    assert fetch(remote(server, body), tmp_path).read_bytes() == body
    assert server.requests == [("w.pth", "bytes=123456-")]


def test_a_server_ignoring_range_restarts_from_zero(server: Files, tmp_path: Path) -> None:
    body = fake_weights()
    server.ignore_range = True
    (tmp_path / "w.pth.part").write_bytes(body[:1000])
    assert fetch(remote(server, body), tmp_path).read_bytes() == body


def test_wrong_hash_deletes_the_file(server: Files, tmp_path: Path) -> None:
    spec = dataclasses.replace(remote(server, fake_weights()), sha256="0" * 64)
    with pytest.raises(DownloadError, match="wrong SHA-256 .*the download was deleted"):
        fetch(spec, tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pth.lock"]


def test_unpinned_file_is_checked_by_structure_and_its_hash_printed(server: Files, tmp_path: Path,
                                                                    capsys: pytest.CaptureFixture) -> None:
    body = fake_weights()
    fetch(remote(server, body, pin=False), tmp_path)
    assert f"w.pth: sha256 {hashlib.sha256(body).hexdigest()}" in capsys.readouterr().out
    page = remote(server, b"<!DOCTYPE html><html>Sign in to Dropbox</html>", name="page.ckpt", pin=False)
    with pytest.raises(DownloadError, match=r"not a torch checkpoint \(it looks like a web page\).*was deleted"):
        fetch(page, tmp_path)
    assert not (tmp_path / "page.ckpt").exists() and not (tmp_path / "page.ckpt.part").exists()


def test_404_is_a_clear_error(server: Files, tmp_path: Path) -> None:
    missing = RemoteFile("gone.pth", server.url("gone.pth"), None)
    with pytest.raises(DownloadError, match="answered HTTP 404 .*get gone.pth by hand"):
        fetch(missing, tmp_path)
    assert len(server.requests) == 1  # not retried


def test_concurrent_downloads_of_one_file_fetch_it_once(server: Files, tmp_path: Path) -> None:
    body = fake_weights(2_000_000)
    spec = remote(server, body)
    results: list[Path | BaseException] = []

    def run() -> None:
        try:
            results.append(fetch(spec, tmp_path, progress=False))
        except BaseException as error:  # reported below
            results.append(error)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert results == [tmp_path / "w.pth"] * 3
    assert (tmp_path / "w.pth").read_bytes() == body and len(server.requests) == 1


# ------------------------------------------------------------------------------------------------ offline, first use

def test_offline_mode_names_the_download_command(server: Files, monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path) -> None:
    monkeypatch.setenv("STARGAN_OFFLINE", "1")
    with pytest.raises(DownloadError, match="STARGAN_OFFLINE is set .*`stargan download alexnet`"):
        fetch(remote(server, b"x"), tmp_path, name="alexnet")
    with pytest.raises(weights.WeightsError, match="`stargan download alexnet`"):
        weights.resolve_weights("alexnet")
    assert server.requests == []
    (tmp_path / "w.pth").write_bytes(b"x")  # already there: offline is no obstacle
    assert fetch(remote(server, b"x"), tmp_path) == tmp_path / "w.pth"


def test_metric_weights_are_fetched_on_first_use(server: Files, monkeypatch: pytest.MonkeyPatch,
                                                 capsys: pytest.CaptureFixture) -> None:
    body = fake_weights()
    serve_as(monkeypatch, server, "alexnet", [body])
    monkeypatch.setitem(weights.REGISTRY, "alexnet", dataclasses.replace(
        weights.REGISTRY["alexnet"], sha256=hashlib.sha256(body).hexdigest()))
    found = weights.resolve_weights("alexnet")
    assert found.path == weights.hub_dir() / "alexnet-owt-7be5be79.pth" and found.path.read_bytes() == body
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
    assert all(p.parent == weights.hub_dir() for p in paths)
    assert np.load(paths[1])["mean"].shape == (98, 2)


def test_unknown_name() -> None:
    with pytest.raises(ValueError, match="unknown download 'imagenet'; known: celeba_hq, afhq"):
        download.release("imagenet")


def test_release_entries_are_complete() -> None:
    for name, entry in CATALOG.items():
        assert isinstance(entry, Release) and entry.files and entry.licence and entry.source, name
    assert CATALOG["celeba_hq"].also == ("wing",)
    assert {"celeba_hq", "afhq", "wing", "inception-tf", "inception-torchvision", "alexnet", "celeba128",
            "celeba256"} <= set(CATALOG)


def test_no_server_gives_up_after_retries(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(DownloadError, match="failed after 2 attempts.*get the file by hand"):
        fetch(RemoteFile("w.pth", f"http://127.0.0.1:{port}/w.pth", None), tmp_path, retries=1)


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
