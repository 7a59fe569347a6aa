"""The report's pieces: token-by-token rendering of traced demonstrations, per-job wall time, provenance."""

import pandas as pd

from psftlib.report.html import benchmarks_table, provenance, render_trace


def _traces(tmp_path):
    rows = []
    for step, ratios in ((3, [1.0, 1.5, 0.9]), (40, [1.0, 1.0, 1.31])):
        for pos, r in enumerate(ratios, start=5):
            rows.append({"step": step, "train_batch": step / 8, "epoch": step / 24, "token_id": pos,
                         "token_text": ["wait", "<b>", "9"][pos - 5], "position": pos, "logprob": -0.5,
                         "old_logprob": -0.5, "ratio": r, "clipped": r > 1.28, "entropy": 0.3, "example": 0})  # fmt: skip
    folder = tmp_path / "results" / "runs" / "mini" / "psft"
    folder.mkdir(parents=True)
    pd.DataFrame(rows).to_parquet(folder / "traces.parquet")


def test_render_trace_shades_by_ratio_and_boxes_clipped_tokens(tmp_path):
    _traces(tmp_path)
    html = render_trace("mini", "psft", 0, root=tmp_path)
    first, last = html.split("<h4>")[1:]
    assert first.startswith("first time trained: step 3") and "1 clipped" in first
    assert last.startswith("last time trained: step 40") and "1 clipped" in last
    assert "&lt;b&gt;" in first and "<b>" not in first  # token text is escaped
    assert first.count("outline:2px solid black") == 1 and "rgb(255,255,255)" in first  # r = 1 is white
    assert "no traces" in render_trace("mini", "sft", 0, root=tmp_path)
    assert "was not traced" in render_trace("mini", "psft", 7, root=tmp_path)


def test_benchmarks_table_sums_job_wall_time(tmp_path):
    folder = tmp_path / "results" / "benchmarks" / "mini"
    folder.mkdir(parents=True)
    for name, s in (("train_sft", 120.0), ("world", 400.0)):
        (folder / f"{name}.tsv").write_text(f"s\th:m:s\tmax_rss\n{s}\t0:00:00\t512.0\n")
    table = benchmarks_table("mini", root=tmp_path)
    assert table.startswith("2 jobs, 8.7 min") and table.index("world") < table.index("train_sft")


def test_provenance_names_commit_config_hash_and_versions():
    text = provenance("smoke")
    assert "commit `" in text and "config/smoke.yaml" in text and "sha256 `" in text and "torch " in text
