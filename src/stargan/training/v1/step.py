"""One StarGAN v1 training iteration, written to be read next to the paper (Section 3, Eq. 1-4, with
the WGAN-GP objective of Section 5.2) and the released code.

Per iteration, on real images x of one dataset with labels c' (``label_org``) and target labels c
(``label_trg``, the batch's labels shuffled):
    1. D, every iteration:
         L_D = -E[D_src(x)] + E[D_src(G(x, c))] + lambda_cls * L_cls(D_cls(x), c')
               + lambda_gp * E[(||grad D_src(x^)||_2 - 1)^2],      x^ = alpha x + (1 - alpha) G(x, c)
    2. G, after every ``n_critic``-th D update on each dataset:
         L_G = -E[D_src(G(x, c))] + lambda_cls * L_cls(D_cls(G(x, c)), c)
               + lambda_rec * E[|x - G(G(x, c), c')|]
G is conditioned on the full label vectors ``c_org`` / ``c_trg`` (with the mask vector when training
on two datasets); D's domain logits are sliced to the batch's dataset. With two datasets the steps
alternate between them, so released iteration i is our steps 2i (CelebA) and 2i + 1, and G trains on
both datasets at the same released iterations (whatever the parity of n_critic).

The learning rates stay constant until ``optim.decay_start`` and then fall linearly to 0 at
``train.total_iters``, as the paper describes. The released code subtracts lr / num_iters_decay only
once every 1,000 iterations, so its rates end at 99% of where they started.
"""
from __future__ import annotations

import torch

from stargan import losses
from stargan.config import V1Config, V1ModelConfig, V1OptimConfig
from stargan.nets.v1 import Networks
from stargan.state import V1TrainState
from stargan.training.updates import frozen, update


def learning_rates_at(step: int, optim: V1OptimConfig, total_iters: int) -> tuple[float, float]:
    """(g_lr, d_lr) at (0-based) iteration ``step``: constant until ``decay_start``, then linear to 0
    at ``total_iters``."""
    if step < optim.decay_start or total_iters <= optim.decay_start:
        factor = 1.0
    else:
        factor = max(0.0, (total_iters - step) / (total_iters - optim.decay_start))
    return optim.g_lr * factor, optim.d_lr * factor


def domain_logits(out_cls: torch.Tensor, dataset: int, model: V1ModelConfig) -> torch.Tensor:
    """D's classification logits for ``dataset``: all of them on one dataset; with two, the first
    ``c_dim`` (dataset 0, CelebA) or the last ``c2_dim`` (dataset 1)."""
    if not model.c2_dim:
        return out_cls
    return out_cls[:, :model.c_dim] if dataset == 0 else out_cls[:, model.c_dim:]


def discriminator_loss(nets: Networks, cfg: V1Config, x_real: torch.Tensor, c_trg: torch.Tensor,
                       label_org: torch.Tensor, alpha: torch.Tensor, dataset: int
                       ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_D = -L_adv + lambda_cls * L_cls^r, with the WGAN-GP penalty on interpolates x^ (alpha [B,1,1,1])."""
    G, D = nets.generator, nets.discriminator
    multi_label = label_org.is_floating_point()  # attribute vectors, else class indices
    out_src, out_cls = D(x_real)
    loss_real = losses.wasserstein(out_src, real=True)
    loss_cls = losses.domain_classification(domain_logits(out_cls, dataset, cfg.model), label_org,
                                            multi_label)

    with torch.no_grad():
        x_fake = G(x_real, c_trg)
    out_src, _ = D(x_fake)
    loss_fake = losses.wasserstein(out_src, real=False)

    x_hat = (alpha * x_real + (1 - alpha) * x_fake).requires_grad_(True)
    out_src, _ = D(x_hat)
    loss_gp = losses.gradient_penalty(out_src, x_hat)

    loss = loss_real + loss_fake + cfg.loss.lambda_cls * loss_cls + cfg.loss.lambda_gp * loss_gp
    return loss, {"real": loss_real.detach(), "fake": loss_fake.detach(), "cls": loss_cls.detach(),
                  "gp": loss_gp.detach()}


def generator_loss(nets: Networks, cfg: V1Config, x_real: torch.Tensor, c_org: torch.Tensor,
                   c_trg: torch.Tensor, label_trg: torch.Tensor, dataset: int
                   ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_G = L_adv + lambda_cls * L_cls^f + lambda_rec * L_rec."""
    G, D = nets.generator, nets.discriminator
    x_fake = G(x_real, c_trg)
    out_src, out_cls = D(x_fake)
    loss_fake = losses.wasserstein(out_src, real=True)
    loss_cls = losses.domain_classification(domain_logits(out_cls, dataset, cfg.model), label_trg,
                                            label_trg.is_floating_point())
    x_rec = G(x_fake, c_org)
    loss_rec = losses.cycle_consistency(x_rec, x_real)

    loss = loss_fake + cfg.loss.lambda_cls * loss_cls + cfg.loss.lambda_rec * loss_rec
    return loss, {"fake": loss_fake.detach(), "cls": loss_cls.detach(), "rec": loss_rec.detach()}


def train_step(state: V1TrainState, batch: dict[str, torch.Tensor], cfg: V1Config
                  ) -> dict[str, torch.Tensor]:
    """Run exactly one training iteration on ``batch`` and advance ``state.step`` by one.

    ``batch`` holds x_real, label_org, label_trg, c_org, c_trg, dataset and alpha (see
    :class:`stargan.data.v1.Batches`) on the networks' device. Returns the detached loss terms
    (``D/real``, ``G/rec``, ...; G's only on G iterations) and the learning rates used.
    """
    nets, step = state.nets, state.step
    g_lr, d_lr = learning_rates_at(step, cfg.optim, cfg.train.total_iters)
    for name, lr in (("generator", g_lr), ("discriminator", d_lr)):
        for group in state.optimizers[name].param_groups:
            group["lr"] = lr
    x_real, dataset = batch["x_real"], int(batch["dataset"])
    logs = {"G/lr": torch.tensor(g_lr, dtype=torch.float64),
            "D/lr": torch.tensor(d_lr, dtype=torch.float64)}

    # 1. Discriminator.
    d_loss, terms = discriminator_loss(nets, cfg, x_real, batch["c_trg"], batch["label_org"],
                                       batch["alpha"], dataset)
    update(state, d_loss, ("discriminator",))
    logs.update({f"D/{k}": v for k, v in terms.items()})

    # 2. Generator, once every n_critic discriminator updates on this dataset.
    num_datasets = 2 if cfg.model.c2_dim else 1
    if (step // num_datasets + 1) % cfg.optim.n_critic == 0:
        with frozen(nets.discriminator):
            g_loss, terms = generator_loss(nets, cfg, x_real, batch["c_org"], batch["c_trg"],
                                           batch["label_trg"], dataset)
            update(state, g_loss, ("generator",))
        logs.update({f"G/{k}": v for k, v in terms.items()})

    state.step += 1
    return logs
