"""Dataset folders that stargan writes itself (the demo shapes, Fashion-MNIST, font styles, icon themes).

``OUT/.complete`` holds the settings as JSON and is written last, so a folder with the same settings
is reused as it is and an interrupted one (its in-progress marker still there) is written again. A
folder with train/ or val/ but neither marker belongs to someone else and is never overwritten.
"""
from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path

from stargan.data.folders import DataError

COMPLETE = ".complete"


def holds(out: Path, settings: dict) -> bool:
    """Whether ``out`` was completely written with these ``settings``."""
    try:
        return json.loads((out / COMPLETE).read_text()) == settings
    except (OSError, ValueError):
        return False


def refuse_foreign(out: Path, splits: Sequence[str], in_progress: str, message: str) -> None:
    """Raise ``DataError(message)`` when ``out`` has one of ``splits`` but no marker of ours."""
    ours = (out / COMPLETE).exists() or (out / in_progress).exists()
    if not ours and any((out / split).exists() for split in splits):
        raise DataError(message)


@contextlib.contextmanager
def writing(out: Path, settings: dict, in_progress: str) -> Iterator[None]:
    """Mark ``out`` as being written; on success, record ``settings`` in ``.complete`` atomically."""
    out.mkdir(parents=True, exist_ok=True)
    (out / in_progress).touch()
    (out / COMPLETE).unlink(missing_ok=True)
    yield
    tmp = out / (COMPLETE + ".tmp")
    tmp.write_text(json.dumps(settings, indent=1))
    os.replace(tmp, out / COMPLETE)
    (out / in_progress).unlink()
