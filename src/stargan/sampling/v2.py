"""Sampling with trained StarGAN v2 networks: image grids and translations (animations: animation.py).

Every function runs under ``torch.inference_mode`` with the networks temporarily in eval mode (their
previous mode is restored) on the device of the networks; inputs are moved there. Images are
tensors in [-1, 1] of shape [B, 3, S, S]; grids are [3, H, W] tensors in [0, 1] ready for
:func:`save_grid`.

Models with ``w_hpf > 0`` take ``mask_fn`` (see :func:`stargan.faces.masks.load_mask_fn`): the face
masks of each generator input, as released (the cycle reconstruction uses those of the translated
image). ``None`` runs the generator without masks.
"""
from __future__ import annotations

import torch

from stargan.imaging import eval_mode, image_grid
from stargan.nets.v2 import MaskFn, Masks, Networks

MEAN_STYLE_CHUNK = 1000  # latent codes per forward pass in mean_style


# ----------------------------------------------------------------------------------------------
# Helpers

def device_of(nets: Networks) -> torch.device:
    return next(nets.generator.parameters()).device


def num_domains_of(nets: Networks) -> int:
    return len(nets.mapping_network.unshared)


def check_images(x: torch.Tensor, name: str, nets: Networks) -> None:
    size = nets.generator.img_size
    if not isinstance(x, torch.Tensor) or x.dim() != 4 or x.size(1) != 3:
        shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
        raise ValueError(f"{name} must be an image batch of shape [B, 3, {size}, {size}], got {shape}")
    if x.size(2) != size or x.size(3) != size:
        raise ValueError(f"{name} has images of {x.size(2)}x{x.size(3)} pixels but the networks were "
                         f"built for img_size={size}; resize the images to {size}x{size}")
    if x.size(0) == 0:
        raise ValueError(f"{name} is an empty batch; pass at least one image")


def _check_domain(y: int, nets: Networks) -> None:
    n = num_domains_of(nets)
    if not 0 <= y < n:
        raise ValueError(f"domain index {y} is out of range: the networks have {n} domains (0..{n - 1})")


def domain_tensor(y: int | torch.Tensor, batch: int, nets: Networks) -> torch.Tensor:
    """A long tensor [batch] of domain indices from an int, a scalar tensor or a [batch] tensor."""
    device = device_of(nets)
    if isinstance(y, torch.Tensor):
        if y.dim() == 0:
            y = int(y)
        elif y.shape != (batch,):
            raise ValueError(f"y_trg must be an int or a tensor of shape [{batch}], got {tuple(y.shape)}")
        else:
            for value in y.unique().tolist():
                _check_domain(int(value), nets)
            return y.to(device=device, dtype=torch.long)
    _check_domain(int(y), nets)
    return torch.full((batch,), int(y), dtype=torch.long, device=device)


def _randn(num: int, dim: int, generator: torch.Generator | None, device: torch.device) -> torch.Tensor:
    # Draw on the generator's own device so a CPU generator works with CUDA networks (and vice versa).
    draw_device = generator.device if generator is not None else device
    return torch.randn(num, dim, generator=generator, device=draw_device).to(device)


def latent_dim_of(nets: Networks) -> int:
    return nets.mapping_network.shared[0].in_features


def _check_latents(z: torch.Tensor, nets: Networks) -> None:
    latent_dim = latent_dim_of(nets)
    if not isinstance(z, torch.Tensor) or z.dim() != 2 or z.size(1) != latent_dim or z.size(0) == 0:
        shape = tuple(z.shape) if isinstance(z, torch.Tensor) else type(z).__name__
        raise ValueError(f"z must be latent codes of shape [K, {latent_dim}] with K >= 1, got {shape}")


def masks_of(mask_fn: MaskFn | None, x: torch.Tensor) -> Masks:
    """The face masks of images ``x``, or None without a mask function."""
    return mask_fn(x) if mask_fn is not None else None


def _truncate(s: torch.Tensor, mean: torch.Tensor | None, psi: float) -> torch.Tensor:
    """Pull styles towards the mean style: psi = 1 keeps them, psi = 0 gives the mean."""
    return s if mean is None else torch.lerp(mean, s, psi)


# ----------------------------------------------------------------------------------------------
# Styles and translation

@torch.inference_mode()
def mean_style(nets: Networks, y: int, num: int = 10_000,
               generator: torch.Generator | None = None) -> torch.Tensor:
    """Average style [1, style_dim] of domain ``y`` over ``num`` latent codes z ~ N(0, I)."""
    if num < 1:
        raise ValueError(f"num must be >= 1 latent codes to average, got {num}")
    _check_domain(y, nets)
    device = device_of(nets)
    latent_dim = latent_dim_of(nets)
    total = None
    with eval_mode(nets):
        for start in range(0, num, MEAN_STYLE_CHUNK):
            n = min(MEAN_STYLE_CHUNK, num - start)
            z = _randn(n, latent_dim, generator, device)
            y_batch = torch.full((n,), y, dtype=torch.long, device=device)
            chunk_sum = nets.mapping_network(z, y_batch).sum(0, keepdim=True)
            total = chunk_sum if total is None else total + chunk_sum
    return total / num


@torch.inference_mode()
def latent_styles(nets: Networks, z: torch.Tensor, y: torch.Tensor, psi: float = 1.0,
                  generator: torch.Generator | None = None) -> torch.Tensor:
    """Style codes F_y(z) [K, style_dim] of latent codes ``z`` [K, latent_dim] in domains ``y`` [K],
    pulled towards each domain's mean style by ``psi`` < 1 (``generator`` seeds the mean)."""
    with eval_mode(nets):
        s = nets.mapping_network(z.to(device_of(nets)), y)
        if psi != 1.0:
            for domain in y.unique().tolist():
                rows = y == domain
                s[rows] = _truncate(s[rows], mean_style(nets, domain, generator=generator), psi)
    return s


@torch.inference_mode()
def translate(nets: Networks, x: torch.Tensor, y_trg: int | torch.Tensor, *,
              z: torch.Tensor | None = None, x_ref: torch.Tensor | None = None, psi: float = 1.0,
              generator: torch.Generator | None = None, mask_fn: MaskFn | None = None) -> torch.Tensor:
    """Translate ``x`` into domain ``y_trg`` with latent codes ``z`` or reference images ``x_ref``.

    Exactly one of ``z`` ([K, latent_dim], one code per output) and ``x_ref`` ([K, 3, S, S], images
    of domain ``y_trg``) is given. A batch of one on either side is broadcast against the other, so
    one source with K codes gives K outputs. ``psi`` < 1 pulls latent styles towards the domain's
    mean style (``generator`` seeds that mean). Returns images [K, 3, S, S] in [-1, 1].
    """
    if (z is None) == (x_ref is None):
        raise ValueError("pass exactly one of z (latent-guided) or x_ref (reference-guided), "
                         f"got {'both' if z is not None else 'neither'}")
    check_images(x, "x", nets)
    codes = z if z is not None else x_ref
    if z is not None:
        _check_latents(z, nets)
    else:
        check_images(x_ref, "x_ref", nets)
        if psi != 1.0:
            raise ValueError(f"psi={psi} only applies to latent codes; leave psi=1.0 with x_ref")
    batch = max(x.size(0), codes.size(0))
    if {x.size(0), codes.size(0)} - {1, batch}:
        raise ValueError(f"x has {x.size(0)} images and {'z' if z is not None else 'x_ref'} has "
                         f"{codes.size(0)}; they must match or one of them must be 1")
    device = device_of(nets)
    y = domain_tensor(y_trg, batch, nets)
    with eval_mode(nets):
        if z is not None:
            s = latent_styles(nets, z.expand(batch, -1), y, psi, generator)
        else:
            s = nets.style_encoder(x_ref.to(device).expand(batch, -1, -1, -1), y)
        x = x.to(device)
        masks = masks_of(mask_fn, x)  # once per source, before one source is repeated for K codes
        if masks is not None:
            masks = tuple(m.expand(batch, -1, -1, -1) for m in masks)
        return nets.generator(x.expand(batch, -1, -1, -1), s, masks=masks)


# ----------------------------------------------------------------------------------------------
# Grids

@torch.inference_mode()
def cycle_grid(nets: Networks, x_src: torch.Tensor, y_src: torch.Tensor, x_ref: torch.Tensor,
               y_ref: torch.Tensor, mask_fn: MaskFn | None = None) -> torch.Tensor:
    """Rows: sources, references, sources in the references' styles, their reconstructions."""
    check_images(x_src, "x_src", nets)
    check_images(x_ref, "x_ref", nets)
    n = x_src.size(0)
    if x_ref.size(0) != n:
        raise ValueError(f"cycle_grid pairs each source with one reference: x_src has {n} images, "
                         f"x_ref has {x_ref.size(0)}")
    device = device_of(nets)
    x_src, x_ref = x_src.to(device), x_ref.to(device)
    y_src, y_ref = domain_tensor(y_src, n, nets), domain_tensor(y_ref, n, nets)
    with eval_mode(nets):
        x_fake = nets.generator(x_src, nets.style_encoder(x_ref, y_ref), masks=masks_of(mask_fn, x_src))
        x_rec = nets.generator(x_fake, nets.style_encoder(x_src, y_src), masks=masks_of(mask_fn, x_fake))
    return image_grid([x_src, x_ref, x_fake, x_rec], nrow=n)


@torch.inference_mode()
def latent_grid(nets: Networks, x_src: torch.Tensor, num_domains: int, z: torch.Tensor,
                psi: float = 1.0, generator: torch.Generator | None = None,
                mask_fn: MaskFn | None = None) -> torch.Tensor:
    """First row the sources, then one row per (target domain, latent code) pair.

    Row (y, k) translates every source with the style of ``z[k]`` in domain ``y``, pulled towards
    the domain's mean style by ``psi`` (1 = no truncation, 0 = the mean style itself);
    ``generator`` seeds the mean style's latent codes.
    """
    check_images(x_src, "x_src", nets)
    if not 1 <= num_domains <= num_domains_of(nets):
        raise ValueError(f"num_domains must be in 1..{num_domains_of(nets)} for these networks, "
                         f"got {num_domains}")
    _check_latents(z, nets)
    device = device_of(nets)
    n = x_src.size(0)
    x_src, z = x_src.to(device), z.to(device)
    rows = [x_src]
    masks = masks_of(mask_fn, x_src)
    with eval_mode(nets):
        for y in range(num_domains):
            # One mean per domain, so psi = 0 gives identical rows within a domain.
            mean = mean_style(nets, y, generator=generator) if psi != 1.0 else None
            y_k = torch.full((1,), y, dtype=torch.long, device=device)
            for z_k in z:
                s = _truncate(nets.mapping_network(z_k[None], y_k), mean, psi)  # [1, style_dim]
                rows.append(nets.generator(x_src, s.expand(n, -1), masks=masks))
    return image_grid(rows, nrow=n)


@torch.inference_mode()
def reference_grid(nets: Networks, x_src: torch.Tensor, x_ref: torch.Tensor,
                   y_ref: torch.Tensor, mask_fn: MaskFn | None = None) -> torch.Tensor:
    """The StarGAN v2 figure: sources across the top, references down the left (white corner).

    Cell (i, j) below the first row is source j in the style of reference i.
    """
    check_images(x_src, "x_src", nets)
    check_images(x_ref, "x_ref", nets)
    device = device_of(nets)
    x_src, x_ref = x_src.to(device), x_ref.to(device)
    y_ref = domain_tensor(y_ref, x_ref.size(0), nets)
    n = x_src.size(0)
    blank = torch.ones_like(x_src[:1])  # white in [-1, 1]
    rows = [torch.cat([blank, x_src])]
    masks = masks_of(mask_fn, x_src)
    with eval_mode(nets):
        styles = nets.style_encoder(x_ref, y_ref)  # [R, style_dim]
        for i in range(x_ref.size(0)):
            x_fake = nets.generator(x_src, styles[i:i + 1].expand(n, -1), masks=masks)
            rows.append(torch.cat([x_ref[i:i + 1], x_fake]))
    return image_grid(rows, nrow=n + 1)


def sample_grids(nets: Networks, x_val: torch.Tensor, y_val: torch.Tensor, num_images: int,
                 num_styles: int, psi: float = 1.0, seed: int = 0,
                 mask_fn: MaskFn | None = None) -> dict[str, torch.Tensor]:
    """The three standard grids ("cycle", "latent", "reference") on a validation batch.

    ``num_images`` sources are spread evenly over ``x_val`` (so over all domains when it is sorted
    by domain); the references are the same images shifted by one. ``seed`` fixes the latent codes
    and the mean style used by ``psi``.
    """
    device = device_of(nets)
    x_val, y_val = x_val.to(device), y_val.to(device)
    n = min(num_images, x_val.size(0))
    pick = torch.linspace(0, x_val.size(0) - 1, n).round().long().to(device)
    x_src, y_src = x_val[pick], y_val[pick]
    x_ref, y_ref = x_src.roll(1, 0), y_src.roll(1, 0)
    z = torch.randn(num_styles, latent_dim_of(nets), generator=torch.Generator().manual_seed(seed))
    return {
        "cycle": cycle_grid(nets, x_src, y_src, x_ref, y_ref, mask_fn=mask_fn),
        "latent": latent_grid(nets, x_src, num_domains_of(nets), z, psi=psi,
                              generator=torch.Generator().manual_seed(seed), mask_fn=mask_fn),
        "reference": reference_grid(nets, x_src, x_ref, y_ref, mask_fn=mask_fn),
    }
