"""The paper DAG (rules/hub.smk and the shared figure/table rules) run for real, on CPU and offline: the paper profile
cut to tiny stand-ins of its models and datasets (psftlib.worlds.stand_ins, profile ``paper_tiny``) in a temporary
project root. The fast tests check the stand-ins and the tiny profile; the slow one runs the DAG and checks what it
wrote (training with 2 processes under FSDP, GRPO, DPO, lm-eval on the paper's task names, tables, report)."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml

from psftlib.config import ROOT, Profile, load_profile, validate_profile
from psftlib.worlds import stand_in_tasks, stand_ins

PAPER = yaml.safe_load((ROOT / "config" / "paper.yaml").read_text())


def _tiny() -> Profile:
    data = stand_ins.tiny_profile(PAPER)
    validate_profile(data, "paper_tiny")
    return Profile(name="paper_tiny", path=Path("config/paper_tiny.yaml"), data=data)


def _env(root: Path) -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
            "PSFT_ROOT": str(root), "HF_HOME": str(root / ".hf"), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
            "TOKENIZERS_PARALLELISM": "false", "PYTHONHASHSEED": "0",
            "NLTK_DATA": str(root / stand_in_tasks.NLTK_DATA)}  # fmt: skip  # IFEval's punkt_tab stand-in


# ---- the tiny profile: paper.yaml with sizes cut -----------------------------------------------------------------


def test_tiny_profile_is_the_paper_dag_with_sizes_cut():
    tiny, paper = _tiny(), load_profile("paper")
    assert tiny.runs == paper.runs and tiny.all_runs == paper.all_runs
    cut = lambda sources: {r: {**s, "grpo": {**s["grpo"], "max_completion_length": 0}} if "grpo" in s else s  # noqa: E731
                           for r, s in sources.items()}  # fmt: skip
    assert cut(tiny["paper"]["run_sources"]) == cut(
        paper["paper"]["run_sources"]
    )  # a cold start's own length cut too
    assert tiny["paper"]["base_models"].keys() == paper["paper"]["base_models"].keys()
    for stage in ("grpo", "dpo"):  # each cold start's data (the VLM's: Geometry-3k)
        for cold in paper.cold_starts(stage):
            assert tiny.post_stage(stage, cold)[1].name == paper.post_stage(stage, cold)[1].name
            assert tiny.post_stage(stage, cold)[0]["max_completion_length"] <= 16 if stage == "grpo" else True
    assert tiny.task_set_runs == paper.task_set_runs
    assert (
        tiny["paper"]["models"] == paper["paper"]["models"]
    )  # the paper's hub ids, resolved in the stand-in root
    assert {k: v["runs"] for k, v in tiny["figures"].items()} == {
        k: v["runs"] for k, v in paper["figures"].items()
    }
    for stage in ("grpo", "dpo"):
        assert tiny.cold_starts(stage) == paper.cold_starts(stage)
        assert tiny.post_data(stage).name == paper.post_data(stage).name
    for run in tiny.runs:  # the step structure survives the cut: steps per train batch as in the paper
        small, big = tiny.run_config(run), paper.run_config(run)
        assert small.steps_per_train_batch == big.steps_per_train_batch, run
        assert small.mini_batch_size % tiny["paper"]["launcher"]["num_processes"] == 0, run
        assert (small.objective, small.lr, small.clip_high) == (big.objective, big.lr, big.clip_high)
    sets = tiny.task_sets
    assert sets["in_domain"] == paper.task_sets["in_domain"]
    # the paper's task sets, lm-eval's own tasks included; the curves, at every train batch, ours only
    for name in set(sets) - {tiny.curves_task_set}:
        assert sets[name] == paper.task_sets[name], name
    assert sets["curves"] == ["paper_aime24", "paper_supergpqa"]
    assert set(paper.task_sets) == set(sets) and sets["ifeval"] == ["ifeval"]


def test_post_training_reads_the_data_its_world_writes():
    assert load_profile("mini").post_data("grpo").name == "rl.jsonl"
    assert load_profile("mini").post_data("dpo").name == "prefs.jsonl"
    paper = load_profile("paper")
    for stage in ("grpo", "dpo"):  # the hub world rule writes one file per paper.datasets entry
        assert paper.post_data(stage).stem in paper["paper"]["datasets"]


# ---- the stand-ins --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("paper_tiny")
    return stand_ins.write_hub(root)


def test_stand_ins_load_by_the_paper_ids_and_run(hub, monkeypatch):
    from psftlib.worlds.models import load_model

    monkeypatch.chdir(hub)  # a relative hub id that exists is read from disk
    classes = {}
    for role, hub_id in PAPER["paper"]["models"].items():
        model, tok = load_model(hub_id, dtype="float32", gradient_checkpointing=False)
        classes[role] = type(model).__name__
        ids = tok("Find $x$ if $x+1=3$. \\boxed{2}", return_tensors="pt")["input_ids"]
        assert tok.decode(ids[0]) == "Find $x$ if $x+1=3$. \\boxed{2}"  # byte-level: every text round-trips
        with torch.no_grad():
            logits = model(input_ids=ids).logits
        assert logits.shape == (1, ids.shape[1], len(tok)) and torch.isfinite(logits).all()
    assert classes == {"qwen25_7b": "Qwen2ForCausalLM", "llama31_8b": "LlamaForCausalLM",
                       "qwen3_4b_base": "Qwen3ForCausalLM", "qwen25_vl_7b": "Qwen2_5_VLForConditionalGeneration",
                       "qwen3_30b_a3b": "Qwen3MoeForCausalLM"}  # fmt: skip


def test_stand_in_data_loads_through_the_paper_loaders_and_lm_eval_names(hub, monkeypatch):
    import datasets

    from psftlib.worlds import loaders

    monkeypatch.chdir(hub)
    tiny = hub / "config" / "paper_tiny.yaml"
    for name in load_profile(tiny)["paper"][
        "datasets"
    ]:  # the world rule's command, tokenizer by its paper id
        loaders.main(
            ["--profile", str(tiny), "--dataset", name, "--out", str(hub / "loaded" / f"{name}.jsonl")]
        )
        assert len((hub / "loaded" / f"{name}.jsonl").read_text().splitlines()) >= 2, name
    monkeypatch.setenv("HF_HOME", str(hub / ".hf"))
    for task, (
        hub_id,
        config,
        split,
    ) in stand_ins._eval_tasks().items():  # what lm-eval calls with the YAML's id
        rows = datasets.load_dataset(hub_id, config, split=split)
        assert len(rows) == len((stand_ins.FIXTURES / f"{task}.jsonl").read_text().splitlines()), task


def test_lm_eval_own_tasks_of_the_tiny_profile_load_and_score_offline(hub, monkeypatch):
    """Every task set of the tiny profile with lm-eval's own tasks (gpqa, arc, truthfulqa, mmlu_pro, headqa, ifeval,
    gsm8k, mmlu, mmlu_flan and cmmlu on the stand-in data of psftlib.worlds.stand_in_tasks, beside ours) through the harness
    with the profile's eval settings (HF backend, 2 problems, 16 tokens) on the tiny Qwen2: a score for every task,
    each subtask of a group, in [0, 1], with the metric lm-eval reports first for lm-eval's own tasks."""
    import dataclasses

    import nltk

    from psftlib.eval.harness import EvalConfig, evaluate
    from psftlib.report.task_tables import owner

    monkeypatch.chdir(hub)  # the hub ids resolve to the stand-in folders
    monkeypatch.setenv("HF_HOME", str(hub / ".hf"))
    monkeypatch.setattr(
        nltk.data, "path", [str(hub / stand_in_tasks.NLTK_DATA)]
    )  # IFEval's punkt_tab stand-in only
    ev = yaml.safe_load((hub / "config" / "paper_tiny.yaml").read_text())["eval"]
    # the harness's settings of the eval section (not which runs get a set, nor the code runner's settings)
    cfg = EvalConfig.from_dict({k: ev[k] for k in {f.name for f in dataclasses.fields(EvalConfig)} & set(ev)})
    sets = {
        name: tasks
        for name, tasks in ev["task_sets"].items()
        if any(not t.startswith("paper_") for t in tasks)
    }
    assert set(sets) == {"out_of_domain", "ifeval", "alignment_tax", "vlm_text_ood"}
    # lm-eval 0.4.13's groups: their number of subtasks
    groups = {"mmlu": 57, "mmlu_pro": 14, "mmlu_flan_n_shot_generative": 57, "cmmlu": 67}
    for name, tasks in sets.items():
        res = evaluate("Qwen/Qwen2.5-7B-Instruct", tasks, cfg, out=hub / "lm_eval_check" / name)
        scores = res["scores"]
        for task in tasks:
            keys = [k for k in scores if owner(k, tasks) == task]
            assert len(keys) == groups.get(task, 1), (name, task, keys)
            for key in keys:
                s = scores[key]
                assert s["n"] == cfg.limit and 0 <= s["avg_at_k"] <= 1, (name, key, s)
                ours = task.startswith("paper_")
                assert s["k"] == (cfg.repeats if ours else 1), (name, key, s)
                first = (
                    "acc",
                    "exact_match",
                    "prompt_level_strict_acc",
                )  # IFEval: the share of prompts followed
                assert ours or res["lm_eval_metrics"][key].split(",")[0] in first, key
        if "gsm8k_cot" in tasks:  # several filters: scored under its first (lm-eval's reported first)
            assert res["lm_eval_metrics"]["gsm8k_cot"] == "exact_match,strict-match"


# ---- the DAG, end to end ----------------------------------------------------------------------------------------


def _failed_logs(root: Path, out: str) -> str:
    """The tails of the logs of the jobs that failed, for the assertion message."""
    logs = [
        root / line.split("log:")[1].split("(")[0].strip() for line in out.splitlines() if "    log:" in line
    ]
    return "\n".join(f"== {p}\n{p.read_text()[-2500:]}" for p in logs if p.exists())


@pytest.mark.slow
def test_the_paper_dag_runs_end_to_end_on_the_stand_ins(hub):
    """Every rule of the paper DAG runs on the stand-ins: the world loaders, training under accelerate with 2 CPU
    processes and FSDP, GRPO, DPO, the judge, lm-eval on the paper's task names, every table, findings and report."""
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--configfile", "config/paper_tiny.yaml"]
    res = subprocess.run(cmd, cwd=hub, env=_env(hub), capture_output=True, text=True, timeout=3600)
    assert res.returncode == 0, res.stderr[-3000:] + _failed_logs(hub, res.stderr)
    from psftlib.layout import Layout
    from psftlib.report.task_tables import owner

    prof = load_profile(hub / "config" / "paper_tiny.yaml")
    lay = Layout(prof.name, root=hub)
    for run in prof.runs:  # SFT-stage runs: one metrics line per optimizer step, two ranks
        metrics = pd.read_json(lay.run(run) / "metrics.jsonl", lines=True)
        cfg = prof.run_config(run)
        assert len(metrics) == math.ceil(cfg.epochs) * cfg.steps_per_train_batch, run
        assert metrics["loss"].map(math.isfinite).all() and (metrics["tokens"] > 0).all(), run
        assert json.loads((lay.run(run) / "config.json").read_text())["processes"] == 2, run
    for run in prof.post_runs:  # GRPO / DPO: rank 0's stream only (not one line per rank), in-training evals
        metrics = pd.read_json(lay.run(run) / "metrics.jsonl", lines=True)
        assert len(metrics) >= 1 and metrics["step"].is_unique, run
        evals = pd.read_json(lay.run(run) / "eval.jsonl", lines=True)
        assert evals["step"].iloc[0] == 0 and "paper_aime24/avg_at_k" in evals, run
    for run in prof.all_runs:  # the final evaluation: every task of each set, on the paper's task names
        for name in prof.task_sets_of(run):  # lm-eval's groups (mmlu) by their subtasks; its own tasks k = 1
            scores = json.loads(lay.eval(run, name).read_text())["scores"]
            assert {owner(k, prof.task_sets[name]) for k in scores} == set(prof.task_sets[name]), (run, name)
            assert all(s["n"] == 2 and s["k"] in (1, 2) for s in scores.values()), (run, name)
    tables = sorted(lay.tables.glob("*.csv"))
    assert {t.stem for t in tables} >= {"table1_main", "table2_grpo", "table3_dpo", "table6_update_frequency"}
    # every table has rows, except one that says it was not evaluated (Table 5: paper.yaml declares no image-text
    # task set, as no lm-eval model of ours takes images); a domain score is there for every row with the column
    unevaluated = {t.stem for t in tables if "Not evaluated" in t.with_suffix(".md").read_text()}
    assert unevaluated <= {"table5_vlm_multimodal"}, unevaluated
    for table in (t for t in tables if t.stem not in unevaluated):
        frame = pd.read_csv(table)
        assert len(frame) and frame.notna().any().any(), table.name
        for column in ("in_domain", "out_of_domain", "in_domain_mean", "out_of_domain_mean"):
            assert column not in frame or frame[column].notna().all(), (table.name, column)
    _check_domain_means(prof, lay)
    report = lay.report.read_text()
    assert all(f"{t.stem}" in report for t in tables if not t.stem.startswith("fig"))


def _check_domain_means(prof: Profile, lay) -> None:
    """Table 1's domain columns: the mean over exactly the tasks of ``eval.task_sets.in_domain`` / ``out_of_domain``
    (the paper's task names; a split by the small world's task prefixes leaves them empty)."""
    table = pd.read_csv(lay.table("table1_main", "csv"), index_col="run")
    assert set(prof.figure_runs("table1_main")) <= set(table.index)
    for domain in ("in_domain", "out_of_domain"):
        tasks = prof.domain_tasks(domain)
        assert tasks and set(tasks) <= set(table.columns), (domain, list(table.columns))
        assert table[domain].notna().all(), domain
        pd.testing.assert_series_equal(
            table[domain].astype(float), table[tasks].mean(axis=1), check_names=False
        )
