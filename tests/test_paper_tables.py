"""The paper-only tables and figures (Table 1's Llama rows, Tables 4-5 and Figures 9, 19-20, Table 8, App. C.6) drawn
from hand-built results of the paper profile in a tmp project root: each notebook runs, writes what the registry
says, and shows our numbers (in %) and the paper's. Nothing trains or evaluates."""

import json
import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from psftlib.artifacts import load_artifacts
from psftlib.config import ROOT, load_profile
from psftlib.report.task_tables import owner

NOTEBOOKS = ["table1_llama", "table4_vlm", "table8_moe", "table_c6_code"]


def _scores(tasks: list[str], rng: np.random.Generator) -> dict[str, dict[str, float]]:
    """Per task: avg@k, or an lm-eval group's subtasks (``mmlu`` -> ``mmlu_law``, ``mmlu_art``) of unequal size."""
    out = {}
    for t in tasks:
        subtasks = {f"{t}_law": 30, f"{t}_art": 10} if t.startswith("mmlu") else {t: 20}
        out.update(
            {k: {"n": n, "k": 1, "avg_at_k": float(rng.uniform(0.1, 0.9))} for k, n in subtasks.items()}
        )
    return out


def _fake_results(root, runs: list[str], profile: str = "paper") -> None:
    """A project root: the checkout's profiles (and the tiny hub world's, written from paper.yaml), notebooks and
    paper numbers; metrics.jsonl, eval.jsonl and every final evaluation of ``runs`` of ``profile``."""
    (root / "config").mkdir()
    for path in (ROOT / "config").iterdir():
        (root / "config" / path.name).symlink_to(path)
    if profile == "paper_tiny":
        from psftlib.worlds.stand_ins import write_profile

        write_profile(root)
    (root / "notebooks").symlink_to(ROOT / "notebooks")
    (root / "results").mkdir()
    (root / "results" / "paper").symlink_to(ROOT / "results" / "paper")
    prof = load_profile(root / "config" / f"{profile}.yaml")
    rng = np.random.default_rng(0)
    for i, run in enumerate(runs):
        folder = root / "results" / "runs" / profile / run
        folder.mkdir(parents=True)
        steps = [
            {"step": s, "train_batch": s / 2, "epoch": s / 8, "entropy": (i + 1) / s, "nll": 2 / s}
            for s in range(1, 9)
        ]
        (folder / "metrics.jsonl").write_text("".join(json.dumps(r) + "\n" for r in steps))
        curve = [
            {"train_batch": b, **{f"{t}/avg_at_k": 0.1 * b / (i + 1) for t in prof.task_sets["curves"]}}
            for b in (0, 2, 4)
        ]
        (folder / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in curve))
        evals = root / "results" / "eval" / profile / run
        evals.mkdir(parents=True)
        for task_set in prof.task_sets_of(run):
            tasks = prof.task_sets[task_set]
            (evals / f"{task_set}.json").write_text(
                json.dumps({"tasks": tasks, "scores": _scores(tasks, rng)})
            )
            sample = {"task": tasks[0], "doc_id": 0, "id": "x", "prompt": f"problem of {run}", "target": "4",
                      "samples": [{"response": "so \\boxed{4}", "extracted": "4", "correct": True}]}  # fmt: skip
            (evals / f"{task_set}.samples.jsonl").write_text(json.dumps(sample) + "\n")


def test_a_group_score_belongs_to_its_longest_task():
    assert owner("mmlu_pro_law", ["mmlu", "mmlu_pro"]) == "mmlu_pro"
    assert owner("mmlu_law", ["mmlu", "mmlu_pro"]) == "mmlu"
    assert owner("gsm8k", ["mmlu"]) is None


def test_paper_only_notebooks_draw_their_tables_and_figures_from_fake_results(tmp_path):
    prof = load_profile("paper")
    arts = load_artifacts()
    runs = ["base", *(r for n in NOTEBOOKS for r in prof.figure_runs(n))]
    runs += [p for p in prof.post_runs if p.split("+")[0] in runs]
    _fake_results(tmp_path, runs)
    script = "; ".join(f"runpy.run_path('notebooks/{n}.py', run_name='__main__')" for n in NOTEBOOKS)
    env = {**os.environ, "PSFT_ROOT": str(tmp_path), "MPLBACKEND": "Agg"}
    res = subprocess.run([sys.executable, "-c", f"import runpy; {script}"], cwd=tmp_path, env=env,
                         capture_output=True, text=True, timeout=280)  # fmt: skip
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    scratch = tmp_path / "scratch"
    for name in NOTEBOOKS:
        for stem in arts[name].figures:
            assert (scratch / "figures" / "paper" / f"{stem}.png").stat().st_size > 0, stem
        for stem in arts[name].tables:
            assert (scratch / "results" / "tables" / "paper" / f"{stem}.md").exists(), stem
    tables = scratch / "results" / "tables" / "paper"
    # Table 4: mmlu is its subtasks' mean weighted by size (30 and 10 problems), mmlu_pro's subtasks are not mmlu's
    text = pd.read_csv(tables / "table4_vlm_text.csv", index_col="run")
    scores = json.loads((tmp_path / "results/eval/paper/vlm_psft/vlm_text_ood.json").read_text())["scores"]
    assert text.loc["vlm_psft", "mmlu"] == pytest.approx(
        (30 * scores["mmlu_law"]["avg_at_k"] + 10 * scores["mmlu_art"]["avg_at_k"]) / 40, rel=1e-5
    )
    assert list(text.index) == [
        "vlm_base",
        "vlm_sft",
        "vlm_psft",
        "vlm_base+grpo",
        "vlm_sft+grpo",
        "vlm_psft+grpo",
    ]
    md = (tables / "table4_vlm_text.md").read_text()
    assert (
        f"{100 * text.loc['vlm_psft', 'mmlu']:.2f}" in md and "| psft | 9.27 |" in md
    )  # ours in %, the paper's
    image = pd.read_csv(
        tables / "table5_vlm_multimodal.csv", index_col="run"
    )  # Table 5's rows, each cold start + GRPO
    assert list(image.index) == [
        "vlm_base",
        "vlm_base+grpo",
        "vlm_sft",
        "vlm_sft+grpo",
        "vlm_psft",
        "vlm_psft+grpo",
    ]
    assert {"paper_geo3k", "paper_mathverse", "paper_mathvista", "paper_mmmu", "paper_mmmu_pro"} <= set(
        image.columns
    )
    assert "\\boxed{4}" in (tables / "fig19_vlm_cases.md").read_text()
    moe = (tables / "table8_moe.md").read_text()
    assert "Qwen3-30B-A3B" in moe and "88.52" in moe  # the paper's PSFT IFEval beside ours
    llama = (tables / "table1_llama.md").read_text()
    assert "Llama3.1-8B-Instruct" in llama and "Qwen2.5-7B-Instruct, Table 1" not in llama
    assert list(pd.read_csv(tables / "table1_llama.csv", index_col="run").index) == prof.figure_runs(
        "table1_llama"
    )
    assert prof.figure_runs("table1_llama")[0] == "llama_base"  # the paper's Llama "Base" row
    code = pd.read_csv(tables / "table_c6_code.csv", index_col="run")
    assert list(code.index) == [
        "base",
        "code_sft",
        "code_psft",
    ]  # base: these runs' base model is the profile's


def test_paper_only_notebooks_run_as_the_pipeline_runs_them_in_the_tiny_hub_world(tmp_path):
    """The tiny hub world (psftlib.worlds.stand_ins: paper.yaml cut to CPU, our paper_* tasks only) builds the same
    rules: each notebook, run by psftlib.notebook with the parameters the Snakefile passes, draws from its results."""
    from psftlib.worlds.stand_ins import PROFILE

    runs = ["base", *(r for n in NOTEBOOKS for r in load_profile("paper").figure_runs(n))]
    runs += [p for p in load_profile("paper").post_runs if p.split("+")[0] in runs]
    _fake_results(tmp_path, runs, PROFILE)
    prof = load_profile(tmp_path / "config" / f"{PROFILE}.yaml")
    env = {**os.environ, "PSFT_ROOT": str(tmp_path), "MPLBACKEND": "Agg"}
    for name in NOTEBOOKS:
        art = load_artifacts()[name]
        assert art.present(prof), name
        flags = [x for k, v in art.params_of(prof).items() for x in ("-p", k, json.dumps(v))]
        res = subprocess.run([sys.executable, "-m", "psftlib.notebook", f"notebooks/{name}.py",
                              str(tmp_path / f"{name}.ipynb"), "-p", "publish", "true", *flags],
                             cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)  # fmt: skip
        assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
        for stem in art.tables:
            assert (tmp_path / "results" / "tables" / PROFILE / f"{stem}.md").exists(), stem
        for stem in art.figures:
            assert (tmp_path / "figures" / PROFILE / f"{stem}.png").exists(), stem


def test_domain_scores_count_an_lm_eval_group_by_its_subtasks(tmp_path):
    """Table 1's out-of-domain column (analysis.final_scores / scores_table) has mmlu_pro, lm-eval's group, as its
    subtasks' mean weighted by their size, and the domain mean over every task of the set."""
    from psftlib.report.analysis import final_scores, scores_table

    _fake_results(tmp_path, ["psft"])
    raw = json.loads((tmp_path / "results" / "eval" / "paper" / "psft" / "out_of_domain.json").read_text())[
        "scores"
    ]
    scores = final_scores("paper", "psft", ["out_of_domain"], root=tmp_path)
    law, art = raw["mmlu_pro_law"]["avg_at_k"], raw["mmlu_pro_art"]["avg_at_k"]
    assert scores["mmlu_pro"] == pytest.approx((30 * law + 10 * art) / 40) and "mmlu_pro_law" not in scores
    ood = load_profile("paper").task_sets["out_of_domain"]
    table = scores_table("paper", ["psft"], ["in_domain", "out_of_domain"], root=tmp_path)
    assert set(ood) <= set(table.columns)
    assert table.loc["psft", "out_of_domain"] == pytest.approx(np.mean([scores[t] for t in ood]))
