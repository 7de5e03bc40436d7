"""The graph of an exported StarGAN v1 generator, G(x, c), and its label vectors c, with numpy.

c is ``stargan.data.v1.condition_vector``: the attributes an output should have (multi-hot, CelebA
models) or a one-hot domain; a model trained on two datasets (``label_sizes`` (c_dim, c2_dim)) takes
``[c_0, c_1, mask]`` with zeros for the other dataset and ``mask`` one-hot of the dataset used.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from .manifest import Manifest
from .sessions import run


class Graphs:
    """The v1 generator of one export."""

    def __init__(self, folder: Path, manifest: Manifest, open_session: Callable[[Path], Any]):
        self.manifest = manifest
        self.generator = open_session(folder / manifest.graphs["generator"].file)

    def label_vector(self, domain: str | None = None, attributes: Sequence[str] | None = None) -> np.ndarray:
        """G's [label_dim] float32 input: a target ``domain``, or the ``attributes`` the output has."""
        m = self.manifest
        if (domain is None) == (attributes is None):
            raise ValueError("give exactly one of domain (a domain model) or attributes (a CelebA model)")
        if attributes is not None:
            if not m.attributes:
                raise ValueError(f"this model translates between domains ({', '.join(m.domains)}), "
                                 "not attributes; pass domain=")
            unknown = [a for a in attributes if a not in m.attributes]
            if unknown:
                raise ValueError(f"unknown attributes {unknown}; this model knows {', '.join(m.attributes)}")
            dataset, own = 0, np.array([a in attributes for a in m.attributes], dtype=np.float32)
        else:
            if domain not in m.domains:
                kind = f"valid domains: {', '.join(m.domains)}" if m.domains else "it has attributes, pass attributes="
                raise ValueError(f"unknown domain {domain!r}; {kind}")
            dataset = len(m.label_sizes) - 1  # the domains are the last (folder) dataset's labels
            own = np.eye(m.label_sizes[dataset], dtype=np.float32)[m.domains.index(domain)]
        if len(m.label_sizes) == 1:
            return own
        parts = [own if k == dataset else np.zeros(n, np.float32) for k, n in enumerate(m.label_sizes)]
        return np.concatenate(parts + [np.eye(len(m.label_sizes), dtype=np.float32)[dataset]])

    def translate(self, x: np.ndarray, c: np.ndarray) -> np.ndarray:
        """Images ``x`` [B, 3, S, S] in [-1, 1] with labels ``c`` [B, label_dim] -> [B, 3, S, S]."""
        graph = self.manifest.graphs["generator"]
        (out,) = run(self.generator, graph.inputs, graph.outputs, x, c.astype(np.float32))
        return out
