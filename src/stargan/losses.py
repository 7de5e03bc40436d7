"""Loss terms, named as in the papers. Pure functions of tensors.

StarGAN v2 (Choi et al., 2020), Section 2 / Eq. 1-5:
    L_adv  = E[log D_y(x)] + E[log(1 - D_y~(G(x, s~)))]   (non-saturating, BCE on logits)
    R1     = gamma/2 * E[||grad_x D_y(x)||^2]              (real images only)
    L_sty  = E[|s~ - E_y~(G(x, s~))|]
    L_ds   = E[|G(x, s1) - G(x, s2)|]                     (maximised by G)
    L_cyc  = E[|x - G(G(x, s~), E_y(x))|]
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


def lambda_ds_at(step: int, initial: float, ds_iter: int) -> float:
    """Weight of the diversity term at (0-based) iteration ``step``: linear decay from ``initial`` to 0."""
    if ds_iter <= 0:
        return 0.0
    return max(0.0, initial * (1.0 - step / ds_iter))
