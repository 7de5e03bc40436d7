"""Differentiable augmentation of every image the discriminator sees, for small datasets and short runs.

With few images D memorises the training set and its feedback to G stops being useful. DiffAugment
(Zhao et al., NeurIPS 2020) and ADA (Karras et al., NeurIPS 2020) both apply the same kind of random,
differentiable transform T to real *and* fake images before D, in the D steps and in the G steps, so
that D never sees an un-augmented image and G's gradient flows back through T:

    L_D = -log D(T(x)) - log(1 - D(T(G(x, s)))) + R1,        L_adv(G) = -log D(T(G(x, s)))

The R1 penalty is the gradient of D(T(x)) with respect to the real images x before T, through T,
as both methods' reference code takes it. Every transform below is differentiable to second order
(additions, products, gathers), which the R1 double backward needs.

- ``diffaugment``: DiffAugment's policy ``color,translation,cutout``, applied to every image:
  brightness + U(-0.5, 0.5), saturation x U(0, 2), contrast x U(0.5, 1.5); an integer shift of up to
  1/8 of the side, zero-padded; one square of half the side zeroed at a random centre.
- ``ada``: the same transforms plus a horizontal flip, each applied to each image with probability p;
  p adapts so that r_t = E[sign(D(T(x_real)))] stays near a target (0.6): every ``interval`` iterations
  p moves by sign(r_t - target) * (images seen in the interval) / (``kimg`` * 1000), clipped to [0, 1].

Random numbers come from the augmentation's own generator (seeded from ``train.seed``), whose state
is part of the checkpoint with ADA's p and its running statistics (:meth:`DiffAugment.state_dict`), so
a resumed run draws the same transforms whatever else used torch's global generator in between.
Nothing here reads a value back to the host.
"""
from __future__ import annotations

import torch

MODES = ("none", "diffaugment", "ada")
TRANSLATION = 1 / 8      # largest shift, as a fraction of the side (both methods' value)
CUTOUT = 1 / 2           # side of the zeroed square, as a fraction of the image's side


Generator = torch.Generator | None  # None: torch's global generator


def _uniform(x: torch.Tensor, low: float, high: float, generator: Generator) -> torch.Tensor:
    """One value per sample, shaped to broadcast over (C, H, W)."""
    u = torch.rand(x.shape[0], 1, 1, 1, device=x.device, generator=generator)
    return (low + (high - low) * u).to(x.dtype)


def brightness(x: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    return x + _uniform(x, -0.5, 0.5, generator)


def saturation(x: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    gray = x.mean(dim=1, keepdim=True)
    return gray + (x - gray) * _uniform(x, 0.0, 2.0, generator)


def contrast(x: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    mean = x.mean(dim=(1, 2, 3), keepdim=True)
    return mean + (x - mean) * _uniform(x, 0.5, 1.5, generator)


def color(x: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    return contrast(saturation(brightness(x, generator), generator), generator)


def translation(x: torch.Tensor, generator: Generator = None, ratio: float = TRANSLATION) -> torch.Tensor:
    """out[:, :, h, w] = x[:, :, h + dy, w + dx] (zero outside), with integer dy, dx in [-s, s] per
    sample, s = round(ratio * side)."""
    n, c, height, width = x.shape
    sy, sx = int(height * ratio + 0.5), int(width * ratio + 0.5)
    dy = torch.randint(-sy, sy + 1, (n, 1, 1), device=x.device, generator=generator)
    dx = torch.randint(-sx, sx + 1, (n, 1, 1), device=x.device, generator=generator)
    rows = torch.arange(height, device=x.device).view(1, height, 1) + dy   # n x H x 1
    cols = torch.arange(width, device=x.device).view(1, 1, width) + dx     # n x 1 x W
    inside = ((rows >= 0) & (rows < height) & (cols >= 0) & (cols < width)).to(x.dtype)
    index = rows.clamp(0, height - 1) * width + cols.clamp(0, width - 1)   # n x H x W
    picked = x.flatten(2).gather(2, index.flatten(1).unsqueeze(1).expand(n, c, height * width))
    return picked.view(n, c, height, width) * inside.unsqueeze(1)


def cutout(x: torch.Tensor, generator: Generator = None, ratio: float = CUTOUT) -> torch.Tensor:
    """Zero a square of side round(ratio * side) centred at a random pixel of each sample (it may
    reach past the border)."""
    n, _, height, width = x.shape
    ch, cw = int(height * ratio + 0.5), int(width * ratio + 0.5)
    top = torch.randint(0, height, (n, 1, 1), device=x.device, generator=generator) - ch // 2
    left = torch.randint(0, width, (n, 1, 1), device=x.device, generator=generator) - cw // 2
    rows = torch.arange(height, device=x.device).view(1, height, 1)
    cols = torch.arange(width, device=x.device).view(1, 1, width)
    hole = (rows >= top) & (rows < top + ch) & (cols >= left) & (cols < left + cw)
    return x * (~hole).to(x.dtype).unsqueeze(1)


def xflip(x: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    return x.flip(3)


def diff_augment(x: torch.Tensor, generator: Generator = None) -> torch.Tensor:
    """DiffAugment's ``color,translation,cutout`` on every sample of ``x``."""
    return cutout(translation(color(x, generator), generator), generator)


class DiffAugment:
    """``train.augment: diffaugment``: the same policy at every call, drawn from its own generator."""

    def __init__(self, seed: int = 0, device: torch.device | str = "cpu") -> None:
        self.generator = torch.Generator(device=device).manual_seed(seed)

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return diff_augment(x, self.generator)

    def observe(self, real_logits: torch.Tensor) -> None:  # DiffAugment does not adapt
        pass

    def after_step(self, world_size: int = 1) -> None:
        pass

    def logs(self) -> dict[str, torch.Tensor]:
        return {}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"generator": self.generator.get_state()}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        if "generator" in state:  # a checkpoint of a run without augmentation has none: keep the seed's
            self.generator.set_state(state["generator"])


class AdaptiveAugment(DiffAugment):
    """``train.augment: ada``: each transform applied to each sample with probability ``p``, which
    follows the sign of D's output on real images (see the module's docstring).

    ``observe`` is given D's logits on (augmented) real images in every D step; ``after_step`` is
    called once per iteration and moves p every ``interval`` iterations.
    """

    TRANSFORMS = (xflip, brightness, saturation, contrast, translation, cutout)

    def __init__(self, target: float = 0.6, kimg: float = 500.0, interval: int = 4, batch_size: int = 8,
                 device: torch.device | str = "cpu", p: float = 0.0, seed: int = 0) -> None:
        super().__init__(seed, device)
        self.target, self.kimg, self.interval, self.batch_size = target, kimg, interval, batch_size
        self.p = torch.tensor(float(p), device=device)
        self.sign_sum = torch.zeros((), device=device)  # sum of sign(D(T(x_real))) since p last moved
        self.count = torch.zeros((), device=device)     # number of those logits
        self.iterations = 0                             # iterations since p last moved

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        for transform in self.TRANSFORMS:
            apply = torch.rand(x.shape[0], 1, 1, 1, device=x.device, generator=self.generator) < self.p
            x = torch.where(apply, transform(x, self.generator), x)
        return x

    def observe(self, real_logits: torch.Tensor) -> None:
        logits = real_logits.detach().float()
        self.sign_sum += logits.sign().sum()
        self.count += logits.numel()

    def after_step(self, world_size: int = 1) -> None:
        self.iterations += 1
        if self.iterations < self.interval:
            return
        stats = torch.stack([self.sign_sum, self.count])
        if world_size > 1:  # every process moves p alike, from all processes' real images
            torch.distributed.all_reduce(stats)
        r_t = stats[0] / stats[1].clamp(min=1)
        images = self.batch_size * world_size * self.iterations
        self.p = (self.p + torch.sign(r_t - self.target) * images / (self.kimg * 1000)).clamp(0.0, 1.0)
        self.sign_sum.zero_()
        self.count.zero_()
        self.iterations = 0

    def logs(self) -> dict[str, torch.Tensor]:
        return {"D/ada_p": self.p.detach().clone()}

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {**super().state_dict(), "p": self.p.cpu(), "sign_sum": self.sign_sum.cpu(),
                "count": self.count.cpu(), "iterations": torch.tensor(self.iterations)}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        super().load_state_dict(state)
        if "p" not in state:  # the run used DiffAugment (or nothing) so far: p starts at 0
            return
        device = self.p.device
        self.p, self.sign_sum, self.count = (state[k].to(device) for k in ("p", "sign_sum", "count"))
        self.iterations = int(state["iterations"])


def make_augment(mode: str, target: float = 0.6, kimg: float = 500.0, interval: int = 4,
                 batch_size: int = 8, device: torch.device | str = "cpu", seed: int = 0) -> DiffAugment | None:
    """The augmentation of ``train.augment`` (None for ``none``: D sees the images as they are)."""
    if mode == "none":
        return None
    if mode == "diffaugment":
        return DiffAugment(seed, device)
    if mode == "ada":
        return AdaptiveAugment(target, kimg, interval, batch_size, device, seed=seed)
    raise ValueError(f"train.augment={mode!r}; expected one of {', '.join(MODES)}")
