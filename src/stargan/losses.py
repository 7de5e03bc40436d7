"""Loss terms, named as in the papers. Pure functions of tensors.

StarGAN v2 (Choi et al., 2020), Section 2 / Eq. 1-5:
    L_adv  = E[log D_y(x)] + E[log(1 - D_y~(G(x, s~)))]   (non-saturating, BCE on logits)
    R1     = gamma/2 * E[||grad_x D_y(x)||^2]              (real images only)
    L_sty  = E[|s~ - E_y~(G(x, s~))|]
    L_ds   = E[|G(x, s1) - G(x, s2)|]                     (maximised by G)
    L_cyc  = E[|x - G(G(x, s~), E_y(x))|]
Not in StarGAN v2, off in the paper's presets (``loss.lambda_id``): the identity loss of CycleGAN
(Zhu et al., 2017, Section 5.2), which keeps a translation's colours where domains differ in style:
    L_id   = E[|x - G(x, s)|]                             (s a style of x's own domain)

StarGAN v1 (Choi et al., 2018), Section 3 / Eq. 1-4, with the WGAN-GP objective of Section 5.2:
    L_adv  = E[D_src(x)] - E[D_src(G(x, c))] - lambda_gp * E[(||grad D_src(x^)||_2 - 1)^2]
    L_cls  = E[-log D_cls(c | x)]      (real images for D with c', fakes for G with target c)
    L_rec  = E[|x - G(G(x, c), c')|]   (= cycle_consistency)
"""
from __future__ import annotations

import torch
import torch.nn.functional as F


def adversarial(logits: torch.Tensor, target: float) -> torch.Tensor:
    """Binary cross-entropy of D's logits against a constant target (1 real, 0 fake)."""
    return F.binary_cross_entropy_with_logits(logits, torch.full_like(logits, target))


def r1_penalty(d_out: torch.Tensor, x_real: torch.Tensor) -> torch.Tensor:
    """0.5 * batch mean of the summed squared gradient of D's output w.r.t. the real images.

    ``x_real`` must have ``requires_grad=True`` and ``d_out`` must be computed from it. The graph is
    kept so that the penalty itself can be differentiated w.r.t. D's parameters.
    """
    (grad,) = torch.autograd.grad(d_out.sum(), x_real, create_graph=True)
    return 0.5 * grad.pow(2).flatten(1).sum(1).mean()


def style_reconstruction(s_pred: torch.Tensor, s_trg: torch.Tensor) -> torch.Tensor:
    return torch.mean(torch.abs(s_pred - s_trg))


def diversity_sensitive(x_fake: torch.Tensor, x_fake2: torch.Tensor) -> torch.Tensor:
    """Mean L1 distance between two outputs for two styles; the second output is not back-propagated.

    The generator *maximises* this term: the caller subtracts ``lambda_ds * diversity_sensitive``.
    """
    return torch.mean(torch.abs(x_fake - x_fake2.detach()))


def cycle_consistency(x_rec: torch.Tensor, x_real: torch.Tensor) -> torch.Tensor:
    return torch.mean(torch.abs(x_rec - x_real))


def identity(x_same: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """L_id: mean L1 between x and G(x, s) for a style s of x's own domain."""
    return torch.mean(torch.abs(x_same - x))


def lambda_ds_at(step: int, initial: float, ds_iter: int) -> float:
    """Weight of the diversity term at (0-based) iteration ``step``: linear decay from ``initial`` to 0."""
    if ds_iter <= 0:
        return 0.0
    return max(0.0, initial * (1.0 - step / ds_iter))


def wasserstein(out_src: torch.Tensor, real: bool) -> torch.Tensor:
    """Critic loss term: -mean D_src for images to be scored as real, +mean for fakes."""
    return -out_src.mean() if real else out_src.mean()


def gradient_penalty(out_src: torch.Tensor, x_hat: torch.Tensor) -> torch.Tensor:
    """Batch mean of (||grad_x^ D_src(x^)||_2 - 1)^2, the norm taken over each whole image.

    ``x_hat`` must have ``requires_grad=True`` and ``out_src`` (any shape [B, ...]) must be computed
    from it. The graph is kept so that the penalty can be differentiated w.r.t. D's parameters.
    """
    (grad,) = torch.autograd.grad(out_src.sum(), x_hat, create_graph=True)
    return (grad.flatten(1).norm(2, dim=1) - 1).pow(2).mean()


def domain_classification(logits: torch.Tensor, labels: torch.Tensor, multi_label: bool) -> torch.Tensor:
    """-log D_cls(c | x) for logits [B, c].

    Multi-label (CelebA attributes, labels [B, c] in {0, 1}): binary cross-entropy summed over the
    attributes, averaged over the batch. Single-label (labels [B] long): cross-entropy, batch mean.
    """
    if multi_label:
        return F.binary_cross_entropy_with_logits(logits, labels.to(logits.dtype),
                                                  reduction="sum") / logits.size(0)
    return F.cross_entropy(logits, labels)
