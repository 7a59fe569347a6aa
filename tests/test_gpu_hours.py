"""benchmarks/gpu_hours.py: the paper DAG's GPU-hours from a GPU check's JSON follow tokens / scaled tokens/s / 3600
(checked by hand for a training and a GRPO row), every train / grpo / dpo / eval instance has a row, and a CPU
result or a missing file is refused with the file named."""

import json
import sys

import pytest

from psftlib.config import Profile, load_profile
from psftlib.layout import ROOT, Layout

sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_hours

SHAPE = {
    "hidden": 1536,
    "layers": 28,
    "heads": 12,
    "kv_heads": 2,
    "intermediate": 8960,
    "vocab": 151_936,
    "seq": 4096,
    "examples": 96,
    "train_batch": 32,
    "micro_batch": 4,
    "chunk": 1024,
}  # fmt: skip  (gpu_check 1.5b)
# matmul parameters by hand: the check's 1.5B shape (head dim 128, tied) and Qwen2.5-7B (config.json, untied)
N_BENCH = 28 * (1536 * 1536 * 2 + 1536 * 256 * 2 + 3 * 1536 * 8960) + 151_936 * 1536  # 1,543,569,408
N_QWEN7B = 28 * (3584 * 3584 * 2 + 3584 * 512 * 2 + 3 * 3584 * 18944) + 152_064 * 3584  # 7,070,289,824


def bench_json(tmp_path, gpu=True, vllm=2000.0, name="2026-12-01_NVIDIA-H200.json"):
    """A summary of gpu_check.py's schema with tokens/s of our choosing."""
    summary = {"device": "NVIDIA H200" if gpu else "CPU x86_64", "gpu_result": gpu, "preset": "1.5b", "shape": SHAPE,
               "rows": {"sft": {"tokens_per_s": 40_000.0, "peak_gib": 50.0}, "psft": {"tokens_per_s": 32_000.0}},
               "eval": {"hf_new_tokens": 2048, "hf_tokens_per_s": 500.0, **({"vllm_tokens_per_s": vllm} if vllm else {})}}  # fmt: skip
    path = tmp_path / name
    path.write_text(json.dumps(summary))
    return path


@pytest.fixture
def prof(tmp_path, monkeypatch):
    """The paper profile with its data folder in tmp_path (empty: the named assumptions are used)."""
    monkeypatch.setattr(Profile, "layout", property(lambda self: Layout(self.name, root=tmp_path)))
    return load_profile("paper")


def test_the_scaled_parameter_counts_match_the_model_cards():
    assert gpu_hours.bench_params(SHAPE) == N_BENCH == 1_543_569_408
    assert gpu_hours.matmul_params(gpu_hours.MODELS["qwen25_7b"]) == N_QWEN7B
    for role, arch in gpu_hours.MODELS.items():
        assert gpu_hours.total_params(arch) == pytest.approx(arch.card_total, rel=0.015), role
    # Qwen3-30B-A3B: the card's 3.3B activated, less the 0.31B input embedding (a lookup): ~3.0B in matmuls
    assert gpu_hours.matmul_params(gpu_hours.MODELS["qwen3_30b_a3b"]) == pytest.approx(
        3.3e9 - 151_936 * 2048, rel=0.03
    )


def test_rows_follow_tokens_over_scaled_throughput(tmp_path, prof):
    rates = gpu_hours.Rates.of(gpu_hours.load_benchmark(bench_json(tmp_path)))
    rows = {(r.rule, r.instance): r for r in gpu_hours.estimate(prof, rates)}
    # PSFT (Table 11: 10 epochs) on OpenR1-Math-8192 (46,000 x 4,096 tokens assumed), the psft row's 32,000 tokens/s
    n, per, _ = gpu_hours.ASSUMED_DATA["openr1_math_8192"]
    psft = rows[("train", "psft")]
    assert psft.tokens == n * per * 10 == 1_884_160_000
    assert psft.hours == pytest.approx(1_884_160_000 / (32_000 * N_BENCH / N_QWEN7B) / 3600)  # 74.9 GPU-hours
    assert psft.hours == pytest.approx(74.9, abs=0.05) and psft.gpus == 8
    assert rows[("train", "sft")].hours == pytest.approx(1_884_160_000 / (40_000 * N_BENCH / N_QWEN7B) / 3600)
    # GRPO (Table 12): 100 steps x 256 prompts x 8 responses x 10,240 / 2 tokens, at vLLM's 2,000 tokens/s scaled
    roll = rows[("grpo", "sft+grpo (rollouts)")]
    assert roll.tokens == 100 * 256 * 8 * 5120 == 1_048_576_000
    assert roll.hours == pytest.approx(1_048_576_000 / (2000 * N_BENCH / N_QWEN7B) / 3600)  # 667.1
    update = rows[("grpo", "sft+grpo (update)")]
    assert update.tokens == 204_800 * (1024 + 5120)
    assert update.hours == pytest.approx(update.tokens / (32_000 * N_BENCH / N_QWEN7B) / 3600)
    assert rows[("grpo", "vlm_sft+grpo (rollouts)")].tokens == 204_800 * 2560  # §4.4: 5k responses
    # wall time of a 1-GPU eval equals its GPU-hours; a curve evaluation holds all 8 GPUs of its train job
    curves = rows[("train", "psft (curves)")]
    assert curves.hours == pytest.approx(curves.tokens / (2000 * N_BENCH / N_QWEN7B) / 3600 * 8)


def test_every_rule_instance_of_the_paper_dag_has_a_row(tmp_path, prof, capsys):
    rates = gpu_hours.Rates.of(gpu_hours.load_benchmark(bench_json(tmp_path)))
    rows = gpu_hours.estimate(prof, rates)
    by_rule = lambda rule: {r.instance.split(" (")[0] for r in rows if r.rule == rule}  # noqa: E731
    assert by_rule("train") == set(prof.runs)
    assert {r.instance for r in rows if r.rule == "train" and "(" not in r.instance} == set(prof.runs)
    for stage in ("grpo", "dpo"):
        assert by_rule(stage) == {f"{c}+{stage}" for c in prof.cold_starts(stage)}
    assert len([r for r in rows if r.rule == "grpo"]) == 2 * len(prof.cold_starts("grpo"))
    evals = [r.instance for r in rows if r.rule == "eval"]
    assert evals == [f"{run} / {s}" for run, s in prof.evaluations(prof.all_runs + prof.selected_runs)]
    assert by_rule("judge") == {*prof.cold_starts("dpo"), *(f"{c}+dpo" for c in prof.cold_starts("dpo"))}
    assert all(r.hours is not None and r.hours > 0 and r.tokens > 0 for r in rows)
    out = tmp_path / "table.md"
    assert gpu_hours.main(["--benchmark", str(bench_json(tmp_path)), "--out", str(out)]) == 0
    text = out.read_text()
    assert text == capsys.readouterr().out.rstrip("\n") + "\n"
    assert text.count("\n| ") == len(rows) + 1  # header + one line per row
    total = sum(r.hours for r in rows)
    assert f"**Total: {total:,.0f} GPU-hours** over {len(rows)} of {len(rows)} rows" in text
    assert "openr1_math_8192`: 46,000 examples" in text  # the dataset assumption, stated


def test_without_a_generation_throughput_those_rows_say_so(tmp_path, prof):
    bench = json.loads(bench_json(tmp_path).read_text())
    del bench["eval"]
    rows = gpu_hours.estimate(prof, gpu_hours.Rates.of(bench))
    gen = [
        r
        for r in rows
        if r.rule in ("eval", "judge") or "(rollouts)" in r.instance or "(curves)" in r.instance
    ]
    assert gen and all(r.hours is None and r.source == "needs a generation throughput" for r in gen)
    assert all(r.hours is not None for r in rows if r not in gen)


def test_measured_data_replace_the_assumptions(tmp_path, prof, monkeypatch):
    import transformers

    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(transformers.AutoTokenizer, "from_pretrained", offline)
    data = prof.layout.data / "openr1_code_8192.jsonl"
    data.parent.mkdir(parents=True)
    data.write_text(json.dumps({"system": "s" * 3, "prompt": "p" * 40, "response": "r" * 356}) + "\n")
    n, tokens, why = gpu_hours.dataset_tokens(prof, "openr1_code_8192")
    assert (n, tokens) == (1, (3 + 1 + 40 + 1 + 356 + 1) / 4) and why.startswith("measured")


def test_a_cpu_result_or_a_missing_file_is_refused_naming_it(tmp_path, capsys, monkeypatch):
    cpu = bench_json(tmp_path, gpu=False, name="2026-12-02_cpu.json")
    assert gpu_hours.main(["--benchmark", str(cpu)]) == 2
    err = capsys.readouterr().err
    assert str(cpu) in err and '"gpu_result" is False' in err
    missing = tmp_path / "nope.json"
    assert gpu_hours.main(["--benchmark", str(missing)]) == 2
    assert f"{missing}: no such benchmark file" in capsys.readouterr().err
    # default: the newest GPU result (a newer CPU file is skipped), the table beside it
    monkeypatch.setattr(gpu_hours, "RESULTS", tmp_path)
    gpu = bench_json(tmp_path)
    assert gpu_hours.newest_gpu_benchmark() == gpu
    assert gpu_hours.main([]) == 0 and (tmp_path / f"gpu_hours_{gpu.stem}.md").exists()
    gpu.unlink()
    assert gpu_hours.main([]) == 2 and f"{tmp_path}: no GPU check result" in capsys.readouterr().err
