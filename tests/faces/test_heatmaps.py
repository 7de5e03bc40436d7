"""Heatmaps to masks and landmarks, checked on hand-made heatmaps: every shift, exponent and zeroed
channel range of the release, the second (fine) mask, and the quarter-pixel landmark refinement."""
from __future__ import annotations

import pytest
import torch

from stargan.faces.heatmaps import (landmarks_from_heatmaps, mask_sources, masks_from_heatmaps,
                                    normalise_heatmaps, shift_rows, upsample_heatmaps)

SIZE = 256
ROW, COL, VALUE = 100, 4, 0.5  # the single non-zero pixel of a one-hot heatmap
WIDTH = 8  # shifts act on rows only: a narrow map keeps the tests fast


def one_hot(channel: int, row: int = ROW, value: float = VALUE) -> torch.Tensor:
    h = torch.zeros(1, 98, SIZE, WIDTH, dtype=torch.float64)
    h[0, channel, row, COL] = value
    return h


def pixels(mask: torch.Tensor) -> dict[int, float]:
    """{row: value} of the non-zero pixels of a 1 x C x H x W tensor (all in column COL)."""
    total = mask.sum(dim=1)[0]
    nonzero = total.nonzero().tolist()
    assert all(c == COL for _, c in nonzero), nonzero
    return {r: pytest.approx(total[r, c].item()) for r, c in nonzero}


# (first channel, last channel (exclusive), rows moved down, power, in the fine mask)
SHAPED = [
    (8, 25, 0, 3, False),     # chin: power 3, no shift
    (34, 46, 7, 2, False),    # eyebrows (33 and 46 are zeroed): shift -7, power 2
    (47, 51, 7, 2, False),
    (55, 60, -8, 4, True),    # nostrils: shift 8 (up), power 4
    (77, 82, 8, 4, False),    # upper lip: shift -8 (down), power 4
    (83, 88, -8, 4, False),   # lower lip: shift 8, power 4
    (88, 96, 2, 3, False),    # inner lip: shift -2, power 3
    (51, 52, 0, 1, True),     # nose tip's first point keeps its place
    (52, 55, -4, 1, True),    # the rest of the nose: shift 4 (up), no power
    (96, 98, 0, 1, True),     # pupils: unchanged
]


@pytest.mark.parametrize("start,end,down,power,in_fine", SHAPED)
def test_each_range_is_shifted_raised_and_kept_or_dropped_from_the_fine_mask(start, end, down, power, in_fine):
    for channel in range(start, end):
        coarse, fine = mask_sources(one_hot(channel))
        assert pixels(coarse) == {ROW + down: VALUE ** power}, channel
        assert pixels(fine) == ({ROW + down: VALUE ** power} if in_fine else {}), channel


@pytest.mark.parametrize("channels", [range(0, 8), range(25, 33), [33], [46], [76], [82]])
def test_zeroed_channels_reach_neither_mask(channels):
    for channel in channels:
        coarse, fine = mask_sources(one_hot(channel))
        assert not coarse.any() and not fine.any(), channel


def test_eyes_add_a_cubed_copy_8_rows_down_and_a_plain_copy_24_rows_down():
    for channel in range(60, 76):
        coarse, fine = mask_sources(one_hot(channel))
        expected = {ROW + 8: VALUE ** 3, ROW + 24: VALUE}
        assert pixels(coarse) == expected and pixels(fine) == expected, channel


def test_shifts_wrap_around_the_height_axis():
    assert pixels(mask_sources(one_hot(60, row=SIZE - 4))[0]) == {4: VALUE ** 3, 20: VALUE}
    assert pixels(mask_sources(one_hot(55, row=3))[0]) == {SIZE - 5: VALUE ** 4}
    h = torch.arange(5.0).view(1, 1, 5, 1)
    assert shift_rows(h, 2).flatten().tolist() == [2, 3, 4, 0, 1]  # row i takes row i + 2


def test_sources_do_not_change_their_input():
    h = one_hot(60)
    mask_sources(h)
    assert h.sum() == VALUE


def test_normalise_truncates_below_0_1_then_min_max_per_image_and_channel():
    h = torch.full((2, 98, 4, 4), 0.05, dtype=torch.float64)
    h[0, 3, 1, 1], h[0, 3, 2, 2] = 0.2, 0.6   # min 0 (truncated), max 0.6
    h[1, 3] = 0.3                              # flat map: stays ~0
    h[1, 3, 0, 0] = 0.09
    out = normalise_heatmaps(h)
    assert out[0, 3, 1, 1].item() == pytest.approx(0.2 / (0.6 + 1e-6))
    assert out[0, 3, 2, 2].item() == pytest.approx(0.6 / (0.6 + 1e-6))
    assert out[0, 3, 0, 0].item() == 0
    assert out[1, 3, 1, 1].item() == pytest.approx(0.3 / (0.3 + 1e-6))  # the truncated 0.09 is the min
    assert not out[0, 4].any()  # all below 0.1


def test_upsampling_aligns_corners():
    h = torch.zeros(1, 98, 64, 64, dtype=torch.float64)
    h[0, :, 0, 0], h[0, :, 63, 63] = 1.0, 2.0
    up = upsample_heatmaps(h)
    assert up.shape == (1, 98, 256, 256)
    assert up[0, 0, 0, 0].item() == 1.0 and up[0, 0, 255, 255].item() == 2.0


def test_masks_from_heatmaps_sum_clamp_and_clear_nan():
    h = torch.zeros(3, 98, 64, 64, dtype=torch.float64)
    # 64 px rows 21 and 42 land exactly on 256 px rows 85 and 170 (corners aligned).
    h[0, 96, 21, 21] = 1.0           # a pupil: in both masks
    h[0, 10, 42, 42] = 0.5           # chin: coarse only
    h[1, 60:76, 20, 30] = 1.0        # 16 eye maps on one spot: sum > 1 is clamped
    h[2, 97, 0, 0] = float("nan")    # a NaN spreads through its map's min-max and the sum: mask 0
    coarse, fine = masks_from_heatmaps(h)
    assert coarse.shape == fine.shape == (3, 1, 256, 256)
    assert coarse[0, 0, 85, 85].item() == pytest.approx(1.0, abs=1e-5)   # pupil peak, unshifted
    assert fine[0, 0, 85, 85].item() == pytest.approx(1.0, abs=1e-5)
    assert coarse[0, 0, 170, 170].item() == pytest.approx(1.0, abs=1e-5)  # chin peak, normalised to 1
    assert coarse[0, 0, 171, 170].item() == pytest.approx((1 - 63 / 255) ** 3, abs=1e-5)  # then cubed
    assert fine[0, 0, 170, 170].item() == 0 and fine[0, 0, 171, 170].item() == 0
    assert coarse[1].max().item() == 1.0 and fine[1].max().item() == 1.0
    assert not coarse[2].any() and not fine[2].any()
    assert coarse.min().item() >= 0


def _naive_landmarks(h: torch.Tensor, input_size: int) -> torch.Tensor:
    """The release's per-landmark loop, written out (reference for the vectorised version)."""
    n, num, height, width = h.shape
    out = torch.zeros(n, num, 2, dtype=h.dtype)
    for i in range(n):
        for j in range(num):
            index = int(h[i, j].flatten().argmax())
            x, y = index % width + 1, index // width + 1   # 1-based
            px, py = x - 1, y - 1
            point = torch.tensor([float(x), float(y)], dtype=h.dtype)
            if 0 < px < width - 1 and 0 < py < height - 1:
                diff = torch.stack([h[i, j, py, px + 1] - h[i, j, py, px - 1],
                                    h[i, j, py + 1, px] - h[i, j, py - 1, px]])
                point += diff.sign() * 0.25
            out[i, j] = (point - 0.5) * (input_size // 64)
    return out


def test_landmarks_refine_towards_the_larger_neighbour():
    h = torch.zeros(1, 3, 64, 64)
    h[0, 0, 10, 20] = 1.0
    h[0, 0, 10, 21], h[0, 0, 10, 19] = 0.5, 0.2   # right > left: +0.25 in x
    h[0, 0, 9, 20], h[0, 0, 11, 20] = 0.5, 0.2    # up > down: -0.25 in y
    h[0, 1, 0, 5] = 1.0                           # on the border: no refinement
    h[0, 1, 1, 5] = 0.9
    h[0, 2, 30, 30] = 1.0                         # equal neighbours: no move
    points = landmarks_from_heatmaps(h, 256)
    assert points[0, 0].tolist() == [(21 + 0.25 - 0.5) * 4, (11 - 0.25 - 0.5) * 4]
    assert points[0, 1].tolist() == [(6 - 0.5) * 4, (1 - 0.5) * 4]
    assert points[0, 2].tolist() == [(31 - 0.5) * 4, (31 - 0.5) * 4]
    assert landmarks_from_heatmaps(h, 128)[0, 2].tolist() == [(31 - 0.5) * 2] * 2


def test_landmarks_equal_the_per_landmark_loop_on_random_heatmaps():
    h = torch.rand(3, 98, 64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    h[0, :, 0, :] += 2  # peaks on the border too
    torch.testing.assert_close(landmarks_from_heatmaps(h, 512), _naive_landmarks(h, 512), rtol=0, atol=0)
