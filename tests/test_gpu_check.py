"""benchmarks/gpu_check.py end to end in its tiny CPU mode: every row of issue 18's table runs, the summary has the
ratios and targets, and a CPU run judges no target (its timings are no GPU result)."""

import json
import sys

import pytest

from psftlib.layout import ROOT

sys.path.insert(0, str(ROOT / "benchmarks"))
import gpu_check


def test_the_tiny_cpu_run_measures_every_row(tmp_path, capsys):
    out = tmp_path / "summary.json"
    assert gpu_check.main(["--tiny", "--device", "cpu", "--out", str(out)]) == 0
    summary = json.loads(out.read_text())
    assert json.loads(capsys.readouterr().out) == summary
    assert summary["gpu_result"] is False and "no GPU result" in summary["note"]
    assert summary["preset"] == "tiny" and summary["shape"] == gpu_check.SHAPES["tiny"]
    assert list(summary["rows"]) == list(gpu_check.ROWS)
    shape = summary["shape"]
    per_batch = shape["train_batch"] * shape["seq"]
    for name, row in summary["rows"].items():
        assert "error" not in row, (name, row)
        assert row["train_batches"] == shape["examples"] // shape["train_batch"] and row["tokens_per_s"] > 0
        if "mix" not in name:  # fixed-length rows: every train batch after the first, all its tokens
            assert row["steady_tokens"] == per_batch * (row["train_batches"] - 1), name
    rows = summary["rows"]
    assert (
        rows["psft"]["optimizer_steps"]
        == rows["sft_8_steps"]["optimizer_steps"]
        > rows["sft"]["optimizer_steps"]
    )
    assert rows["trl_sft"]["optimizer_steps"] == rows["sft"]["optimizer_steps"]
    assert set(summary["ratios"]) >= {"psft_over_sft_time", "sft_over_trl_speed", "sft_over_plain_speed",
                                      "chunked_over_full_time", "padding_free_over_padded_time_mix"}  # fmt: skip
    assert summary["ratios"]["mix_padding_free_final_loss_abs_diff"] < 1e-5  # packing = padding, in fp32
    assert [t["target"] for t in summary["targets"]] == [t[0] for t in gpu_check.TARGETS]
    assert all(t["met"] is None for t in summary["targets"])  # never judged on a CPU
    assert summary["head"]["entropy_abs_diff"] < 1e-5
    assert summary["mix_lengths"]["min"] < summary["mix_lengths"]["max"] <= shape["seq"]


def test_a_cpu_run_writes_no_result_file_by_default_and_rejects_unknown_rows(tmp_path, monkeypatch):
    monkeypatch.setattr(gpu_check, "ROOT", tmp_path)
    assert gpu_check.main(["--tiny", "--device", "cpu", "--rows", "sft"]) == 0
    assert not (tmp_path / "benchmarks").exists()  # benchmarks/results holds GPU results only
    with pytest.raises(ValueError, match="unknown row 'nope'"):
        gpu_check.run_row(
            "nope", None, {"fixed": [], "mix": []}, gpu_check.SHAPES["tiny"], None, "sdpa", "sdpa"
        )


def test_length_mix_and_examples_have_the_lengths_asked():
    tok = gpu_check.build_tokenizer(300)
    lengths = gpu_check.length_mix(20, 256, seed=3)
    assert min(lengths) >= 256 // 16 and max(lengths) <= 256 and len(set(lengths)) > 5
    examples = gpu_check.make_examples(tok, 0, 256, lengths=lengths)
    assert [len(e.input_ids) for e in examples] == lengths
