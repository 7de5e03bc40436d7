"""A loopback HTTP server for the tests of fetching released files (tests/test_hub.py, test_download.py):
serves bytes by path, with Range support; can drop a connection or ignore Range."""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import http.server
import io
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from stargan import hub
from stargan.hub import ReleasedFile


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


@contextlib.contextmanager
def serving() -> Iterator[Files]:
    """A running :class:`Files` server, shut down on exit."""
    files = Files()
    thread = threading.Thread(target=files.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield files
    finally:
        files.shutdown()
        files.server_close()


def served(server: Files, file: ReleasedFile, body: bytes, pin: bool = True) -> ReleasedFile:
    """``file`` served by ``server`` with contents ``body``, pinned to its SHA-256 (or unpinned)."""
    server.files[file.filename] = body
    return dataclasses.replace(file, url=server.url(file.filename),
                               sha256=hashlib.sha256(body).hexdigest() if pin else None)


def fake_weights(size: int = 300_000) -> bytes:
    """A torch.save file of about ``size`` bytes."""
    buffer = io.BytesIO()
    torch.save({"weight": torch.arange(size // 4, dtype=torch.float32)}, buffer)
    return buffer.getvalue()


@pytest.fixture
def server() -> Iterator[Files]:
    """A loopback server for the test (import this fixture into a test module to use it)."""
    with serving() as files:
        yield files


@pytest.fixture
def online(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Downloads allowed, into a torch.hub folder of the test's own, with a short timeout."""
    monkeypatch.delenv(hub.OFFLINE_ENV, raising=False)
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))  # torch.hub's folder, per test
    monkeypatch.setattr(hub, "TIMEOUT_S", 5)
