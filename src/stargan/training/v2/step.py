"""One StarGAN v2 training iteration, written to be read next to the paper (Section 2, Eq. 1-5).

Per iteration, on a batch (x_real, y_org), reference images (x_ref, x_ref2) of domain y_trg and
latent codes (z_trg, z_trg2), the phases of :func:`train_step`:
    1. D step, fake images styled by F(z_trg, y_trg)        _d_phase, ending in L_D
    2. D step, fake images styled by E(x_ref, y_trg)        _d_phase
    3. G step with latent styles    -> updates G, F and E   _g_phase, ending in Eq. 5
    4. G step with reference styles -> updates G only       _g_phase
    (with ``loss.lambda_id`` > 0, not in the paper, phases 3-4 add CycleGAN's identity loss)
    5. exponential moving average of G, F and E

The passes that several phases reuse are computed once, in :func:`_shared_passes`
(``train.shared_passes``, the default); with it off each phase makes its own fakes, in every precision.
Either way the result is the paper's iteration: tests/training/v2/reference_step.py writes it naively,
and the tests hold this step equal to it in float64.

The networks run through ``Speed``'s passes (:meth:`stargan.training.v2.speed.Speed.passes`): precision,
memory format and compilation are applied there, and the arithmetic here sees the weights' dtype.
``state.augment`` (``train.augment``, off in the paper's presets) transforms every image D sees, real
and fake, in the D and G steps (see :mod:`stargan.training.v2.augment`).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.profiler import record_function

from stargan import losses
from stargan.config import LossConfig, OptimConfig
from stargan.nets.v2 import MaskFn, Masks, Networks
from stargan.state import TrainState
from stargan.training.v2.speed import Passes, Speed
from stargan.training.updates import frozen, update


def ema_beta_at(step: int, optim: OptimConfig) -> float:
    """The moving average's beta for the update after iteration ``step`` (0-based).

    ``optim.ema_warmup`` ramps it as min(ema_beta, (1 + t) / (10 + t)). A plain beta of 0.999 keeps
    0.999^t of the random initialisation (37% after 1,000 iterations), so short runs sample from
    noise. With the ramp the weight of iteration t's networks in the average grows like t^9: the
    initialisation is gone after a few dozen iterations (its weight is 9! t! / (t + 9)!), the average
    spans roughly the last tenth of training, and the ramp reaches 0.999 at t = 8,990, after which it
    is the paper's average. It depends on the step alone, so a resumed run continues it exactly.
    """
    if not optim.ema_warmup:
        return optim.ema_beta
    return min(optim.ema_beta, (1 + step) / (10 + step))


@torch.no_grad()
def update_ema(ema: Networks, nets: Networks, beta: float) -> None:
    """ema <- beta * ema + (1 - beta) * current, for every parameter of G, F and E."""
    for name, ema_net in ema.items():
        for p_ema, p in zip(ema_net.parameters(), getattr(nets, name).parameters()):
            p_ema.lerp_(p, 1.0 - beta)
        for b_ema, b in zip(ema_net.buffers(), getattr(nets, name).buffers()):
            b_ema.copy_(b)


def train_step(state: TrainState, batch: dict[str, torch.Tensor], loss_cfg: LossConfig,
               ema_beta: float, mask_fn: MaskFn | None = None, speed: Speed | None = None
               ) -> dict[str, torch.Tensor]:
    """Run exactly one training iteration on ``batch`` and advance ``state.step`` by one.

    ``batch`` holds x_real, y_org, x_ref, x_ref2, y_trg, z_trg, z_trg2 on the networks' device.
    ``mask_fn`` (w_hpf > 0) gives the face masks of images: those of x_real serve every generator
    call on x_real (computed once: x_real and the mask network do not change within the iteration),
    the cycle reconstruction recomputes them from x_fake.
    ``speed`` sets precision, memory format, compiled passes and shared passes (default: fp32, shared).
    Returns the detached loss terms, keyed like ``D/latent_real`` or ``G/ref_cyc`` (``G/*_ds`` only
    while lambda_ds > 0: at 0 the diversity term and its second fakes are skipped).
    """
    it = _Iteration.start(state, batch, loss_cfg, mask_fn, speed or Speed())
    logs: dict[str, torch.Tensor] = {}
    shared = _shared_passes(it) if it.speed.shared_passes else None  # None: each phase makes its own

    # 1-2. Discriminator, with latent-guided then reference-guided fakes.
    for source in ("latent", "ref"):
        logs |= _d_phase(it, source, shared.d_fake(source) if shared else None)
    # 3. Generator, mapping network and style encoder, with latent-guided styles.
    logs |= _g_phase(it, "latent", shared.latent if shared else None)
    # 4. Generator only, with reference-guided styles (G changed in 3: nothing carries over).
    logs |= _g_phase(it, "ref", None)
    # 5. Moving averages used for sampling and evaluation.
    with record_function("phase EMA"):
        update_ema(state.ema, state.nets, ema_beta)
    if state.augment is not None:
        state.augment.after_step(state.world_size)
        logs.update(state.augment.logs())
    state.step += 1
    logs["G/lambda_ds"] = torch.tensor(it.lambda_ds)
    return logs


@dataclass(frozen=True)
class _Iteration:
    """What the phases of one iteration read: the state, the networks as ``Speed`` runs them, the batch."""

    state: TrainState
    nets: Passes                  # G's halves, F, E and D as Speed runs them (precision, compiled)
    speed: Speed
    cfg: LossConfig
    lambda_ds: float              # the diversity weight of Eq. 5 at this iteration
    x_real: torch.Tensor          # images in Speed's memory format
    y_org: torch.Tensor
    y_trg: torch.Tensor
    z_trgs: tuple[torch.Tensor, torch.Tensor]
    x_refs: tuple[torch.Tensor, torch.Tensor]
    masks: Masks                  # face masks of x_real (w_hpf > 0), else None
    mask_fn: MaskFn | None

    @staticmethod
    def start(state: TrainState, batch: dict[str, torch.Tensor], cfg: LossConfig, mask_fn: MaskFn | None,
              speed: Speed) -> _Iteration:
        x_real = speed.images(batch["x_real"])
        return _Iteration(state=state, nets=speed.passes(state.nets), speed=speed, cfg=cfg,
                          lambda_ds=losses.lambda_ds_at(state.step, cfg.lambda_ds, cfg.ds_iter),
                          x_real=x_real, y_org=batch["y_org"], y_trg=batch["y_trg"],
                          z_trgs=(batch["z_trg"], batch["z_trg2"]),
                          x_refs=(speed.images(batch["x_ref"]), speed.images(batch["x_ref2"])),
                          masks=mask_fn(x_real) if mask_fn is not None else None, mask_fn=mask_fn)

    @property
    def with_ds(self) -> bool:
        """L_ds is computed: lambda_ds is not 0. At 0 it and its second fakes are skipped: -0 * L_ds adds
        nothing to any gradient, so the step stays exact."""
        return self.lambda_ds != 0

    def seen_by_d(self, x: torch.Tensor) -> torch.Tensor:
        """What D sees of image x: x, or augment(x) with ``train.augment``."""
        return x if self.state.augment is None else self.state.augment(x)

    def style(self, source: str, i: int) -> torch.Tensor:
        """The i-th style (0 or 1) of a source: F(z_trg_i, y_trg) (latent) or E(x_ref_i, y_trg) (ref)."""
        if source == "latent":
            return self.nets.mapping_network(self.z_trgs[i], self.y_trg)
        return self.nets.style_encoder(self.x_refs[i], self.y_trg)


@dataclass(frozen=True)
class _Fakes:
    """A G phase's styles and images on x_real: x_fake = G(x_real, s_trg), x_fake2 = G(x_real, s_trg2)."""

    s_trg: torch.Tensor           # with its graph to F where F learns (phase 3)
    x_fake: torch.Tensor          # with its graph to G (and to F)
    x_fake2: torch.Tensor | None  # without a graph: L_ds does not back-propagate through it; None when
                                  # lambda_ds is 0 at this iteration (L_ds then weighs nothing)
    s_org: torch.Tensor | None    # E(x_real, y_org) when computed with the styles (phase 4), else None
    features: tuple               # G's encoding of x_real, with its graph (the identity loss decodes it)
    s_trg2: torch.Tensor          # the second style, without a graph (phase 4's identity loss reuses it)
    x_id: torch.Tensor | None = None  # the identity loss's G(x, s_own), decoded in x_fake's batch with
                                      # shared passes and lambda_id > 0; None: _identity_loss decodes it


@dataclass(frozen=True)
class _Shared:
    """The passes phases 1-3 share (see :func:`_shared_passes`)."""

    latent: _Fakes                # phase 3's styles and fakes
    x_fake_ref: torch.Tensor      # phase 2's fake

    def d_fake(self, source: str) -> torch.Tensor:
        """The fake of D's phase for ``source``, without a graph."""
        return self.latent.x_fake.detach() if source == "latent" else self.x_fake_ref


def _shared_passes(it: _Iteration) -> _Shared:
    """The passes several phases reuse, computed once: G, F and E do not change before phase 3's update.

    - phase 3's first fake G(x_real, F(z_trg)), with its graph, is phase 1's fake (detached);
    - phase 2's fake G(x_real, E(x_ref)) and phase 3's second fake G(x_real, F(z_trg2)) need no graph
      and decode as one batch;
    - all three decode the same encoding of x_real;
    - with lambda_id > 0, phase 3's identity output G(x_real, F(z_trg, y_org)) decodes it too, in the
      batch of the first fake (both with their graphs), and its style comes from F in the same batch.
    No layer couples the samples of a batch (instance norm and AdaIN are per sample), so batching
    changes no value: the step is exact with or without this (``train.shared_passes``).
    """
    nets, masks = it.nets, it.masks
    with record_function("phase G/latent"):
        features = nets.encode(it.x_real, masks)
        x_id = None
        if it.cfg.lambda_id > 0:
            z, y = it.z_trgs[0], torch.cat([it.y_trg, it.y_org])
            styles = nets.mapping_network(torch.cat([z, z]), y)     # [s_trg; s_own = F(z_trg, y_org)]
            s_trg = styles[:len(z)]
            x_fake, x_id = nets.decode(_repeat(features, 2), styles, _repeat(masks, 2)).chunk(2)
        else:
            s_trg = it.style("latent", 0)
            x_fake = nets.decode(features, s_trg, masks)
        with torch.no_grad():
            s_ref, s_trg2 = it.style("ref", 0), it.style("latent", 1)
            if it.with_ds:
                styles = torch.cat([s_ref, s_trg2])
                x_fake_ref, x_fake2 = nets.decode(_repeat(features, 2), styles, _repeat(masks, 2)).chunk(2)
            else:
                x_fake_ref, x_fake2 = nets.decode(features, s_ref, masks), None
    return _Shared(_Fakes(s_trg, x_fake, x_fake2, s_org=None, features=features, s_trg2=s_trg2, x_id=x_id),
                   x_fake_ref)


def _d_phase(it: _Iteration, source: str, x_fake: torch.Tensor | None) -> dict[str, torch.Tensor]:
    """Phases 1-2: D maximises L_adv (Eq. 1) against fakes styled by ``source``, with R1 on the real images:
    L_D = -L_adv + lambda_reg * R1.

    ``x_fake``: from the shared passes, or None: made here. R1 is taken w.r.t. x_real before augmentation.
    """
    phase = f"D/{source}"
    with record_function(f"phase {phase}"):
        if x_fake is None:
            with torch.no_grad():
                x_fake = it.nets.decode(it.nets.encode(it.x_real, it.masks), it.style(source, 0), it.masks)
        x_real = it.x_real.detach().requires_grad_(True)
        out_real = it.nets.discriminator_for_r1(it.seen_by_d(x_real), it.y_org)
        if it.state.augment is not None:
            it.state.augment.observe(out_real)
        with record_function("R1"):
            loss_reg = it.speed.r1_penalty(phase, out_real, x_real)
        out_fake = it.nets.discriminator(it.seen_by_d(x_fake), it.y_trg)

        loss_real, loss_fake = losses.adversarial(out_real, 1.0), losses.adversarial(out_fake, 0.0)
        loss = loss_real + loss_fake + it.cfg.lambda_reg * loss_reg    # -L_adv (Eq. 1) + lambda_reg R1
        update(it.state, loss, ("discriminator",), scaler=it.speed.scaler(phase))
    return {f"{phase}_real": loss_real.detach(), f"{phase}_fake": loss_fake.detach(),
            f"{phase}_reg": loss_reg.detach()}


# The networks a G phase updates: with latent styles G, F and E; with reference styles G alone.
_UPDATED = {"latent": ("generator", "mapping_network", "style_encoder"), "ref": ("generator",)}


def _g_phase(it: _Iteration, source: str, fakes: _Fakes | None) -> dict[str, torch.Tensor]:
    """Phases 3-4: with styles from ``source``, G (and in phase 3 F and E) minimise Eq. 5,
    L_G = L_adv + lambda_sty * L_sty - lambda_ds * L_ds + lambda_cyc * L_cyc.

    ``fakes``: from the shared passes, or None: made here. The cycle reconstruction, whose input is
    x_fake, uses the face masks of x_fake (as released).
    """
    phase, trained = f"G/{source}", _UPDATED[source]
    with (frozen(*[net for name, net in it.state.nets.items() if name not in trained]),
          record_function(f"phase {phase}")):
        f = fakes if fakes is not None else _fakes(it, source)
        masks_fake = it.mask_fn(f.x_fake.detach()) if it.mask_fn is not None else None
        out = it.nets.discriminator(it.seen_by_d(f.x_fake), it.y_trg)
        s_pred, s_org = _styles_of_fake_and_real(it, f)
        x_rec = it.nets.decode(it.nets.encode(f.x_fake, masks_fake), s_org, masks_fake)

        loss_adv = losses.adversarial(out, 1.0)                       # Eq. 1, G's side
        loss_sty = losses.style_reconstruction(s_pred, f.s_trg)        # Eq. 2
        loss_cyc = losses.cycle_consistency(x_rec, it.x_real)          # Eq. 4
        loss = loss_adv + it.cfg.lambda_sty * loss_sty
        terms = {"adv": loss_adv, "sty": loss_sty}
        if it.with_ds:                       # at lambda_ds = 0 L_ds is not computed: it weighs nothing
            terms["ds"] = losses.diversity_sensitive(f.x_fake, f.x_fake2)  # Eq. 3
            loss = loss - it.lambda_ds * terms["ds"]
        loss = loss + it.cfg.lambda_cyc * loss_cyc                      # Eq. 5
        terms["cyc"] = loss_cyc
        if it.cfg.lambda_id > 0:                                        # not in the paper: off at 0
            terms["id"] = _identity_loss(it, source, f)
            loss = loss + it.cfg.lambda_id * terms["id"]
        update(it.state, loss, trained, scaler=it.speed.scaler(phase))
    return {f"{phase}_{name}": value.detach() for name, value in terms.items()}


def _identity_loss(it: _Iteration, source: str, f: _Fakes) -> torch.Tensor:
    """L_id (``loss.lambda_id``, CycleGAN's identity loss): an image translated into its own domain,
    with a style of that domain, stays itself.

    Latent phase: x_real (decoded from the phase's encoding of it) with F(z_trg, y_org). Reference phase:
    x_ref with E(x_ref2, y_trg), the phase's second style: that of another picture of x_ref's domain.
    ``f.x_id``: that output, when the shared passes decoded it beside x_fake.
    """
    if f.x_id is not None:
        return losses.identity(f.x_id, it.x_real if source == "latent" else it.x_refs[0])
    if source == "latent":
        s_own = it.nets.mapping_network(it.z_trgs[0], it.y_org)
        return losses.identity(it.nets.decode(f.features, s_own, it.masks), it.x_real)
    x = it.x_refs[0]
    masks = it.mask_fn(x) if it.mask_fn is not None else None
    return losses.identity(it.nets.decode(it.nets.encode(x, masks), f.s_trg2, masks), x)


def _fakes(it: _Iteration, source: str) -> _Fakes:
    """A G phase's own styles and fakes, both fakes from one encoding of x_real.

    Phase 4 (``ref``) trains G alone: E is frozen and x_ref needs no gradient, so its two reference
    styles and E(x_real, y_org) of the cycle come from one pass of E without a graph. With shared passes
    and lambda_id > 0 its identity output G(x_ref, s_trg2) is encoded and decoded in x_fake's batch.
    """
    if source == "ref":
        with torch.no_grad():
            s_trg, s_trg2, s_org = it.nets.style_encoder(torch.cat([*it.x_refs, it.x_real]),
                                                         torch.cat([it.y_trg, it.y_trg, it.y_org])).chunk(3)
    else:
        s_trg, s_org = it.style(source, 0), None
        with torch.no_grad():
            s_trg2 = it.style(source, 1)
    x_id = None
    if source == "ref" and it.cfg.lambda_id > 0 and it.speed.shared_passes:
        x_ref = it.x_refs[0]
        masks = _cat(it.masks, it.mask_fn(x_ref) if it.mask_fn is not None else None)
        both = it.nets.encode(torch.cat([it.x_real, x_ref]), masks)
        x_fake, x_id = it.nets.decode(both, torch.cat([s_trg, s_trg2]), masks).chunk(2)
        features = _first_half(both)
    else:
        features = it.nets.encode(it.x_real, it.masks)
        x_fake = it.nets.decode(features, s_trg, it.masks)
    with torch.no_grad():
        x_fake2 = it.nets.decode(features, s_trg2, it.masks) if it.with_ds else None
    return _Fakes(s_trg, x_fake, x_fake2, s_org, features, s_trg2, x_id)


def _styles_of_fake_and_real(it: _Iteration, f: _Fakes) -> tuple[torch.Tensor, torch.Tensor]:
    """E(x_fake, y_trg), which L_sty compares with s_trg, and E(x_real, y_org), the style the cycle
    restores: as one batch, unless the latter came with phase 4's reference styles."""
    if f.s_org is not None:
        return it.nets.style_encoder(f.x_fake, it.y_trg), f.s_org
    s_pred, s_org = it.nets.style_encoder(torch.cat([f.x_fake, it.x_real]),
                                          torch.cat([it.y_trg, it.y_org])).chunk(2)
    return s_pred, s_org


def _repeat(value, n: int):
    """A tensor, or a tuple or dict of them (G's encoder features, face masks), or None, repeated n
    times along the batch (to decode n styles at once)."""
    return _cat(*[value] * n)


def _cat(*values):
    """Tensors, or tuples or dicts of them alike (G's encoder features, face masks), or Nones,
    concatenated along the batch (to run several batches' passes as one)."""
    first = values[0]
    if first is None:
        return None
    if isinstance(first, torch.Tensor):
        return torch.cat(values)
    if isinstance(first, dict):
        return {key: _cat(*[v[key] for v in values]) for key in first}
    return tuple(_cat(*parts) for parts in zip(*values))


def _first_half(value):
    """The first half of a batch made by :func:`_cat` of two alike (a tensor, tuple or dict of them)."""
    if isinstance(value, torch.Tensor):
        return value[:value.size(0) // 2]
    if isinstance(value, dict):
        return {key: _first_half(v) for key, v in value.items()}
    return tuple(_first_half(v) for v in value)
