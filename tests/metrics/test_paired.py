"""Distances to the true translation, by hand."""
from __future__ import annotations

import pytest
import torch

from stargan.metrics.paired import PairedDistances


def test_l1_to_the_truth_leaves_out_outputs_of_the_namesake_reference():
    truth = torch.zeros(2, 3, 4, 4)                      # 2 inputs
    x = torch.full((2, 3, 4, 4), 0.5)                    # identity: 0.5 from the truth
    images = torch.stack([torch.full((2, 3, 4, 4), 0.25), torch.full((2, 3, 4, 4), -1.0)])  # 2 outputs each
    scored = torch.tensor([[True, True], [True, False]])  # input 1's second output used its namesake
    paired = PairedDistances()
    paired.add(images, x, truth, scored)
    assert paired.result() == pytest.approx({"paired_l1": (0.25 + 0.25 + 1.0) / 3, "paired_l1_identity": 0.5})


def test_streamed_batches_give_the_mean_over_all_outputs_and_lpips_when_given():
    class Distance(torch.nn.Module):  # a stand-in for LPIPS: the mean absolute difference
        def distance(self, a, b):
            return (a - b).abs().flatten(1).mean(1)

    paired = PairedDistances(Distance())
    truth = torch.zeros(1, 3, 4, 4)
    paired.add(torch.full((1, 1, 3, 4, 4), 0.2), torch.full((1, 3, 4, 4), 0.4), truth, torch.tensor([[True]]))
    paired.add(torch.full((1, 1, 3, 4, 4), 0.6), torch.full((1, 3, 4, 4), 0.8), truth, torch.tensor([[True]]))
    assert paired.result() == pytest.approx({"paired_l1": 0.4, "paired_l1_identity": 0.6,
                                             "paired_lpips": 0.4, "paired_lpips_identity": 0.6})


def test_a_measure_without_outputs_is_left_out():
    paired = PairedDistances()
    paired.add(torch.ones(1, 1, 3, 2, 2), torch.zeros(1, 3, 2, 2), torch.zeros(1, 3, 2, 2), torch.tensor([[False]]))
    assert paired.result() == {"paired_l1_identity": 0.0}


def test_the_console_sentence_says_whether_the_outputs_beat_doing_nothing():
    from stargan.metrics.paired import paired_note

    def note(l1, identity):
        return paired_note({"reference": {"mean": {"paired_l1": l1, "paired_l1_identity": identity}}})

    assert note(0.2, 0.35) == ("paired by name: reference-guided outputs are 0.2000 from the true translation "
                               "(mean L1, images in [-1, 1]), the unchanged sources 0.3500: nearer than the "
                               "unchanged sources")
    assert note(0.361, 0.351).endswith("no nearer than the unchanged sources: G keeps too little of its input, "
                                       "or follows its reference")
    assert paired_note({"latent": {"mean": {}}}) is None
