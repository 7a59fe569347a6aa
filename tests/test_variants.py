"""PSFT variants and the baselines run through the one loop; telemetry and the data length policy."""

import math
from copy import deepcopy

import pandas as pd
import pytest
import torch

from psftlib.config import TrainConfig
from psftlib.data import encode_all
from psftlib.train import Plan, backward_mini_batch, train
from psftlib.train.plan import micro_batches
from psftlib.train.refresh import refresh


def _cfg(**kw):
    base = dict(train_batch_size=16, mini_batch_size=4, micro_batch_size=2, epochs=1.0, lr=3e-2,
                save_checkpoint=False, seed=0)  # fmt: skip
    return TrainConfig(**{**base, **kw})


def _run(tiny, tmp_path, **kw):
    model, tok, examples = tiny
    return train(
        _cfg(**kw), deepcopy(model), examples, tmp_path, tok.pad_token_id, tokenizer=tok, progress=False
    )


@pytest.mark.parametrize("objective", ["sft_kl", "dft", "iw_sft"])
def test_baselines_train_and_log_their_metrics(tiny_model_and_examples, tmp_path, objective):
    hist = _run(tiny_model_and_examples, tmp_path, objective=objective, mini_batch_size=16, micro_batch_size=8,
                epochs=3.0)  # fmt: skip
    assert hist[-1]["nll"] < hist[0]["nll"]
    key = {"sft_kl": "kl", "dft": "weight_mean", "iw_sft": "weight_mean"}[objective]
    assert key in hist[0]
    if objective == "sft_kl":
        assert hist[0]["kl"] == 0.0 and hist[-1]["kl"] > 0.0  # zero at the initial model, grows after


def test_full_vocabulary_kl_estimator_runs(tiny_model_and_examples, tmp_path):
    hist = _run(tiny_model_and_examples, tmp_path, objective="sft_kl", kl_estimator="full", mini_batch_size=16,
                micro_batch_size=8, epochs=2.0)  # fmt: skip
    assert hist[0]["kl"] == pytest.approx(0.0, abs=1e-6) and hist[-1]["kl"] > 0


def test_refresh_every_k_mini_batches(tiny_model_and_examples, tmp_path):
    hist = _run(tiny_model_and_examples, tmp_path, objective="psft", old_policy_refresh=2, epochs=2.0)
    for i, row in enumerate(hist):
        fresh = row["ratio_mean"] == 1.0 and row["approx_kl"] == 0.0
        assert fresh == (i % 2 == 0), (i, row["ratio_mean"])


def test_refresh_never_measures_ratios_against_the_initial_model(tiny_model_and_examples, tmp_path):
    hist = _run(tiny_model_and_examples, tmp_path, objective="psft", old_policy_refresh="never", epochs=2.0)
    assert hist[0]["ratio_mean"] == pytest.approx(1.0, abs=1e-5)
    first_of_later_batches = [row for i, row in enumerate(hist) if i % 4 == 0 and i > 0]
    assert all(abs(row["ratio_mean"] - 1.0) > 1e-3 for row in first_of_later_batches)


def test_no_clip_never_clips(tiny_model_and_examples, tmp_path):
    hist = _run(tiny_model_and_examples, tmp_path, objective="psft", clip_high=float("inf"))
    assert all(row["clip_fraction_high"] == 0.0 for row in hist)
    assert max(row["ratio_max"] for row in hist) > 1.28  # ratios did leave the region; nothing was clipped


def test_sft_warmup_then_psft(tiny_model_and_examples, tmp_path):
    hist = _run(tiny_model_and_examples, tmp_path, objective="psft", sft_warmup_train_batches=1, sft_warmup_lr=1e-2,
                epochs=2.0)  # fmt: skip
    warm, psft = hist[:4], hist[4:]
    assert all("ratio_mean" not in row and row["lr"] == 1e-2 for row in warm)
    assert all("ratio_mean" in row and row["lr"] == 3e-2 for row in psft)
    assert psft[0]["ratio_mean"] == 1.0


def test_entropy_selected_psft_trains_only_the_chosen_tokens(tiny_model_and_examples):
    model, tok, examples = tiny_model_and_examples
    cfg = _cfg(objective="psft", entropy_top_fraction=0.2)
    plan = Plan(cfg, len(examples))
    pending = refresh(model, None, examples, plan, 0, tok.pad_token_id, torch.device("cpu"))
    assert sorted(pending) == [0, 1, 2, 3]
    masks = [(mb["loss_mask"][:, 1:]) for s in range(4) for mb in micro_batches(examples, plan.indices(s), cfg,
             tok.pad_token_id, "cpu")]  # fmt: skip
    selected = torch.cat([sel.flatten() for s in range(4) for sel in pending[s]["select"]])
    total = torch.cat([m.flatten() for m in masks]).sum()
    assert selected.sum() / total == pytest.approx(0.2, abs=0.03)
    # the gradient of a mini batch with selection = the gradient of PSFT on the selected tokens only
    micro = micro_batches(examples, plan.indices(1), cfg, tok.pad_token_id, "cpu")
    m1 = deepcopy(model)
    parts, _ = backward_mini_batch(m1, micro, "psft", cfg, pending[1]["old"], pending[1]["select"])
    assert sum(p["num_tokens"] for p in parts) == sum(float(s.sum()) for s in pending[1]["select"])
    m2 = deepcopy(model)
    for mb, sel in zip(micro, pending[1]["select"], strict=True):
        mb["loss_mask"] = torch.cat([mb["loss_mask"][:, :1], sel], dim=1)  # the selection as the mask
    backward_mini_batch(m2, micro, "psft", cfg, pending[1]["old"], None)
    for p, q in zip(m1.parameters(), m2.parameters(), strict=True):
        torch.testing.assert_close(p.grad, q.grad)


@pytest.mark.parametrize("entropy_top_fraction", [None, 0.3])
def test_refresh_in_fuller_forwards_gives_the_same_old_logprobs(
    tiny_model_and_examples, entropy_top_fraction
):
    """``refresh_batch_size`` only regroups the refresh's no-grad forwards (5: groups that straddle mini batches)."""
    model, tok, examples = tiny_model_and_examples
    results = {}
    for size in (None, 5, 64):
        cfg = _cfg(objective="psft", refresh_batch_size=size, entropy_top_fraction=entropy_top_fraction)
        plan = Plan(cfg, len(examples))
        results[size] = refresh(model, None, examples, plan, 0, tok.pad_token_id, torch.device("cpu"))
    for size in (5, 64):
        assert sorted(results[size]) == sorted(results[None])
        for s, got in results[size].items():
            want = results[None][s]
            assert [o is None for o in got["old"]] == [o is None for o in want["old"]]
            for a, b in zip(got["old"], want["old"], strict=True):
                if b is not None:
                    assert a.shape == b.shape  # each micro batch at its own padded width
                    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-5)
            if entropy_top_fraction is not None:
                for a, b in zip(got["select"], want["select"], strict=True):
                    assert (a != b).float().mean() < 0.01  # ties at the quantile may flip a token


def test_token_telemetry_parquet(tiny_model_and_examples, tmp_path):
    hist = _run(tiny_model_and_examples, tmp_path, objective="psft", token_sample_rate=0.5, clip_high=0.05)
    df = pd.read_parquet(tmp_path / "tokens.parquet")
    from psftlib.train import TOKEN_COLUMNS

    assert list(df.columns) == list(TOKEN_COLUMNS)
    n_trained = sum(row["trained_tokens"] for row in hist)
    assert 0.35 * n_trained < len(df) < 0.65 * n_trained
    assert df["clipped"].equals(df["ratio"] > 1.05)
    assert set(df["step"]) <= set(range(1, len(hist) + 1))
    assert df["token_text"].str.len().min() > 0 and not df["token_text"].str.fullmatch(r"\d+<\|").any()


def test_length_policy_drops_or_truncates_and_counts(tiny_model_and_examples):
    _, tok, _ = tiny_model_and_examples
    rows = [{"prompt": "compute 1 + 2", "response": "1 + 2 = 3 . answer : 3"},
            {"prompt": "compute 1 + 2 + 3", "response": "1 + 2 = 3 . 3 + 3 = 6 . wait , let me check : 6 . answer : 6"}]  # fmt: skip
    full = [len(encode_all(tok, [r])[0][0].input_ids) for r in rows]
    limit = (full[0] + full[1]) // 2
    kept, rep = encode_all(tok, rows, max_length=limit, truncation="drop")
    assert len(kept) == 1 and rep.n_dropped == 1 and rep.n_kept == 1
    kept, rep = encode_all(tok, rows, max_length=limit, truncation="truncate")
    assert len(kept) == 2 and rep.n_truncated == 1 and len(kept[1].input_ids) == limit
    assert kept[1].input_ids[-1] != tok.eos_token_id  # a cut demonstration has no EOS


def test_lora_trains_adapters_and_saves_a_merged_checkpoint(tiny_model_and_examples, tmp_path):
    from transformers import AutoModelForCausalLM

    model, tok, examples = tiny_model_and_examples
    before = {k: v.clone() for k, v in model.state_dict().items()}
    hist = train(_cfg(objective="iw_sft", lora_r=4, save_checkpoint=True), deepcopy(model), examples, tmp_path,
                 tok.pad_token_id, tokenizer=tok, progress=False)  # fmt: skip
    assert hist[0]["weight_mean"] == pytest.approx(1.0, abs=1e-5)  # reference = adapters disabled = start
    merged = AutoModelForCausalLM.from_pretrained(str(tmp_path / "checkpoint"))
    changed = [k for k, v in merged.state_dict().items() if k in before and not torch.equal(v, before[k])]
    assert changed and all("proj" in k or "mlp" in k for k in changed)


def test_gradient_checkpointing_changes_memory_not_maths(tiny_model_and_examples, tmp_path):
    plain = _run(tiny_model_and_examples, tmp_path / "a", objective="psft")
    ckpt = _run(tiny_model_and_examples, tmp_path / "b", objective="psft", gradient_checkpointing=True)
    for a, b in zip(plain, ckpt, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], rel=1e-5) and a["grad_norm"] == pytest.approx(
            b["grad_norm"], rel=1e-4
        )


def test_traces_hold_every_trained_token_of_the_traced_demonstrations(tiny_model_and_examples, tmp_path):
    _, _, examples = tiny_model_and_examples
    hist = _run(tiny_model_and_examples, tmp_path, objective="psft", trace_examples=2, clip_high=0.05)
    df = pd.read_parquet(tmp_path / "traces.parquet")
    assert set(df["example"]) == {0, 1} and not (tmp_path / "tokens.parquet").exists()
    for (example, step), part in df.groupby(["example", "step"]):
        ex = examples[example]
        part = part.sort_values("position")
        assert list(part["position"]) == [p for p in range(1, len(ex.input_ids)) if ex.loss_mask[p]]
        assert list(part["token_id"]) == [ex.input_ids[p] for p in part["position"]]
        assert 1 <= step <= len(hist)
    assert (df.groupby("example")["step"].nunique() == int(_cfg().epochs)).all()  # traced once per epoch


@pytest.mark.parametrize("refresh_batch_size", [None, 64])
def test_old_policy_runs_in_the_training_precision(tiny_model_and_examples, refresh_batch_size):
    """At unchanged weights r = 1 up to bf16 rounding when the refresh and the training forward share the autocast
    (here CPU bf16, as a GPU's bf16 run does), also when the refresh's forwards are wider than the micro batches."""
    model, tok, examples = tiny_model_and_examples
    cfg = _cfg(objective="psft", refresh_batch_size=refresh_batch_size)
    plan = Plan(cfg, len(examples))
    bf16 = lambda: torch.autocast("cpu", dtype=torch.bfloat16)  # noqa: E731
    ratios = {}
    for name, refresh_autocast in (("shared", bf16), ("fp32 refresh", None)):
        pending = refresh(
            model, None, examples, plan, 0, tok.pad_token_id, torch.device("cpu"), refresh_autocast
        )
        micro = micro_batches(examples, plan.indices(1), cfg, tok.pad_token_id, "cpu")
        parts, _ = backward_mini_batch(
            deepcopy(model), micro, "psft", cfg, pending[1]["old"], None, None, bf16
        )
        ratios[name] = (max(p["ratio_max"] for p in parts), max(p["clip_fraction_high"] for p in parts))
    # measured on the smoke model: shared 1.0 exactly at both refresh widths; an fp32 refresh 1.00099
    assert ratios["shared"][0] <= math.exp(2e-2) and ratios["shared"][1] == 0.0
    assert ratios["shared"][0] < ratios["fp32 refresh"][0]  # the precision gap the shared autocast removes
