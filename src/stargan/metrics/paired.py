"""How near translations come to the true translation, on validation data paired by name
(:mod:`stargan.data.pairs`): a measure of content kept that needs no classifier.

An input s of domain a, translated into b with a reference of b, should become s's namesake t in b.
The reference is never t itself (those outputs are left out): a generator that copied its reference
instead of translating its input would then look perfect. Per reference-guided task:

- ``paired_l1``: the mean absolute pixel difference between the outputs and t (images in [-1, 1], the
  outputs rounded to 8 bits as for ``pairwise_l1``); 0 for the perfect translation;
- ``paired_l1_identity``: the same for the unchanged source, |s - t|: the score of a translator that
  does nothing. A model whose outputs are further from t than this keeps less of the picture than it
  gains in style (or follows its reference);
- ``paired_lpips`` and ``paired_lpips_identity``: the same distances in LPIPS, when its weights are there.

Not in the paper. Latent-guided outputs are not scored: their styles are random draws, not t's.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor


class PairedDistances:
    """Accumulates the distances of one task's outputs (and of its inputs) to the true translations."""

    def __init__(self, lpips: torch.nn.Module | None = None):
        self.lpips = lpips
        self.l1: list[Tensor] = []
        self.identity_l1: list[Tensor] = []
        self.lpips_values: list[Tensor] = []
        self.identity_lpips: list[Tensor] = []

    def add(self, images: Tensor, x: Tensor, truth: Tensor, scored: Tensor) -> None:
        """``images`` [K, N, 3, S, S]: K outputs of each of the N inputs ``x``, whose true translations are
        ``truth`` [N, 3, S, S]; ``scored`` [K, N] bool: False where the output's reference was its
        input's namesake."""
        k = images.size(0)
        truth = truth.to(images.device)
        self.l1.append((images - truth).abs().flatten(2).mean(2)[scored.to(images.device)].float().cpu())
        self.identity_l1.append((x - truth).abs().flatten(1).mean(1).float().cpu())
        if self.lpips is not None:
            chosen = scored.to(images.device)
            targets = truth.unsqueeze(0).expand(k, *truth.shape)
            self.lpips_values.append(self.lpips.distance(images[chosen], targets[chosen]).cpu())
            self.identity_lpips.append(self.lpips.distance(x, truth).cpu())

    def result(self) -> dict[str, float]:
        """The means, leaving out a measure that saw no output."""
        measures = {"paired_l1": self.l1, "paired_l1_identity": self.identity_l1,
                    "paired_lpips": self.lpips_values, "paired_lpips_identity": self.identity_lpips}
        joined = {key: torch.cat(values) for key, values in measures.items() if values}
        return {key: float(values.double().mean()) for key, values in joined.items() if values.numel()}


def paired_note(summary: dict[str, Any]) -> str | None:
    """One sentence on the reference-guided outputs' distance to the true translations, when scored."""
    mean = summary.get("reference", {}).get("mean", {})
    if "paired_l1" not in mean:
        return None
    verdict = ("nearer than the unchanged sources" if mean["paired_l1"] < mean["paired_l1_identity"]
               else "no nearer than the unchanged sources: G keeps too little of its input, or follows its reference")
    return (f"paired by name: reference-guided outputs are {mean['paired_l1']:.4f} from the true translation "
            f"(mean L1, images in [-1, 1]), the unchanged sources {mean['paired_l1_identity']:.4f}: {verdict}")
