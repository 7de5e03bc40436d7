"""Released files (stargan.hub): the records, verification, and fetching against a loopback HTTP server
(progress, resume, hashes, lock, the offline switch)."""
from __future__ import annotations

import ast
import dataclasses
import hashlib
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from stargan import hub
from stargan.hub import RELEASES, DownloadError, Release, ReleasedFile, fetch, verify
from tests.loopback import Files, fake_weights, online, server, serving  # noqa: F401 (fixtures)


@pytest.fixture(autouse=True)
def _online(online) -> None:
    """Every test here may fetch (see tests.loopback.online)."""


def remote(server: Files, body: bytes, name: str = "w.pth", pin: bool = True) -> ReleasedFile:
    server.files[name] = body
    return ReleasedFile(name, server.url(name), hashlib.sha256(body).hexdigest() if pin else None,
                        about="a test file", licence="none")


# ------------------------------------------------------------------------------------------------ records

def test_release_entries_are_complete() -> None:
    for name, entry in RELEASES.items():
        assert isinstance(entry, Release) and entry.files and entry.licence and entry.source, name
        assert {file.licence for file in entry.files} == {entry.licence}, name  # one licence per release
        for file in entry.files:
            assert file.filename and file.url.startswith("https://") and file.about and file.licence, name
            assert file.kind in ("torch", "zip", "npz"), name
    assert RELEASES["celeba_hq"].also == ("wing",)
    assert {"celeba_hq", "afhq", "wing", "inception-tf", "inception-torchvision", "alexnet", "celeba128",
            "celeba256"} <= set(RELEASES)


def test_each_file_is_recorded_once() -> None:
    files = [file for entry in RELEASES.values() for file in entry.files]
    assert len({f.filename for f in files}) == len({f.url for f in files}) == len(files)
    assert RELEASES["wing"].files == (hub.FAN_WEIGHTS, hub.MEAN_LANDMARKS)
    assert hub.released_file("wing.ckpt") is hub.FAN_WEIGHTS
    assert hub.released_file("stargan-v2-afhq-100000_nets_ema.ckpt").licence.startswith("CC BY-NC 4.0")
    assert hub.released_file("100000_nets_ema.ckpt") is None


def test_what_a_file_must_hash_to() -> None:
    assert hub.INCEPTION_TORCHVISION.pinned == "0cc3c7bd"  # the name's prefix, torch.hub's convention
    assert hub.ALEXNET.pinned == hub.ALEXNET.sha256 and hub.ALEXNET.prefix == "7be5be79"
    for name in ("celeba128", "afhq-data", "afhq", "wing"):  # names with dashes but no hash: unpublished
        assert all(file.pinned == "" for file in RELEASES[name].files), name
    assert hub.FAN_WEIGHTS.path() == hub.hub_dir() / "wing.ckpt"
    assert hub.FAN_WEIGHTS.path("elsewhere") == Path("elsewhere/wing.ckpt")


def test_verify_by_hash_or_by_format(tmp_path: Path) -> None:
    path = tmp_path / "w.pth"
    path.write_bytes(fake_weights(1000))
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    file = ReleasedFile("w.pth", "https://example.org/w.pth", digest, about="a test file", licence="none")
    assert verify(path, file) == digest
    assert verify(path, dataclasses.replace(file, filename=f"w-{digest[:8]}.pth", sha256=None)) == digest
    assert verify(path, dataclasses.replace(file, sha256=None)) == digest  # a zip: torch.save's format
    with pytest.raises(DownloadError, match=f"wrong SHA-256 {digest} .*source https://example.org/w.pth"):
        verify(path, dataclasses.replace(file, sha256="0" * 64))
    path.write_bytes(b"\x93NUMPY")
    with pytest.raises(DownloadError, match=r"w.pth is not a numpy .npz file; check https://example.org"):
        verify(path, dataclasses.replace(file, sha256=None, kind="npz"))


def test_hub_imports_nothing_else_of_stargan() -> None:
    tree = ast.parse(Path(hub.__file__).read_text())
    imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
    imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom) and node.module}
    assert not {name for name in imported if name.split(".")[0] == "stargan"}


def test_the_modules_below_the_command_do_not_import_it() -> None:
    code = ("import sys, stargan.metrics.weights, stargan.faces.weights, stargan.official, stargan.serve.model; "
            "print('stargan.download' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


# ------------------------------------------------------------------------------------------------ one file

def test_download_with_progress_and_hash(server: Files, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    body = fake_weights()
    path = fetch(remote(server, body), tmp_path / "w")
    assert path.read_bytes() == body
    assert sorted(p.name for p in path.parent.iterdir()) == ["w.pth", "w.pth.lock"]  # no .part left
    assert "w.pth: 100%" in capsys.readouterr().err  # the tqdm bar
    fetch(remote(server, body), tmp_path / "w")  # verified copy present: no second request
    assert len(server.requests) == 1


def test_the_hub_folder_is_the_default(server: Files) -> None:
    path = fetch(remote(server, fake_weights()), progress=False)
    assert path == hub.hub_dir() / "w.pth" and path.is_file()


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


def test_a_damaged_copy_in_place_is_downloaded_again(server: Files, tmp_path: Path,
                                                     capsys: pytest.CaptureFixture) -> None:
    body = fake_weights()
    (tmp_path / "w.pth").write_bytes(body[:-1])
    assert fetch(remote(server, body), tmp_path, progress=False).read_bytes() == body
    assert "exists but w.pth: wrong SHA-256" in capsys.readouterr().out and len(server.requests) == 1


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
    missing = ReleasedFile("gone.pth", server.url("gone.pth"), None, about="a test file", licence="none")
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


def test_no_server_gives_up_after_retries(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    file = ReleasedFile("w.pth", f"http://127.0.0.1:{port}/w.pth", None, about="a test file", licence="none")
    with pytest.raises(DownloadError, match="failed after 2 attempts.*get the file by hand"):
        fetch(file, tmp_path, retries=1)


# ------------------------------------------------------------------------------------------------ offline

@pytest.mark.parametrize("value", ["1", "true", "yes"])
def test_offline_mode_names_the_download_command(server: Files, monkeypatch: pytest.MonkeyPatch,
                                                 tmp_path: Path, value: str) -> None:
    monkeypatch.setenv(hub.OFFLINE_ENV, value)
    assert hub.is_offline()
    with pytest.raises(DownloadError, match=f"STARGAN_OFFLINE is set .*`stargan download alexnet`.*{tmp_path}"):
        fetch(remote(server, b"x"), tmp_path, name="alexnet")
    assert server.requests == []
    (tmp_path / "w.pth").write_bytes(b"x")  # already there: offline is no obstacle
    assert fetch(remote(server, b"x"), tmp_path) == tmp_path / "w.pth"
    with pytest.raises(DownloadError, match="wrong SHA-256"):  # but it is still verified
        fetch(remote(server, b"y"), tmp_path)
    assert server.requests == []


@pytest.mark.parametrize("value", ["", "0", "false", "No"])
def test_online_values_of_the_switch(monkeypatch: pytest.MonkeyPatch, value: str) -> None:
    monkeypatch.setenv(hub.OFFLINE_ENV, value)
    assert not hub.is_offline()
