"""The paper's own numbers in results/paper/ load, are tidy and numeric, and match psft.txt where checked by hand."""

from __future__ import annotations

import re

import pandas as pd
import pytest

from psftlib.report.paper import PAPER_DIR, load_paper_table

TABLES = sorted(p.stem for p in PAPER_DIR.glob("*.csv"))
REQUIRED = ["model", "method", "method_id", "benchmark", "benchmark_id", "domain", "setting", "value"]
DOMAINS = {"in_domain", "out_of_domain", "alignment", "hyperparameter"}
PLAIN_NUMBER = re.compile(r"^-?\d+(\.\d+)?([eE]-?\d+)?$")


def test_every_expected_table_is_there():
    numbers = {int(re.match(r"table(\d+)_", t).group(1)) for t in TABLES}
    # Table 16 (alignment-tax task names) has no numbers, so it is not transcribed.
    assert numbers == {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 17}


@pytest.mark.parametrize("name", TABLES)
def test_table_is_tidy_and_numeric(name):
    df = load_paper_table(name)
    assert len(df) > 0
    assert not set(REQUIRED) - set(df.columns), f"{name}: missing {set(REQUIRED) - set(df.columns)}"
    assert pd.api.types.is_float_dtype(df["value"])
    assert set(df["domain"]) <= DOMAINS
    hyper = df["domain"] == "hyperparameter"
    assert not df.loc[~hyper, "value"].isna().any(), f"{name}: a result cell is not numeric"
    if hyper.any():
        assert hyper.all()
        # value is empty exactly where the printed cell is not a plain number (e.g. "10k")
        plain = df["value_text"].str.match(PLAIN_NUMBER)
        assert (df["value"].notna() == plain).all()
        assert (df.loc[plain, "value"] == df.loc[plain, "value_text"].astype(float)).all()
    key = ["model", "method_id", "benchmark_id", "setting"] + (["parameter_id"] if hyper.any() else [])
    dup = df[df.duplicated(key, keep=False)]
    assert dup.empty, f"{name}: duplicate keys\n{dup[key]}"
    assert (df["source_line"].between(1, 368)).all()


def test_missing_table_names_file_and_lists_the_others():
    with pytest.raises(FileNotFoundError) as err:
        load_paper_table("table99_nope")
    assert "table99_nope.csv" in str(err.value)
    assert "table1_sft_main" in str(err.value)


def test_readme_names_every_table():
    readme = (PAPER_DIR / "README.md").read_text(encoding="utf-8")
    for name in TABLES:
        assert f"{name}.csv" in readme, name


QWEN, LLAMA = "Qwen2.5-7B-Instruct", "Llama3.1-8B-Instruct"

# (table, filters, expected value) — each checked by hand against /work/shared/paper/psft.txt.
SPOT = [
    (
        "table1_sft_main",
        {"model": QWEN, "method_id": "psft_warmup", "benchmark_id": "aime24"},
        22.92,
    ),  # psft.txt:62
    (
        "table1_sft_main",
        {"model": LLAMA, "method_id": "psft", "benchmark_id": "ifeval"},
        69.75,
    ),  # psft.txt:75
    (
        "table1_sft_main",
        {"model": QWEN, "method_id": "sft_kl", "benchmark_id": "avg_out_of_domain"},
        57.38,
    ),  # psft.txt:76
    ("table2_grpo", {"model": QWEN, "method_id": "psft+grpo", "benchmark_id": "gpqa"}, 43.43),  # psft.txt:97
    (
        "table2_grpo",
        {"model": LLAMA, "method_id": "sft+grpo", "benchmark_id": "minerva"},
        33.09,
    ),  # psft.txt:95
    (
        "table2_grpo",
        {"model": LLAMA, "method_id": "psft+grpo", "benchmark_id": "avg_out_of_domain"},
        61.96,
    ),  # psft.txt:104
    (
        "table3_dpo_alignment",
        {"method_id": "psft_prolong+dpo", "benchmark_id": "alpacaeval_lc"},
        23.29,
    ),  # psft.txt:119
    ("table3_dpo_alignment", {"method_id": "sft+dpo", "benchmark_id": "arena_hard"}, 26.50),  # psft.txt:115
    ("table3_dpo_alignment", {"method_id": "psft", "benchmark_id": "mt_bench_2"}, 5.84),  # psft.txt:116
    ("table4_vlm_text", {"method_id": "sft", "benchmark_id": "mmlu"}, 45.39),  # psft.txt:133
    ("table4_vlm_text", {"method_id": "psft", "benchmark_id": "aime25"}, 10.73),  # psft.txt:128
    ("table4_vlm_text", {"method_id": "base", "benchmark_id": "olympiad"}, 29.44),  # psft.txt:131
    ("table5_vlm_multimodal", {"method_id": "psft+grpo", "benchmark_id": "geo3k"}, 50.58),  # psft.txt:142
    ("table5_vlm_multimodal", {"method_id": "sft+grpo", "benchmark_id": "mmmu_pro"}, 19.60),  # psft.txt:140
    ("table5_vlm_multimodal", {"method_id": "base+grpo", "benchmark_id": "mathvista"}, 71.10),  # psft.txt:138
    (
        "table6_update_frequency",
        {"method_id": "psft_refresh_never", "benchmark_id": "ifeval"},
        76.46,
    ),  # psft.txt:153
    (
        "table6_update_frequency",
        {"method_id": "psft_refresh16", "benchmark_id": "aime25"},
        23.54,
    ),  # psft.txt:154
    (
        "table6_update_frequency",
        {"method_id": "psft_refresh4", "benchmark_id": "truthfulqa"},
        66.72,
    ),  # psft.txt:156
    ("table7_entropy_tokens", {"method_id": "psft", "benchmark_id": "aime24"}, 26.98),  # psft.txt:262
    ("table7_entropy_tokens", {"method_id": "psft_entA", "benchmark_id": "aime25"}, 28.65),  # psft.txt:263
    (
        "table7_entropy_tokens",
        {"method_id": "psft_entB", "benchmark_id": "truthfulqa"},
        63.71,
    ),  # psft.txt:264
    ("table8_moe_30b", {"method_id": "psft", "benchmark_id": "ifeval"}, 88.52),  # psft.txt:271
    ("table8_moe_30b", {"method_id": "sft", "benchmark_id": "aime24"}, 59.89),  # psft.txt:272
    ("table8_moe_30b", {"method_id": "sft", "benchmark_id": "truthfulqa"}, 77.89),  # psft.txt:272
    ("table9_dft_iwsft", {"method_id": "iw_sft", "benchmark_id": "ifeval"}, 43.92),  # psft.txt:287
    ("table9_dft_iwsft", {"method_id": "dft", "benchmark_id": "aime24"}, 10.73),  # psft.txt:288
    ("table9_dft_iwsft", {"method_id": "psft_lr3e-6", "benchmark_id": "truthfulqa"}, 66.63),  # psft.txt:286
    ("table10_learning_rate", {"method_id": "sft_lr5e-6", "benchmark_id": "ifeval"}, 68.87),  # psft.txt:299
    ("table10_learning_rate", {"method_id": "psft", "benchmark_id": "aime25"}, 21.98),  # psft.txt:296
    ("table10_learning_rate", {"method_id": "sft", "benchmark_id": "truthfulqa"}, 63.14),  # psft.txt:298
    (
        "table11_hparams_math_sft",
        {"method_id": "psft", "parameter_id": "learning_rate"},
        1e-6,
    ),  # psft.txt:312
    ("table11_hparams_math_sft", {"method_id": "sft", "parameter_id": "learning_rate"}, 2e-5),  # psft.txt:313
    ("table11_hparams_math_sft", {"method_id": "psft", "parameter_id": "high_clip"}, 0.28),  # psft.txt:312
    ("table12_hparams_rl", {"method_id": "psft+grpo", "parameter_id": "rollout_n"}, 8),  # psft.txt:328
    (
        "table12_hparams_rl",
        {"method_id": "sft+grpo", "parameter_id": "clip_ratio_high"},
        0.28,
    ),  # psft.txt:326
    (
        "table12_hparams_rl",
        {"method_id": "psft+grpo", "parameter_id": "total_training_steps"},
        100,
    ),  # psft.txt:329
    (
        "table13_hparams_alignment_sft",
        {"method_id": "psft_prolong", "parameter_id": "train_epochs"},
        10,
    ),  # psft.txt:336
    (
        "table13_hparams_alignment_sft",
        {"method_id": "psft", "parameter_id": "train_epochs"},
        5,
    ),  # psft.txt:335
    (
        "table13_hparams_alignment_sft",
        {"method_id": "sft", "parameter_id": "learning_rate"},
        2e-5,
    ),  # psft.txt:337
    ("table14_hparams_dpo", {"method_id": "dpo", "parameter_id": "learning_rate"}, 5e-7),  # psft.txt:340
    ("table14_hparams_dpo", {"method_id": "dpo", "parameter_id": "train_batch_size"}, 64),  # psft.txt:340
    ("table14_hparams_dpo", {"method_id": "dpo", "parameter_id": "cutoff_len"}, "4k"),  # psft.txt:340
    (
        "table15_eval_generation",
        {"benchmark_id": "mt_bench", "parameter_id": "temperature"},
        0.0,
    ),  # psft.txt:345
    ("table15_eval_generation", {"benchmark_id": "arena_hard", "parameter_id": "top_p"}, 0.7),  # psft.txt:346
    (
        "table15_eval_generation",
        {"benchmark_id": "alpacaeval", "parameter_id": "temperature"},
        0.7,
    ),  # psft.txt:345
    ("table17_hparams_vlm_sft", {"method_id": "psft", "parameter_id": "cutoff_len"}, "6k"),  # psft.txt:361
    ("table17_hparams_vlm_sft", {"method_id": "sft", "parameter_id": "learning_rate"}, 2e-5),  # psft.txt:362
    ("table17_hparams_vlm_sft", {"method_id": "psft", "parameter_id": "mini_batch_size"}, 32),  # psft.txt:361
]


def test_three_spot_checks_per_table():
    counts = pd.Series([t for t, _, _ in SPOT]).value_counts()
    assert set(counts.index) == set(TABLES)
    assert (counts >= 3).all()


@pytest.mark.parametrize(("name", "where", "expected"), SPOT)
def test_spot_check(name, where, expected):
    df = load_paper_table(name)
    mask = pd.Series(True, index=df.index)
    for col, val in where.items():
        mask &= df[col] == val
    hit = df[mask]
    assert len(hit) == 1, f"{name} {where}: {len(hit)} rows"
    if isinstance(expected, str):
        assert hit["value_text"].item() == expected
        assert pd.isna(hit["value"].item())
    else:
        assert hit["value"].item() == pytest.approx(expected, rel=0, abs=1e-12)
