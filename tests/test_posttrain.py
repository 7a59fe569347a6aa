"""GRPO and DPO from a saved cold start, through TRL, on the smoke profile."""

import json

import pytest
import torch

from psftlib.config import load_profile
from psftlib.data import read_jsonl
from psftlib.post.grpo import GRPOSettings, correctness_reward, overlong_reward


def test_correctness_reward_uses_the_harness_answer_check():
    completions = [[{"role": "assistant", "content": "3 + 4 = 7 . so the answer is \\boxed{ 7 }"}],
                   [{"role": "assistant", "content": "so the answer is \\boxed{ 8 }"}],
                   [{"role": "assistant", "content": "so the answer is 7"}],
                   "\\boxed{\\frac{14}{2}}"]  # fmt: skip
    assert correctness_reward(completions, answer=["7", "7", "7", "7"]) == [1.0, 0.0, 0.0, 1.0]


def test_overlong_reward_is_dapos_soft_punishment():
    reward = overlong_reward(max_completion_length=20, buffer=5)
    assert reward([[0] * 10, [0] * 15, [0] * 18, [0] * 20, [0] * 25]) == pytest.approx(
        [0.0, 0.0, -0.6, -1.0, -1.0]
    )


def test_grpo_settings_map_the_papers_batches_onto_trl():
    cfg = GRPOSettings(micro_batch_size=16).trl_config(__import__("pathlib").Path("/tmp/x"))
    # 256 prompts x 8 samples per round, 32 prompts x 8 per optimizer step -> 8 steps per round
    assert cfg.generation_batch_size == 256 * 8
    assert cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps == 32 * 8
    assert cfg.steps_per_generation // cfg.gradient_accumulation_steps == 8
    assert (cfg.epsilon, cfg.epsilon_high, cfg.beta, cfg.loss_type) == (0.2, 0.28, 0.0, "dapo")
    assert cfg.max_steps == 100 * 8


@pytest.fixture(scope="module")
def cold_start(smoke_world, tmp_path_factory):
    from transformers import AutoModelForCausalLM

    from psftlib.data import encode_all
    from psftlib.train import train
    from psftlib.worlds.build import load_tokenizer

    out = tmp_path_factory.mktemp("cold")
    tok = load_tokenizer(smoke_world / "world" / "base")
    model = AutoModelForCausalLM.from_pretrained(str(smoke_world / "world" / "base"))
    examples, _ = encode_all(tok, read_jsonl(smoke_world / "data" / "train.jsonl"))
    cfg = load_profile("smoke").run_config("sft", {"epochs": 1.0})
    train(cfg, model, examples, out, tok.pad_token_id, tokenizer=tok, progress=False)
    return out / "checkpoint"


@pytest.mark.slow
def test_grpo_runs_logs_reward_and_entropy_and_saves_a_reloadable_checkpoint(
    cold_start, smoke_world, tmp_path
):
    from transformers import AutoModelForCausalLM

    from psftlib.post.grpo import run_grpo

    section = {
        k: v for k, v in load_profile("smoke")["grpo"].items() if k not in ("cold_starts", "eval_every")
    }
    prompts = read_jsonl(smoke_world / "data" / "rl.jsonl", required=("prompt", "answer"))
    rows = run_grpo(cold_start, prompts, GRPOSettings(**section), tmp_path)
    assert len(rows) == section["train_batches"] * section["train_batch_size"] // section["mini_batch_size"]
    lines = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert lines == rows
    assert all("entropy" in r and "clip_fraction_high" in r for r in rows)
    assert "reward" in rows[0] and "rewards/correctness_reward/mean" in rows[0]
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "checkpoint"))
    start = AutoModelForCausalLM.from_pretrained(str(cold_start))
    assert any(not torch.equal(a, b) for a, b in zip(reloaded.parameters(), start.parameters(), strict=True))
    assert not (tmp_path / ".trl").exists()


@pytest.mark.slow
def test_dpo_runs_and_logs_chosen_and_rejected_rewards(cold_start, smoke_world, tmp_path):
    from psftlib.post.dpo import DPOSettings, run_dpo

    section = {
        k: v for k, v in load_profile("smoke")["dpo"].items() if k not in ("cold_starts", "eval_every")
    }
    pairs = read_jsonl(smoke_world / "data" / "prefs.jsonl", required=("prompt", "chosen", "rejected"))
    rows = run_dpo(cold_start, pairs, DPOSettings(**section), tmp_path)
    assert len(rows) == len(pairs) // section["batch_size"]
    for key in ("reward_chosen", "reward_rejected", "reward_margin", "reward_accuracy", "entropy", "loss"):
        assert all(key in r for r in rows), key
    assert rows[0]["reward_chosen"] == 0.0  # policy = reference at the first step
    assert (tmp_path / "checkpoint" / "config.json").exists()


def test_a_bad_cold_start_path_is_named(tmp_path, smoke_world):
    from psftlib.post.grpo import run_grpo

    with pytest.raises(FileNotFoundError, match=str(tmp_path / "missing")):
        run_grpo(tmp_path / "missing", [], GRPOSettings(), tmp_path / "out")


def test_post_training_batches_count_every_process_once():
    """A DPO step takes ``batch_size`` pairs and a GRPO step ``mini_batch_size`` prompts over all processes together
    (accelerate multiplies the per-device batch by the process count)."""
    from pathlib import Path

    from psftlib.post.dpo import DPOSettings
    from psftlib.post.grpo import GRPOSettings

    for n in (1, 2, 8):
        dpo = DPOSettings(batch_size=64, micro_batch_size=2).trl_config(Path("/tmp/psft-d"), processes=n)
        assert dpo.per_device_train_batch_size * dpo.gradient_accumulation_steps * n == 64
        g = GRPOSettings(train_batch_size=256, mini_batch_size=32, micro_batch_size=8, num_generations=8)
        cfg = g.trl_config(Path("/tmp/psft-g"), processes=n)
        assert (
            cfg.per_device_train_batch_size * cfg.gradient_accumulation_steps * n == 32 * 8
        )  # completions/step
        assert (
            cfg.per_device_train_batch_size * cfg.steps_per_generation * n == 256 * 8
        )  # completions/generation
    with pytest.raises(ValueError, match="micro_batch_size 2 x 64 processes"):
        DPOSettings(batch_size=64, micro_batch_size=2).trl_config(Path("/tmp/psft-d"), processes=64)
