"""Loss terms on hand-made tensors, checked against values worked out by hand."""
from __future__ import annotations

import math

import pytest
import torch

from stargan import losses


def _sigmoid(v: float) -> float:
    return 1 / (1 + math.exp(-v))


def test_adversarial_real_target_is_minus_log_sigmoid():
    logits = torch.tensor([2.0, -1.0, 0.5, 0.0])
    expected = sum(-math.log(_sigmoid(v)) for v in logits.tolist()) / 4
    assert losses.adversarial(logits, 1.0).item() == pytest.approx(expected, rel=1e-6)


def test_adversarial_fake_target_is_minus_log_one_minus_sigmoid():
    logits = torch.tensor([2.0, -1.0, 0.5, 0.0])
    expected = sum(-math.log(1 - _sigmoid(v)) for v in logits.tolist()) / 4
    assert losses.adversarial(logits, 0.0).item() == pytest.approx(expected, rel=1e-6)


def test_adversarial_at_zero_logit_is_log2_and_is_stable_for_large_logits():
    assert losses.adversarial(torch.zeros(3), 1.0).item() == pytest.approx(math.log(2))
    assert losses.adversarial(torch.zeros(3), 0.0).item() == pytest.approx(math.log(2))
    big = losses.adversarial(torch.tensor([-200.0]), 1.0)   # -log(sigmoid(-200)) = 200 (softplus)
    assert torch.isfinite(big) and big.item() == pytest.approx(200.0)


def test_adversarial_gradient_wrt_logits():
    logits = torch.tensor([1.5, -0.5], requires_grad=True)
    losses.adversarial(logits, 1.0).backward()
    # d/dl -log(sigmoid(l)) = sigmoid(l) - 1, averaged over 2
    expected = torch.tensor([(_sigmoid(1.5) - 1) / 2, (_sigmoid(-0.5) - 1) / 2])
    torch.testing.assert_close(logits.grad, expected)


def test_r1_of_a_linear_critic_is_half_the_squared_weight_norm():
    w = torch.tensor([[1.0, -2.0], [0.5, 3.0]], requires_grad=True)   # |w|^2 = 1 + 4 + 0.25 + 9
    x = torch.randn(3, 2, 2).requires_grad_(True)
    d_out = (w * x).flatten(1).sum(1)                               # D(x_i) = sum(w * x_i)
    r1 = losses.r1_penalty(d_out, x)
    assert r1.item() == pytest.approx(0.5 * 14.25, rel=1e-6)
    # the graph is kept, so R1 can be differentiated w.r.t. D's parameters: d(0.5 |w|^2)/dw = w
    r1.backward()
    torch.testing.assert_close(w.grad, w.detach())


def test_r1_of_a_quadratic_critic():
    x = torch.tensor([[1.0, 2.0], [3.0, 0.0]], requires_grad=True)
    d_out = (x ** 2).sum(1)                 # grad 2x; |2x_0|^2 = 20, |2x_1|^2 = 36
    r1 = losses.r1_penalty(d_out, x)
    assert r1.item() == pytest.approx(0.5 * (20 + 36) / 2)   # = 14
    r1.backward()                           # R1 = mean_i |x_i|^2 * 2 -> dR1/dx = 2 x
    torch.testing.assert_close(x.grad, 2 * x.detach())


def test_r1_is_a_per_sample_sum_then_batch_mean():
    x = torch.tensor([[[1.0]], [[1.0]]], requires_grad=True)   # [2, 1, 1]
    d_out = torch.stack([3 * x[0].sum(), 1 * x[1].sum()])
    # grads 3 and 1 -> 0.5 * mean(9, 1) = 2.5
    assert losses.r1_penalty(d_out, x).item() == pytest.approx(2.5)


def test_style_reconstruction_is_mean_absolute_error():
    s_pred = torch.tensor([[1.0, -2.0], [0.0, 4.0]])
    s_trg = torch.tensor([[0.5, 1.0], [0.0, 1.0]])
    # |0.5| + |-3| + 0 + |3| = 6.5 over 4
    assert losses.style_reconstruction(s_pred, s_trg).item() == pytest.approx(6.5 / 4)


def test_cycle_consistency_is_mean_absolute_error():
    x_rec = torch.tensor([[[[0.0, 1.0], [-1.0, 0.5]]]])
    x_real = torch.tensor([[[[1.0, 1.0], [1.0, 0.0]]]])
    # 1 + 0 + 2 + 0.5 = 3.5 over 4
    assert losses.cycle_consistency(x_rec, x_real).item() == pytest.approx(3.5 / 4)


def test_diversity_sensitive_value_and_gradient_only_into_the_first_output():
    a = torch.tensor([1.0, -1.0, 2.0, 0.0], requires_grad=True)
    b = torch.tensor([0.0, 1.0, 2.5, -3.0], requires_grad=True)
    ds = losses.diversity_sensitive(a, b)
    assert ds.item() == pytest.approx((1 + 2 + 0.5 + 3) / 4)
    ds.backward()
    torch.testing.assert_close(a.grad, torch.tensor([1.0, -1.0, -1.0, 1.0]) / 4)
    assert b.grad is None


def test_diversity_sensitive_second_output_is_detached_even_through_a_shared_network():
    w = torch.tensor(2.0, requires_grad=True)
    x1, x2 = torch.tensor([1.0]), torch.tensor([3.0])
    losses.diversity_sensitive(w * x1, w * x2).backward()
    # loss = |w * 1 - (w * 3).detach()| = |w - 6| at w = 2 -> d/dw = sign(2 - 6) = -1;
    # without the detach it would be |w - 3w| = 2|w| -> d/dw = 2
    assert w.grad.item() == pytest.approx(-1.0)


@pytest.mark.parametrize("step, expected", [
    (0, 2.0), (25, 1.5), (50, 1.0), (99, 0.02), (100, 0.0), (150, 0.0), (10**6, 0.0)])
def test_lambda_ds_decays_linearly_to_zero(step, expected):
    assert losses.lambda_ds_at(step, 2.0, 100) == pytest.approx(expected)


def test_lambda_ds_without_decay_window_is_zero():
    assert losses.lambda_ds_at(0, 1.0, 0) == 0.0
    assert losses.lambda_ds_at(5, 1.0, -1) == 0.0


def test_lambda_ds_matches_the_official_running_decrement():
    # official code: after every iteration, lambda_ds -= initial / ds_iter
    initial, ds_iter, value = 1.0, 8, 1.0
    for step in range(12):
        assert losses.lambda_ds_at(step, initial, ds_iter) == pytest.approx(max(value, 0.0), abs=1e-12)
        if value > 0:
            value -= initial / ds_iter


# ---------------------------------------------------------------- StarGAN v1

def test_wasserstein_scores_real_up_and_fake_down():
    out = torch.tensor([[[[1.0, 3.0]]], [[[-2.0, 0.0]]]])   # [2, 1, 1, 2] patches, mean 0.5
    assert losses.wasserstein(out, real=True).item() == pytest.approx(-0.5)
    assert losses.wasserstein(out, real=False).item() == pytest.approx(0.5)


def test_gradient_penalty_of_a_linear_critic_is_exact():
    # D_src(x) = sum(w * x) has gradient w at every x, so GP = (||w|| - 1)^2 = (sqrt(14.25) - 1)^2
    w = torch.tensor([[1.0, -2.0], [0.5, 3.0]], requires_grad=True)
    x_hat = torch.randn(3, 1, 2, 2).requires_grad_(True)
    out_src = (w * x_hat).sum(dim=(2, 3), keepdim=True)   # [3, 1, 1, 1]
    gp = losses.gradient_penalty(out_src, x_hat)
    norm = math.sqrt(14.25)
    assert gp.item() == pytest.approx((norm - 1) ** 2, rel=1e-6)
    gp.backward()   # the graph is kept: d/dw (||w|| - 1)^2 = 2 (||w|| - 1) w / ||w||
    torch.testing.assert_close(w.grad, 2 * (norm - 1) * w.detach() / norm)


def test_gradient_penalty_is_zero_for_unit_gradients_and_sums_over_patches_per_image():
    x_hat = torch.zeros(2, 1, 1, 2, requires_grad=True)
    # a [B, 1, 1, 2] PatchGAN output; image i's gradient is (a_i, b_i) from its own two patches only
    scale = torch.tensor([[0.6, 0.8], [3.0, 4.0]])[:, None, None, :]
    gp = losses.gradient_penalty(scale * x_hat + 1.0, x_hat)
    assert gp.item() == pytest.approx((0.0 + (5.0 - 1.0) ** 2) / 2)   # norms 1 and 5


def test_domain_classification_multi_label_sums_bce_over_attributes_and_averages_over_the_batch():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    labels = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 1.0]])
    per_image = [sum(-math.log(_sigmoid(l)) if y else -math.log(1 - _sigmoid(l))
                     for l, y in zip(row_l, row_y))
                 for row_l, row_y in zip(logits.tolist(), labels.tolist())]
    expected = sum(per_image) / 2
    loss = losses.domain_classification(logits, labels, multi_label=True)
    assert loss.item() == pytest.approx(expected, rel=1e-6)


def test_domain_classification_single_label_is_cross_entropy():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.0, 3.0, -2.0]])
    labels = torch.tensor([2, 1])
    expected = sum(-math.log(math.exp(row[y]) / sum(math.exp(v) for v in row))
                   for row, y in zip(logits.tolist(), labels.tolist())) / 2
    loss = losses.domain_classification(logits, labels, multi_label=False)
    assert loss.item() == pytest.approx(expected, rel=1e-6)
