"""``loss_aggregation``: the mini batch's global token mean (verl's model-engine workers) or the token mean per micro
batch weighted by its share of the sequences (verl's dp_actor before), against hand-written references."""

import pytest
import torch

from psftlib.config import ConfigError, TrainConfig
from psftlib.data import collate
from psftlib.logprobs import token_logprobs
from psftlib.objectives import psft_loss, sft_loss
from psftlib.train.step import backward_mini_batch, loss_divisors

MODES = ("global_token_mean", "micro_token_mean")


def _micro_batches(lengths: list[list[int]], width: int = 12, seed: int = 0):
    """Per micro batch: leaf log-probs [b, width] and a 0/1 mask whose row i has ``lengths[m][i]`` trained tokens."""
    g = torch.Generator().manual_seed(seed)
    out = []
    for rows in lengths:
        logp = (-torch.rand(len(rows), width, generator=g, dtype=torch.float64)).requires_grad_()
        mask = torch.zeros(len(rows), width, dtype=torch.float64)
        for i, n in enumerate(rows):
            mask[i, width - n :] = 1.0  # right-aligned responses, like a prompt then its response
        out.append((logp, mask))
    return out


def _accumulated_grads(ranks: list[list], mode: str, loss_fn) -> list[torch.Tensor]:
    """What the training step does: each rank divides its micro batches by :func:`loss_divisors` and
    backpropagates them one by one (the ranks' gradients are then summed, as the loop does)."""
    num_tokens = sum(float(mask.sum()) for mbs in ranks for _, mask in mbs)  # all_reduce over the ranks
    for mbs in ranks:
        divisors = loss_divisors(mode, [mask for _, mask in mbs], num_tokens, world=len(ranks))
        for (logp, mask), div in zip(mbs, divisors, strict=True):
            loss_fn(logp, mask, div).backward()
    return [logp.grad.clone() for mbs in ranks for logp, _ in mbs]


def _reference_grads(ranks: list[list], mode: str) -> list[torch.Tensor]:
    """The objective written directly, as verl states it, with every token of the mini batch in one expression:
    global: -sum(logp * mask) / N; micro: sum over micro batches of (b_m / B) * -(token mean of micro batch m)."""
    mbs = [mb for r in ranks for mb in r]
    if mode == "global_token_mean":
        n = sum(mask.sum() for _, mask in mbs)
        loss = -sum((logp * mask).sum() for logp, mask in mbs) / n
    else:
        sequences = sum(mask.shape[0] for _, mask in mbs)
        loss = -sum(mask.shape[0] / sequences * (logp * mask).sum() / mask.sum() for logp, mask in mbs)
    return list(torch.autograd.grad(loss, [logp for logp, _ in mbs]))


def _sft(logp, mask, div):
    return sft_loss(logp, mask, num_tokens=div)[0]


def _psft_at_ratio_one(logp, mask, div):  # old = current: r = 1, the first mini batch after a refresh
    return psft_loss(logp, logp.detach(), mask, num_tokens=div)[0]


@pytest.mark.parametrize("loss_fn", [_sft, _psft_at_ratio_one], ids=["sft", "psft"])
@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize(
    "lengths",
    [
        [
            [[3]],
            [[11]],
            [[5]],
            [[7]],
        ],  # one rank, four one-sequence micro batches (paper.yaml: micro_batch_size 1)
        [[[2, 9], [4, 4]], [[10, 1], [6, 3]]],  # two ranks, two two-sequence micro batches each
        [[[2, 9, 7], [4]], [[10, 1, 1], [12]]],  # unequal micro batches (mini batch per rank not a multiple)
    ],
    ids=["1rank", "2ranks", "ragged"],
)
def test_accumulated_gradient_equals_the_direct_computation(lengths, mode, loss_fn):
    ranks = [_micro_batches(rank_lengths, seed=r) for r, rank_lengths in enumerate(lengths)]
    got = _accumulated_grads(ranks, mode, loss_fn)
    want = _reference_grads(ranks, mode)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-6, atol=1e-9)


def test_closed_form_per_token_gradients():
    """SFT's gradient of a trained token's log-prob, written out: -1/N (global) and -(b_m/B)/n_m (micro)."""
    ranks = [_micro_batches([[3], [9]])]
    (a, mask_a), (b, mask_b) = ranks[0]
    glob = _accumulated_grads(ranks, "global_token_mean", _sft)
    assert torch.equal(glob[0], -mask_a / 12) and torch.equal(glob[1], -mask_b / 12)
    a.grad, b.grad = None, None
    micro = _accumulated_grads(ranks, "micro_token_mean", _sft)
    torch.testing.assert_close(micro[0], -mask_a * 0.5 / 3)
    torch.testing.assert_close(micro[1], -mask_b * 0.5 / 9)


def test_modes_differ_when_micro_batches_differ_in_length_and_agree_when_equal():
    def grads(lengths, mode):
        return torch.cat([g.flatten() for g in _accumulated_grads([_micro_batches(lengths)], mode, _sft)])

    unequal = [[5], [11], [2]]
    assert not torch.allclose(grads(unequal, MODES[0]), grads(unequal, MODES[1]))
    equal = [[5, 2], [3, 4], [6, 1]]  # seven trained tokens in every micro batch, different per sequence
    torch.testing.assert_close(grads(equal, MODES[0]), grads(equal, MODES[1]), rtol=1e-12, atol=0)


def test_the_training_step_uses_the_configured_aggregation(tiny_model_and_examples):
    """backward_mini_batch on a real model, one sequence per micro batch: global = the whole mini batch's token mean,
    micro = the mean over sequences of each sequence's token mean (both as one forward of the padded mini batch)."""
    model, tok, examples = tiny_model_and_examples
    mini = examples[:3]
    assert len({sum(e.loss_mask) for e in mini}) > 1  # the micro batches really differ in trained tokens
    whole = collate(mini, tok.pad_token_id)
    results = {}
    for mode in MODES:
        cfg = TrainConfig(objective="sft", train_batch_size=3, mini_batch_size=3, micro_batch_size=1,
                          loss_aggregation=mode)  # fmt: skip
        model.zero_grad()
        micro = [collate([e], tok.pad_token_id) for e in mini]
        backward_mini_batch(model, micro, "sft", cfg)
        got = [p.grad.clone() for p in model.parameters()]

        model.zero_grad()
        logp = token_logprobs(model, whole["input_ids"], whole["attention_mask"]).logprobs
        mask = whole["loss_mask"][:, 1:]
        if mode == "global_token_mean":
            loss = -(logp * mask).sum() / mask.sum()
        else:
            loss = -((logp * mask).sum(1) / mask.sum(1)).mean()
        loss.backward()
        for g, p in zip(got, model.parameters(), strict=True):
            torch.testing.assert_close(g, p.grad, rtol=1e-4, atol=1e-6)
        results[mode] = torch.cat([g.flatten() for g in got])
    assert not torch.allclose(results[MODES[0]], results[MODES[1]], rtol=1e-3, atol=1e-6)


def test_default_is_the_global_mean_and_an_unknown_mode_is_refused():
    assert TrainConfig().loss_aggregation == "global_token_mean"
    with pytest.raises(ConfigError, match="loss_aggregation"):
        TrainConfig(loss_aggregation="seq_mean")
    with pytest.raises(ValueError, match="loss_aggregation"):
        loss_divisors("seq_mean", [torch.ones(1, 2)], 2.0, 1)


def test_an_empty_micro_batch_mask_gives_no_gradient_and_no_nan():
    """Entropy selection can leave a micro batch with no trained token: its loss is 0, not 0/0."""
    (logp, mask), other = _micro_batches([[4], [3]])
    mask.zero_()
    _accumulated_grads([[(logp, mask), other]], "micro_token_mean", _sft)
    assert torch.equal(logp.grad, torch.zeros_like(logp)) and torch.isfinite(other[0].grad).all()
