"""The state-dict key lists of the released checkpoints (tests/reference/*.tsv), read by one reader.

The files are copies of the project's ``shared/reference/`` (tests/test_reference_keys.py checks them
against it when it is beside the clone). Their format: ``## title`` starts a section (one released
configuration; a file without one is a single section titled ""), ``# name: N tensors, P parameters``
gives the counts of the network whose rows follow, and each row is ``net<TAB>key<TAB>(shape)``; other
``#`` lines and blank lines are comments.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

REFERENCE_DIR = Path(__file__).resolve().parent / "reference"
SHARED_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference"
KEY_FILES = ("fan_wing_state_dict_keys.tsv", "stargan_v1_official_state_dict_keys.tsv",
             "starganv2_official_state_dict_keys.tsv")
COUNTS = re.compile(r"# [^:]+: (\d+) tensors, (\d+) parameters")


@dataclass
class NetKeys:
    """One network of a released checkpoint: its keys and shapes in file order, and the stated counts."""

    keys: dict[str, tuple[int, ...]] = field(default_factory=dict)
    tensors: int | None = None
    params: int | None = None


def read_key_file(name: str) -> dict[str, dict[str, NetKeys]]:
    """``{section title: {net: NetKeys}}`` of ``tests/reference/<name>``, sections and nets in file order."""
    sections: dict[str, dict[str, NetKeys]] = {}
    current: dict[str, NetKeys] | None = None
    counts: tuple[int, int] | None = None
    for number, line in enumerate((REFERENCE_DIR / name).read_text().splitlines(), 1):
        if not line.strip():
            continue
        if line.startswith("## "):
            current = sections.setdefault(line[3:].strip(), {})
        elif line.startswith("#"):
            m = COUNTS.match(line)
            counts = (int(m.group(1)), int(m.group(2))) if m else counts
        else:
            net, key, shape = line.split("\t")
            if current is None:
                current = sections.setdefault("", {})
            if net not in current:
                current[net] = NetKeys()
                if counts is not None:
                    current[net].tensors, current[net].params = counts
                    counts = None
            if key in current[net].keys:
                raise ValueError(f"{name}:{number}: {net} {key} listed twice")
            current[net].keys[key] = tuple(int(d) for d in re.findall(r"\d+", shape))
    return sections
