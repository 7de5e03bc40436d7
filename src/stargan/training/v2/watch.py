"""Watching, while training, for a generator that ignores its input.

A G that draws its target from the style alone (every source gives one picture per latent code or
reference) scores well on a classifier and on FID; only the grids show it, or ``source_kept``
(:mod:`stargan.metrics.diversity`: how much of the differences between its inputs the translations
keep, 1 all of them, 0 none). At every sample step the loop measures it on the fixed validation batch
with the EMA networks (latent-guided, one set of latent codes for the whole run, averaged over the
target domains) and logs it as ``val/source_kept``. When it stays below ``THRESHOLD`` past
``watch_from(total_iters)`` iterations, one warning says so and what to try.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from stargan.config import Config
from stargan.imaging import eval_mode
from stargan.metrics.diversity import source_kept
from stargan.nets.v2 import MaskFn, Networks
from stargan.sampling.v2 import masks_of

THRESHOLD = 0.2    # healthy runs keep 0.5 or more (cpu-small: 0.53-0.55 on Fashion-MNIST shoes after 4,000
                   # iterations); one whose G drew from the style alone sat at 0.13-0.18 from iteration 2,000
WATCH_FROM = 1000  # iterations, or a quarter of a shorter run: before that a low value may still rise
KEY = "val/source_kept"


def watch_from(total_iters: int) -> int:
    """The first iteration at which a low ``source_kept`` is taken as a verdict."""
    return min(WATCH_FROM, total_iters // 4)


@torch.no_grad()
def batch_source_kept(nets: Networks, x: torch.Tensor, y: torch.Tensor, seed: int,
                      mask_fn: MaskFn | None = None) -> float | None:
    """``source_kept`` of ``nets`` on the batch ``x`` (labels ``y``), latent-guided: for each domain, the
    images of the other domains translated into it (skipped when fewer than two), averaged; None when
    no domain has two. The codes are drawn from ``seed`` alone (the global RNG does not move), so that
    successive calls on one batch can be compared."""
    values = []
    with eval_mode(nets):
        for trg in range(len(nets.mapping_network.unshared)):
            sources = x[y != trg].to(next(nets.generator.parameters()).device)
            if sources.size(0) >= 2:
                values.append(source_kept(nets, sources, trg, "latent", [], sources.size(-1),
                                          torch.Generator().manual_seed(seed + trg), masks_of(mask_fn, sources)))
    return sum(values) / len(values) if values else None


@dataclass
class InputWatch:
    """Warns once when ``source_kept`` has been below ``threshold`` at two sample steps in a row, the
    later one at ``from_step`` or after."""

    from_step: int
    threshold: float = THRESHOLD
    low_since: int | None = None
    lows: int = 0
    warned: bool = False

    def observe(self, step: int, value: float) -> bool:
        """Record the value measured at ``step``; True the one time the run should be warned."""
        if not math.isfinite(value):  # non-finite losses have their own error
            return False
        if value >= self.threshold:
            self.low_since, self.lows = None, 0
            return False
        if self.low_since is None:
            self.low_since = step
        self.lows += 1
        if self.warned or self.lows < 2 or step < self.from_step:
            return False
        self.warned = True
        return True


def warning_text(value: float, step: int, low_since: int, threshold: float, config: Config,
                 bottleneck_downsamples: int) -> str:
    """What the warning says: what was seen, what it means, what to try (settings named with their values)."""
    model, loss = config.model, config.loss
    side = model.img_size // 2 ** bottleneck_downsamples
    smaller = (f"a smaller style in a new run, --set model.style_dim={max(1, model.style_dim // 4)} (now "
               f"{model.style_dim}: a style with room for the whole picture lets G draw from it alone); "
               if model.style_dim > 1 else "")
    wider = (f"a wider bottleneck in a new run, --set model.g_downsamples={bottleneck_downsamples - 1} "
             f"(G now goes down to {side}x{side}; {2 * side}x{2 * side} keeps more of the source); "
             if bottleneck_downsamples > 1 else "")
    style = ("; for domains that differ in rendering, not in shape (the same pictures in other styles), "
             "the preset cpu-style, or U-Net skips and an identity loss in a new run, --set model.g_skips=true "
             f"--set loss.lambda_id=1 (now {loss.lambda_id:g})"
             if not model.g_skips and model.w_hpf == 0 else "")
    return (f"warning: the generator ignores its input: {KEY} has been below {threshold} since iteration "
            f"{low_since} ({value:.3f} at {step}; 1 = the outputs differ as much as their sources, 0 = every "
            "source gives one and the same picture for one style). Its translations follow the style (latent "
            f"code or reference) alone, which classifier accuracy and FID do not show. Try {smaller}{wider}"
            f"and weaker style and diversity losses, loss.lambda_sty (now {loss.lambda_sty:g}) and "
            f"loss.lambda_ds (now {loss.lambda_ds:g}), which can change on --resume; a stronger cycle loss "
            f"(loss.lambda_cyc, now {loss.lambda_cyc:g}) does not help while the style can carry the picture"
            f"{style}. See README: Training on few images / on a CPU")
