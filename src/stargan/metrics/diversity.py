"""Pixel measures of a translator's outputs, beside the paper's: ``pairwise_l1`` (how different one
input's outputs are) and ``source_kept`` (how much of the inputs' differences the outputs keep). They
need no weight file; :mod:`stargan.metrics.evaluate` reports both per task."""
from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from stargan.data import eval_images
from stargan.nets.v2 import Masks, Networks
from stargan.sampling.v2 import latent_dim_of


def mean_pairwise_l1(outs: Tensor) -> Tensor:
    """[N]: for each input, the mean absolute pixel difference (images in [-1, 1]) over the pairs of its
    num_outs outputs ``outs`` [num_outs, N, 3, S, S]. A diversity measure that needs no weights; 0 when
    the style is ignored (mode collapse)."""
    k = outs.size(0)
    pairs = [(outs[i] - outs[j]).abs().flatten(1).mean(1) for i in range(k) for j in range(i + 1, k)]
    return torch.stack(pairs).mean(0).float().cpu()


SOURCE_KEPT_STYLES = 4


@torch.no_grad()
def source_kept(nets: Networks, x: Tensor, trg: int, mode: str, refs: list[Path], img_size: int,
                generator: torch.Generator, masks: Masks, num_styles: int = SOURCE_KEPT_STYLES) -> float:
    """How much of the inputs' differences the translations keep, for ``x`` [N >= 2, 3, S, S].

    With each of ``num_styles`` styles (latent codes through F, or references through E) shared by all
    inputs: the mean pairwise L1 between the N outputs over the mean pairwise L1 between the N inputs,
    averaged over the styles. 1 when outputs differ as much as their sources do, 0 when G ignores its
    input and draws the target from the style alone (the classifier's accuracy is then perfect).
    ``generator`` is the measure's own: the protocol's draws do not move.
    """
    n, device = x.size(0), x.device
    if n < 2:
        raise ValueError("source_kept needs at least two inputs")
    y = torch.full((num_styles,), trg, dtype=torch.long, device=device)
    if mode == "latent":
        z = torch.randn(num_styles, latent_dim_of(nets), generator=generator)
        styles = nets.mapping_network(z.to(device), y)
    else:
        picks = torch.randperm(len(refs), generator=generator)[:num_styles]
        y = y[:len(picks)]
        styles = nets.style_encoder(eval_images([refs[k] for k in picks.tolist()], img_size).to(device), y)
    features = nets.generator.encode_image(x, masks)
    spread_in = mean_pairwise_l1(x.unsqueeze(1))
    outs = [nets.generator.decode_from(features, s.expand(n, -1), masks) for s in styles]
    return float(torch.stack([mean_pairwise_l1(o.unsqueeze(1)) for o in outs]).mean() / spread_in)
