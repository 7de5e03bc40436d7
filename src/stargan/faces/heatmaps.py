"""From FAN's 98 landmark heatmaps to the two high-pass masks of StarGAN v2, and to landmark positions.

The steps, indices and exponents are those of the released model (its masks are what its generator
was trained with). Channel ranges are half-open [start, end) over the 98 landmarks (WFLW order:
0-32 face contour, 33-50 eyebrows, 51-59 nose, 60-75 eyes, 76-95 mouth, 96-97 pupils).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

MASK_SIZE = 256       # the masks' resolution, whatever the input's
TRUNCATE_BELOW = 0.1  # heatmap values below this are set to 0 before normalising
EPS = 1e-6            # keeps the min-max normalisation finite on flat maps

# (start, end, shift, power): shift by rows (n > 0 moves content up), then raise to the power.
SHAPING = (
    (8, 25, 0, 3),    # chin
    (33, 51, -7, 2),  # eyebrows
    (55, 60, 8, 4),   # nostrils
    (77, 82, -8, 4),  # upper lip
    (83, 88, 8, 4),   # lower lip
    (88, 96, -2, 3),  # inner lip
)
ZEROED = ((0, 8), (25, 33), (33, 34), (46, 47), (76, 77), (82, 83))  # contour sides, two brow ends, mouth corners
NOSE = (52, 55, 4)             # nose bridge below its first point: shift only
EYES = (60, 76, -8, 3, -24)    # eyes: power(shift(e, -8), 3) + shift(e, -24)
NOT_IN_FINE = ((8, 25), (76, 96), (33, 51))  # chin, mouth and eyebrows are left out of the fine mask


def shift_rows(h: torch.Tensor, n: int) -> torch.Tensor:
    """Circular shift along the height axis: row i takes row (i + n) mod H (n > 0 moves content up)."""
    return torch.roll(h, shifts=-n, dims=2) if n else h


def upsample_heatmaps(heatmaps: torch.Tensor) -> torch.Tensor:
    """N x C x 64 x 64 -> N x C x 256 x 256 (bilinear, corners aligned)."""
    return F.interpolate(heatmaps, size=MASK_SIZE, mode="bilinear", align_corners=True)


def normalise_heatmaps(h: torch.Tensor) -> torch.Tensor:
    """Zero values below 0.1, then min-max normalise each (image, channel) map to [0, 1)."""
    h = torch.where(h < TRUNCATE_BELOW, torch.zeros_like(h), h)
    low = h.amin(dim=(2, 3), keepdim=True)
    high = h.amax(dim=(2, 3), keepdim=True)
    return (h - low) / (high - low + EPS)


def mask_sources(h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised N x 98 x H x W heatmaps -> per-landmark sources of the (coarse, fine) masks."""
    h = h.clone()
    for start, end, shift, power in SHAPING:
        h[:, start:end] = shift_rows(h[:, start:end], shift) ** power
    for start, end in ZEROED:
        h[:, start:end] = 0
    start, end, shift = NOSE
    h[:, start:end] = shift_rows(h[:, start:end], shift)
    start, end, shift_a, power, shift_b = EYES
    eyes = h[:, start:end]
    h[:, start:end] = shift_rows(eyes, shift_a) ** power + shift_rows(eyes, shift_b)
    fine = h.clone()
    for start, end in NOT_IN_FINE:
        fine[:, start:end] = 0
    return h, fine


def sum_to_mask(sources: torch.Tensor) -> torch.Tensor:
    """N x C x H x W -> N x 1 x H x W: the channel sum, NaN set to 0, clamped to [0, 1]."""
    return torch.nan_to_num(sources.sum(dim=1, keepdim=True), nan=0.0).clamp(0, 1)


def masks_from_heatmaps(heatmaps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """FAN's N x 98 x 64 x 64 landmark heatmaps -> (coarse, fine) masks, each N x 1 x 256 x 256.

    The coarse mask (with the chin, eyebrows and lips) is used at G's 32 px stage, the fine one at 64
    and 128 px.
    """
    coarse, fine = mask_sources(normalise_heatmaps(upsample_heatmaps(heatmaps)))
    return sum_to_mask(coarse), sum_to_mask(fine)


def landmarks_from_heatmaps(heatmaps: torch.Tensor, input_size: int) -> torch.Tensor:
    """N x L x 64 x 64 heatmaps -> N x L x 2 positions (x, y) in pixels of an input_size image.

    The argmax of each map, moved a quarter pixel towards its larger neighbour in each direction
    (where the peak is not on the border), as the release does; vectorised over images and landmarks.
    """
    n, num, height, width = heatmaps.shape
    flat = heatmaps.reshape(n, num, height * width)
    index = flat.argmax(dim=2)
    col, row = index % width, index // width
    interior = (col > 0) & (col < width - 1) & (row > 0) & (row < height - 1)

    def at(r: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        r, c = r.clamp(0, height - 1), c.clamp(0, width - 1)
        return flat.gather(2, (r * width + c).unsqueeze(2)).squeeze(2)

    dx = at(row, col + 1) - at(row, col - 1)
    dy = at(row + 1, col) - at(row - 1, col)
    step = 0.25 * torch.stack([dx.sign(), dy.sign()], dim=2) * interior.unsqueeze(2)
    # 1-based positions (col + 1, row + 1), refined, minus half a pixel.
    points = torch.stack([col, row], dim=2).to(heatmaps.dtype) + 1 + step - 0.5
    # The release multiplies by input_size // 64; the same for its sizes (multiples of 64), exact for all.
    return points * (input_size / height)
