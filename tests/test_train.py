"""The training loop: micro-batching, old-policy refresh, PSFT = SFT with one mini batch, determinism."""

import json
from copy import deepcopy as fresh_copy

import pytest
import torch

from psftlib.config import TrainConfig
from psftlib.data import collate
from psftlib.logprobs import token_logprobs
from psftlib.objectives import psft_loss
from psftlib.train import TIMING_KEYS, train


def _cfg(**kw):
    base = dict(
        train_batch_size=16,
        mini_batch_size=4,
        micro_batch_size=2,
        epochs=1.0,
        lr=1e-3,
        save_checkpoint=False,
        seed=0,
    )
    return TrainConfig(**{**base, **kw})


def test_mini_batch_whole_or_in_micro_batches_same_loss_and_gradient(tiny_model_and_examples):
    model, tok, examples = tiny_model_and_examples
    mini = examples[:6]
    whole = collate(mini, tok.pad_token_id)
    with torch.no_grad():
        old = token_logprobs(model, whole["input_ids"], whole["attention_mask"], with_stats=False).logprobs
    old = old + 0.2 * torch.randn_like(old)  # pretend the policy moved since the refresh
    num_tokens = whole["loss_mask"][:, 1:].sum()

    model.zero_grad()
    out = token_logprobs(model, whole["input_ids"], whole["attention_mask"])
    loss_whole, _ = psft_loss(out.logprobs, old, whole["loss_mask"][:, 1:], num_tokens=num_tokens)
    loss_whole.backward()
    grads_whole = [p.grad.clone() for p in model.parameters()]

    model.zero_grad()
    total = 0.0
    for lo, hi in ((0, 2), (2, 3), (3, 6)):
        mb = collate(mini[lo:hi], tok.pad_token_id)  # narrower padding than the whole batch
        width = mb["input_ids"].shape[1] - 1
        out = token_logprobs(model, mb["input_ids"], mb["attention_mask"])
        loss, _ = psft_loss(out.logprobs, old[lo:hi, :width], mb["loss_mask"][:, 1:], num_tokens=num_tokens)
        loss.backward()
        total += loss.item()
    assert total == pytest.approx(loss_whole.item(), rel=1e-5)
    for g_micro, g_whole in zip((p.grad for p in model.parameters()), grads_whole, strict=True):
        torch.testing.assert_close(g_micro, g_whole, rtol=1e-4, atol=1e-6)


def test_psft_with_one_mini_batch_per_train_batch_is_sft_parameter_for_parameter(
    tiny_model_and_examples, tmp_path
):
    model, tok, examples = tiny_model_and_examples
    sft_model, psft_model = fresh_copy(model), fresh_copy(model)
    kw = dict(train_batch_size=8, mini_batch_size=8, micro_batch_size=4, epochs=2.0)
    h_sft = train(
        _cfg(objective="sft", **kw), sft_model, examples, tmp_path / "sft", tok.pad_token_id, progress=False
    )
    h_psft = train(
        _cfg(objective="psft", **kw),
        psft_model,
        examples,
        tmp_path / "psft",
        tok.pad_token_id,
        progress=False,
    )
    assert len(h_sft) == len(h_psft) == 8
    for (name, p_sft), p_psft in zip(sft_model.named_parameters(), psft_model.parameters(), strict=True):
        assert torch.equal(p_sft, p_psft), name
    assert all(row["ratio_mean"] == 1.0 and row["clip_fraction_high"] == 0.0 for row in h_psft)
    # and the runs really moved the weights (the test would pass trivially otherwise)
    assert not torch.equal(next(sft_model.parameters()), next(model.parameters()))


def test_psft_with_several_mini_batches_differs_from_sft_and_refreshes_each_train_batch(
    tiny_model_and_examples, tmp_path
):
    model, tok, examples = tiny_model_and_examples
    cfg = _cfg(objective="psft", train_batch_size=16, mini_batch_size=4, lr=3e-2, clip_high=0.05)
    hist = train(cfg, fresh_copy(model), examples, tmp_path / "psft", tok.pad_token_id, progress=False)
    steps_per_refresh = 4
    assert len(hist) == 2 * steps_per_refresh
    for i, row in enumerate(hist):
        if i % steps_per_refresh == 0:  # first step after a refresh: old policy = current policy
            assert row["ratio_mean"] == 1.0 and row["approx_kl"] == 0.0
    later = [row for i, row in enumerate(hist) if i % steps_per_refresh]
    assert any(row["clip_fraction_high"] > 0 for row in later), "a large lr must push some ratios past 1+ε"


def test_same_config_and_seed_give_identical_metrics_and_weights(tiny_model_and_examples, tmp_path):
    model, tok, examples = tiny_model_and_examples
    runs = []
    for name in ("a", "b"):
        m = fresh_copy(model)
        train(_cfg(objective="psft"), m, examples, tmp_path / name, tok.pad_token_id, progress=False)
        rows = [json.loads(line) for line in open(tmp_path / name / "metrics.jsonl")]
        runs.append((m, [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows]))
    assert runs[0][1] == runs[1][1]
    for p, q in zip(runs[0][0].parameters(), runs[1][0].parameters(), strict=True):
        assert torch.equal(p, q)
    # a different seed shuffles differently
    m = fresh_copy(model)
    train(_cfg(objective="psft", seed=1), m, examples, tmp_path / "c", tok.pad_token_id, progress=False)
    rows = [json.loads(line) for line in open(tmp_path / "c" / "metrics.jsonl")]
    assert [r["nll"] for r in rows] != [r["nll"] for r in runs[0][1]]


def test_metrics_file_has_the_documented_keys_and_checkpoint_reloads(tiny_model_and_examples, tmp_path):
    from transformers import AutoModelForCausalLM

    from psftlib.train import METRIC_KEYS

    model, tok, examples = tiny_model_and_examples
    train(
        _cfg(objective="psft", save_checkpoint=True),
        model,
        examples,
        tmp_path,
        tok.pad_token_id,
        tokenizer=tok,
        progress=False,
    )
    rows = [json.loads(line) for line in open(tmp_path / "metrics.jsonl")]
    assert set(rows[0]) == set(METRIC_KEYS) - {"kl", "weight_mean"}  # psft logs all but the baselines
    assert [r["step"] for r in rows] == list(range(1, len(rows) + 1))
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "checkpoint"))
    for p, q in zip(model.parameters(), reloaded.parameters(), strict=True):
        assert torch.equal(p, q)
    assert not list(tmp_path.glob(".*tmp*")), "no temp files left behind"


def test_training_lowers_the_loss(tiny_model_and_examples, tmp_path):
    model, tok, examples = tiny_model_and_examples
    hist = train(
        _cfg(objective="sft", epochs=6.0, lr=1e-2, mini_batch_size=16, micro_batch_size=8),
        model,
        examples,
        tmp_path,
        tok.pad_token_id,
        progress=False,
    )
    assert hist[-1]["nll"] < hist[0]["nll"] - 0.5


def test_bad_batch_sizes_are_refused(tiny_model_and_examples, tmp_path):
    from psftlib.config import ConfigError

    model, tok, examples = tiny_model_and_examples
    with pytest.raises(ConfigError, match="train_batch_size"):
        train(_cfg(mini_batch_size=5), model, examples, tmp_path, tok.pad_token_id)
    with pytest.raises(ValueError, match="larger than the dataset"):
        train(_cfg(train_batch_size=64, mini_batch_size=4), model, examples, tmp_path, tok.pad_token_id)


def test_checkpoint_selection_keeps_the_best_in_domain_evaluation_ties_to_the_later(
    tiny_model_and_examples, tmp_path
):
    """Table 1's rule (psftlib.eval.selection_score): best mean in-domain avg@k after step 0, ties -> later."""
    from transformers import AutoModelForCausalLM

    from psftlib.eval import selection_score

    model, tok, examples = tiny_model_and_examples
    scripted = iter(
        [0.9, 0.1, 0.5, 0.2, 0.5, 0.3]
    )  # step 0 (the base: never selected), then steps 2, 4, 6, 8, 10
    snapshots = {}

    def evaluator(m):
        score = next(scripted)
        snapshots[len(snapshots)] = [p.detach().clone() for p in m.parameters()]
        return {
            "world_target_3/avg_at_k": score,
            "world_target_4/avg_at_k": score,
            "world_skill_sort/avg_at_k": 1.0,
        }

    select = lambda scores: selection_score(scores, ["world_target_3", "world_target_4"])  # noqa: E731
    rows = train(_cfg(objective="sft", epochs=5.0, mini_batch_size=16, micro_batch_size=4), model, examples,
                 tmp_path, tok.pad_token_id, tokenizer=tok, progress=False, evaluator=evaluator, eval_every=2,
                 select_checkpoint=select)  # fmt: skip
    assert len(rows) == 10 and len(snapshots) == 6
    chosen = json.loads((tmp_path / "selected.json").read_text())
    assert (
        chosen["step"] == 8 and chosen["score"] == 0.5 and chosen["final_step"] == 10
    )  # 0.5 at steps 4 and 8
    kept = AutoModelForCausalLM.from_pretrained(str(tmp_path / "selected"))
    for p, q in zip(snapshots[4], kept.parameters(), strict=True):
        assert torch.equal(p, q)
    assert selection_score({"world_skill_sort/avg_at_k": 1.0}, ["world_target_3"]) is None


def test_known_initial_scores_replace_the_step0_evaluation_and_change_nothing_else(
    tiny_model_and_examples, tmp_path
):
    """The base's in-training evaluation, computed once (psftlib.eval.write_initial_curves), stands in for each
    run's step 0: the curves, the metrics and the weights are those of a run that evaluated step 0 itself."""
    model, tok, examples = tiny_model_and_examples
    calls = []

    def evaluator(m):  # a function of the weights only, like the seeded real one
        calls.append(1)
        return {"weight_sum": float(sum(p.double().sum() for p in m.parameters()))}

    runs = {}
    for name, initial in (("evaluated", None), ("known", evaluator(model))):
        calls.clear()
        m = fresh_copy(model)
        train(_cfg(objective="psft"), m, examples, tmp_path / name, tok.pad_token_id, progress=False,
              evaluator=evaluator, eval_every=2, initial_scores=initial)  # fmt: skip
        rows = [json.loads(line) for line in open(tmp_path / name / "metrics.jsonl")]
        runs[name] = (m, [{k: v for k, v in r.items() if k not in TIMING_KEYS} for r in rows],
                      (tmp_path / name / "eval.jsonl").read_text(), len(calls))  # fmt: skip
    assert runs["evaluated"][2] == runs["known"][2]  # eval.jsonl byte for byte, step 0 included
    assert runs["evaluated"][1] == runs["known"][1]
    assert runs["known"][3] == runs["evaluated"][3] - 1  # step 0 was not evaluated again
    for p, q in zip(runs["evaluated"][0].parameters(), runs["known"][0].parameters(), strict=True):
        assert torch.equal(p, q)
