"""The paper's baselines (SFT-KL, DFT, iw-SFT) on hand-built per-token tensors."""

import math

import pytest
import torch

from psftlib.objectives import dft_loss, iw_sft_loss, k3_kl, sft_kl_loss


def _grad(fn, logprobs):
    lp = logprobs.clone().requires_grad_(True)
    loss, metrics = fn(lp)
    loss.backward()
    return loss.detach(), lp.grad, metrics


def test_k3_is_zero_when_policy_equals_reference_and_positive_otherwise():
    lp = torch.tensor([[-1.0, -2.0, -0.5]])
    assert torch.equal(k3_kl(lp, lp), torch.zeros_like(lp))
    ref = lp + torch.tensor([[0.5, -0.5, 2.0]])
    kl = k3_kl(lp, ref)
    x = torch.tensor([0.5, -0.5, 2.0])
    torch.testing.assert_close(kl[0], torch.exp(x) - x - 1)
    assert (kl > 0).all()


def test_sft_kl_at_reference_is_sft_in_value_and_gradient():
    torch.manual_seed(0)
    lp = -torch.rand(2, 4) * 3
    mask = torch.ones(2, 4)
    loss, grad, m = _grad(lambda x: sft_kl_loss(x, lp.clone(), mask, kl_coef=0.5), lp)
    assert m["kl"] == 0.0
    assert loss.item() == pytest.approx(-lp.mean().item(), rel=1e-6)
    torch.testing.assert_close(grad, torch.full_like(lp, -1 / 8))  # the k3 term has zero gradient at ref


def test_sft_kl_pulls_towards_reference():
    lp = torch.log(torch.tensor([[0.5]]))
    ref = torch.log(torch.tensor([[0.1]]))  # policy above the reference: KL gradient pushes logp down
    _, g0, _ = _grad(lambda x: sft_kl_loss(x, ref, torch.ones(1, 1), kl_coef=0.0), lp)
    _, g1, m = _grad(lambda x: sft_kl_loss(x, ref, torch.ones(1, 1), kl_coef=0.5), lp)
    assert g1.item() > g0.item()  # less negative: a smaller push up
    # d/dlogp [exp(ref-logp) - (ref-logp) - 1] = 1 - exp(ref-logp) = 1 - 0.2
    assert g1.item() - g0.item() == pytest.approx(0.5 * 0.8, rel=1e-5)
    assert m["kl"] == pytest.approx(0.2 - math.log(0.2) - 1, rel=1e-5)


def test_sft_kl_full_estimator_needs_full_kl():
    lp = torch.zeros(1, 2)
    with pytest.raises(ValueError, match="full_kl"):
        sft_kl_loss(lp, lp, torch.ones(1, 2), estimator="full")
    loss, m = sft_kl_loss(lp, lp, torch.ones(1, 2), kl_coef=2.0, estimator="full", full_kl=torch.ones(1, 2))
    assert loss.item() == pytest.approx(2.0) and m["kl"] == 1.0


def test_dft_weight_is_detached_probability():
    lp = torch.log(torch.tensor([[0.9, 0.1, 0.5]]))
    mask = torch.tensor([[1.0, 1.0, 0.0]])
    loss, grad, m = _grad(lambda x: dft_loss(x, mask), lp)
    # gradient is -p / N per token (the weight is not differentiated), zero where masked
    torch.testing.assert_close(grad, torch.tensor([[-0.45, -0.05, 0.0]]))
    assert loss.item() == pytest.approx(-(0.9 * math.log(0.9) + 0.1 * math.log(0.1)) / 2, rel=1e-6)
    assert m["weight_mean"] == pytest.approx(0.5)


def test_iw_sft_token_weights_are_clipped_and_detached():
    ref = torch.zeros(1, 4)
    lp = torch.log(torch.tensor([[0.05, 0.5, 1.5, 3.0]]))  # only lp - ref matters: ratios 0.05 .. 3.0
    w = torch.exp(lp - ref)
    _loss, grad, m = _grad(lambda x: iw_sft_loss(x, ref, torch.ones(1, 4), clip=(0.2, 1.8)), lp)
    expected_w = w.clamp(0.2, 1.8)
    torch.testing.assert_close(grad, -expected_w / 4, rtol=1e-4, atol=1e-6)
    assert m["clip_fraction_low"] == 0.25 and m["clip_fraction_high"] == 0.25


def test_iw_sft_sequence_level_uses_one_weight_per_sequence():
    ref = torch.zeros(2, 3)
    lp = torch.tensor([[-0.1, -0.1, -0.1], [0.2, 0.2, 0.0]])
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    _, grad, _ = _grad(lambda x: iw_sft_loss(x, ref, mask, level="sequence"), lp)
    w0, w1 = math.exp(-0.3), min(math.exp(0.4), 1.8)
    torch.testing.assert_close(grad, -torch.tensor([[w0, w0, w0], [w1, w1, 0.0]]) / 5, rtol=1e-5, atol=1e-7)
