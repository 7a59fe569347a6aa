"""Every objective on hand-built per-token tensors: SFT, PSFT (eq. 2, 6, 7) and the baselines SFT-KL, DFT, iw-SFT."""

import math

import pytest
import torch

from psftlib.objectives import dft_loss, iw_sft_loss, k3_kl, psft_loss, sft_kl_loss, sft_loss


def _grad(loss_fn, logprobs):
    lp = logprobs.clone().requires_grad_(True)
    loss, metrics = loss_fn(lp)
    loss.backward()
    return loss.detach(), lp.grad, metrics


def test_sft_loss_is_token_mean_nll():
    logprobs = torch.tensor([[-1.0, -2.0, -3.0], [-4.0, -5.0, -6.0]])
    mask = torch.tensor([[0, 1, 1], [1, 0, 0]])
    loss, metrics = sft_loss(logprobs, mask)
    assert loss.item() == pytest.approx((2 + 3 + 4) / 3)
    assert metrics["nll"] == pytest.approx(3.0)
    assert metrics["num_tokens"] == 3


def test_psft_gradient_equals_sft_gradient_at_ratio_one():
    torch.manual_seed(0)
    logprobs = -torch.rand(3, 5) * 4
    mask = (torch.rand(3, 5) > 0.3).float()
    old = logprobs.clone()  # old policy = current policy => r = 1
    loss_p, grad_p, m = _grad(lambda lp: psft_loss(lp, old, mask), logprobs)
    _loss_s, grad_s, _ = _grad(lambda lp: sft_loss(lp, mask), logprobs)
    assert torch.equal(grad_p, grad_s)
    assert loss_p.item() == pytest.approx(-1.0)  # -mean(r) with r = 1
    assert m["ratio_mean"] == 1.0 and m["clip_fraction_high"] == 0.0 and m["approx_kl"] == 0.0


def test_tokens_above_one_plus_clip_high_get_exactly_zero_gradient():
    old = torch.log(torch.tensor([[0.1, 0.1, 0.1, 0.1]]))
    # ratios 2.0 (clipped high), 1.2 (inside), 0.5 (below 1 - clip_low: NOT clipped for A = 1), 1.29 (clipped)
    new = torch.log(torch.tensor([[0.2, 0.12, 0.05, 0.129]]))
    mask = torch.ones(1, 4)
    _, grad, m = _grad(lambda lp: psft_loss(lp, old, mask, clip_low=0.2, clip_high=0.28), new)
    ratios = torch.tensor([2.0, 1.2, 0.5, 1.29])
    assert grad[0, 0].item() == 0.0 and grad[0, 3].item() == 0.0
    # kept tokens: d(-r/N)/dlogp = -r/N
    assert grad[0, 1].item() == pytest.approx(-ratios[1].item() / 4, rel=1e-5)
    assert grad[0, 2].item() == pytest.approx(-ratios[2].item() / 4, rel=1e-5)
    assert m["clip_fraction_high"] == pytest.approx(0.5)
    assert m["clip_fraction_low"] == pytest.approx(0.25)
    assert m["ratio_max"] == pytest.approx(2.0, rel=1e-5)
    assert m["ratio_mean"] == pytest.approx(ratios.mean().item(), rel=1e-5)


def test_psft_loss_value_uses_clipped_constant_for_high_ratios():
    old = torch.zeros(1, 2)
    new = torch.tensor([[math.log(3.0), math.log(0.9)]])
    loss, _ = psft_loss(new, old, torch.ones(1, 2), clip_high=0.28)
    assert loss.item() == pytest.approx(-(1.28 + 0.9) / 2, rel=1e-6)


def test_no_clip_is_plain_importance_weighting():
    old = torch.zeros(1, 2)
    new = torch.tensor([[math.log(3.0), math.log(0.5)]])
    _, grad, m = _grad(lambda lp: psft_loss(lp, old, torch.ones(1, 2), clip_high=float("inf")), new)
    assert grad[0].tolist() == pytest.approx([-1.5, -0.25], rel=1e-6)
    assert m["clip_fraction_high"] == 0.0


def test_masked_tokens_contribute_nothing():
    old = torch.zeros(2, 3)
    new = -torch.rand(2, 3)
    mask = torch.tensor([[1, 0, 1], [0, 0, 1]])
    _, grad, _ = _grad(lambda lp: psft_loss(lp, old, mask), new)
    assert (grad[mask == 0] == 0).all() and (grad[mask == 1] != 0).all()


def test_extreme_log_ratio_is_clamped_not_inf():
    old = torch.tensor([[-100.0]])
    new = torch.tensor([[-0.1]])
    loss, grad, m = _grad(lambda lp: psft_loss(lp, old, torch.ones(1, 1), clip_high=float("inf")), new)
    assert math.isfinite(loss.item()) and torch.isfinite(grad).all()
    assert m["ratio_max"] == pytest.approx(math.exp(20), rel=1e-5)


@pytest.mark.parametrize("objective", ["sft", "psft"])
def test_global_token_mean_over_micro_batches_equals_whole(objective):
    torch.manual_seed(1)
    logprobs = -torch.rand(6, 7) * 3
    old = logprobs + 0.3 * torch.randn(6, 7)
    mask = (torch.rand(6, 7) > 0.4).float()

    def loss_fn(lp, o, m, n=None):
        return sft_loss(lp, m, n) if objective == "sft" else psft_loss(lp, o, m, num_tokens=n)

    whole = logprobs.clone().requires_grad_(True)
    loss_whole, _ = loss_fn(whole, old, mask)
    loss_whole.backward()

    parts = logprobs.clone().requires_grad_(True)
    n = mask.sum()
    total = 0.0
    for sl in (slice(0, 1), slice(1, 4), slice(4, 6)):  # uneven micro batches
        loss, _ = loss_fn(parts[sl], old[sl], mask[sl], n)
        loss.backward()
        total += loss.item()
    assert total == pytest.approx(loss_whole.item(), rel=1e-6)
    torch.testing.assert_close(parts.grad, whole.grad)
    # and a per-micro-batch mean (verl's flaw) would NOT match: the test can fail
    naive = sum(
        loss_fn(logprobs[sl], old[sl], mask[sl])[0].item() for sl in (slice(0, 1), slice(1, 4), slice(4, 6))
    )
    assert naive != pytest.approx(loss_whole.item(), rel=1e-3)


# ---- baselines ----


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
