"""Pixel measures beside the paper's: pairwise_l1 (diversity) and source_kept, on hand-made outputs."""
from __future__ import annotations

import pytest
import torch

from stargan.config import ModelConfig
from stargan.data import to_pil
from stargan.metrics.diversity import mean_pairwise_l1, source_kept
from stargan.nets.v2 import build_networks


def test_mean_pairwise_l1_by_hand():
    outs = torch.zeros(3, 2, 3, 4, 4)        # 3 outputs of 2 inputs
    outs[1, 0] = 0.5                         # input 0: pairs (0,1) 0.5, (0,2) 0, (1,2) 0.5
    outs[2, 1] = -1.0                        # input 1: pairs (0,1) 0, (0,2) 1, (1,2) 1
    assert mean_pairwise_l1(outs).tolist() == pytest.approx([1 / 3, 2 / 3])


@pytest.mark.parametrize("mode", ["latent", "reference"])
def test_source_kept_is_1_for_a_copy_half_for_a_halved_copy_0_for_a_style_only_generator(tmp_path, mode):
    nets = build_networks(ModelConfig(img_size=32, num_domains=2, latent_dim=4, style_dim=8, hidden_dim=16,
                                      max_conv_dim=16, base_dim=8, w_hpf=0))
    refs = [tmp_path / f"{k}.png" for k in range(3)]  # reference images of the target domain
    for ref in refs:
        to_pil(torch.rand(3, 32, 32) * 2 - 1).save(ref)
    x = torch.rand(5, 3, 32, 32) * 2 - 1

    def kept():
        return source_kept(nets, x, 1, mode, refs, 32, torch.Generator().manual_seed(0), None)

    nets.generator.encode_image = lambda x, masks=None: (x, {})
    nets.generator.decode_from = lambda features, s, masks=None: features[0] + s.mean()
    assert kept() == pytest.approx(1.0)
    nets.generator.decode_from = lambda features, s, masks=None: features[0] * 0.5 + s.mean()
    assert kept() == pytest.approx(0.5)
    nets.generator.decode_from = lambda features, s, masks=None: (torch.zeros_like(features[0])
                                                                  + s[:, :1, None, None])
    assert kept() == 0.0
    with pytest.raises(ValueError, match="at least two inputs"):
        source_kept(nets, x[:1], 1, mode, refs, 32, torch.Generator(), None)
