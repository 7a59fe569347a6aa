"""The walking skeleton end to end: papermill runs a notebook, Snakemake plans and runs the smoke DAG."""

import json
import os
import re
import subprocess
import sys

import pytest
import yaml

from psftlib.config import ROOT, load_profile
from psftlib.notebook import run_notebook
from psftlib.train import Plan

SNAKEMAKE = [sys.executable, "-m", "snakemake"]


def _env():
    env = dict(os.environ)
    env["PATH"] = f"{os.path.dirname(sys.executable)}:{env.get('PATH', '')}"
    env["HF_HUB_OFFLINE"] = "1"
    return env


@pytest.mark.slow
def test_train_notebook_runs_under_papermill(smoke_world_in_results, tmp_path):
    out = tmp_path / "train.ipynb"
    run_notebook(
        ROOT / "notebooks" / "train.py",
        out,
        {"profile": "smoke", "run": "psft", "overrides": {"epochs": 1.0}, "out_dir": str(tmp_path / "run")},
    )
    nb = json.loads(out.read_text())
    assert nb["metadata"]["papermill"]["parameters"]["run"] == "psft"
    assert (tmp_path / "run" / "metrics.jsonl").exists()
    assert not list(tmp_path.glob(".*tmp*"))


@pytest.mark.slow
def test_failing_notebook_leaves_no_output(tmp_path):
    src = tmp_path / "bad.py"
    src.write_text('# %% tags=["parameters"]\nx: int = 1\n\n# %%\nraise ValueError("broken on purpose")\n')
    with pytest.raises(Exception, match="broken on purpose"):
        run_notebook(src, tmp_path / "out" / "bad.ipynb")
    assert not (tmp_path / "out" / "bad.ipynb").exists()
    assert (tmp_path / "out" / "bad.failed.ipynb").exists()


@pytest.mark.slow
def test_executed_notebooks_are_the_same_from_run_to_run(tmp_path):
    src = tmp_path / "nb.py"
    src.write_text('# %% tags=["parameters"]\nx: int = 1\n\n# %%\nprint(x + 1)\n')
    cells = []
    for name in ("a", "b"):
        nb = json.loads(run_notebook(src, tmp_path / f"{name}.ipynb", {"x": 2}).read_text())
        cells.append([(c["id"], c["source"], c.get("outputs")) for c in nb["cells"]])
    assert cells[0] == cells[1]  # cell ids included: the report rendered from a notebook shows them
    assert [c[0] for c in cells[0]] == ["cell-0", "cell-1", "cell-2"]  # parameters, injected parameters, code


def test_snakemake_dry_run_lists_every_job():
    for profile in ("smoke", "mini"):
        res = subprocess.run(
            [*SNAKEMAKE, "-n", "--forceall", "--config", f"profile={profile}"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            env=_env(),
        )
        assert res.returncode == 0, res.stderr + res.stdout
        runs = load_profile(profile).runs
        for rule in ("world", "eval", "grpo", "dpo", "fig1_entropy", "all"):
            assert rule in res.stdout
        assert res.stdout.count("rule train:") == len(runs)


def test_snakemake_refuses_a_malformed_profile_before_any_job(tmp_path):
    data = yaml.safe_load(open(ROOT / "config" / "smoke.yaml"))
    data["runs"]["psft"]["clip_high"] = -0.5
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(data))
    res = subprocess.run(
        [*SNAKEMAKE, "-n", "--config", f"profile={bad}"], cwd=ROOT, capture_output=True, text=True, env=_env()
    )
    assert res.returncode != 0
    assert "runs.psft.clip_high" in res.stdout + res.stderr


def test_snakemake_lint_is_clean():
    res = subprocess.run(
        [*SNAKEMAKE, "--lint", "--config", "profile=smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert res.returncode == 0, res.stdout + res.stderr
    assert "good condition" in res.stdout + res.stderr


def _failed_logs(snakemake_output: str) -> str:
    """The tail of the log of every job Snakemake reports as failed, so CI shows why, not only that."""
    tails = []
    for log in sorted(set(re.findall(r"log: (results/logs/\S+\.log)", snakemake_output))):
        if f"log: {log} (check log" in snakemake_output and (ROOT / log).exists():
            tails.append(f"\n===== {log} (last 4000 characters) =====\n{(ROOT / log).read_text()[-4000:]}")
    return "".join(tails)


@pytest.mark.slow
def test_smoke_dag_runs_end_to_end():
    res = subprocess.run(
        [*SNAKEMAKE, "--cores", "2", "--forceall", "--config", "profile=smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env=_env(),
    )
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:] + _failed_logs(res.stderr)
    fig = ROOT / "figures" / "smoke" / "fig1_entropy.png"
    assert fig.exists() and fig.stat().st_size > 10_000
    for run in load_profile("smoke").runs:
        rows = (ROOT / "results" / "runs" / "smoke" / run / "metrics.jsonl").read_text().splitlines()
        n_train = load_profile("smoke")["world"]["n_train"]
        assert len(rows) == Plan(load_profile("smoke").run_config(run), n_train).n_steps
        assert (ROOT / "results" / "notebooks" / "smoke" / f"train_{run}.ipynb").exists()
        assert (ROOT / "results" / "runs" / "smoke" / run / "eval.jsonl").exists()
    prof = load_profile("smoke")
    post = [f"{c}+{stage}" for stage in ("grpo", "dpo") for c in prof[stage]["cold_starts"]]
    for run in post:
        assert (ROOT / "results" / "runs" / "smoke" / run / "checkpoint" / "config.json").exists()
    listing = subprocess.run([*SNAKEMAKE, "--list-target-rules", "--nolock", "--config", "profile=smoke"], cwd=ROOT,
                             capture_output=True, text=True, env=_env())  # fmt: skip
    for rule in ("world_calibration", "table1_main", "fig3_performance", "fig10_clipped_tokens", "findings"):
        assert rule in listing.stdout
    declared = subprocess.run([*SNAKEMAKE, "--summary", "--nolock", "--config", "profile=smoke"], cwd=ROOT, capture_output=True,
                              text=True, env=_env()).stdout.splitlines()[1:]  # fmt: skip
    outputs = [line.split("\t")[0] for line in declared if line.strip()]
    assert len(outputs) > 40
    for path in outputs:  # every declared output exists and is non-empty
        p = ROOT / path
        assert p.exists(), path
        assert p.is_dir() or p.stat().st_size > 0, path
    assert (ROOT / "results" / "smoke" / "report.html").stat().st_size > 100_000  # figures are embedded
    table1 = (ROOT / "results" / "tables" / "smoke" / "table1_main.md").read_text()
    assert "### Selected checkpoints" in table1 and "### Final checkpoints" in table1  # §4.1.2's selection
    for run in prof["figures"]["table1_main"]["runs"]:
        chosen = json.loads((ROOT / "results" / "runs" / "smoke" / run / "selected.json").read_text())
        assert 0 < chosen["step"] <= chosen["final_step"]
        scores = json.loads(
            (ROOT / "results" / "eval" / "smoke" / f"{run}@selected" / "in_domain.json").read_text()
        )
        # the final checkpoint's evaluation is reused when the selection is the final step, and only then
        assert ("reused_from" in scores) == (chosen["step"] == chosen["final_step"])
    # a second run has nothing to do; editing a figure notebook re-runs that figure (and the report) only (a bare
    # touch does not: Snakemake compares small inputs by checksum, not only by mtime)
    again = subprocess.run([*SNAKEMAKE, "-n", "--config", "profile=smoke"], cwd=ROOT, capture_output=True, text=True,
                           env=_env())  # fmt: skip
    assert "Nothing to be done" in again.stdout + again.stderr, again.stdout[-2000:]
    notebook = ROOT / "notebooks" / "fig1_entropy.py"
    source, stat = notebook.read_text(), notebook.stat()
    try:
        notebook.write_text(source + "# an edit\n")
        touched = subprocess.run([*SNAKEMAKE, "-n", "--config", "profile=smoke"], cwd=ROOT, capture_output=True,
                                 text=True, env=_env()).stdout  # fmt: skip
    finally:
        notebook.write_text(source)
        os.utime(notebook, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    jobs = set(re.findall(r"^(\w+)\s+\d+$", touched[touched.index("Job stats:") :], flags=re.M)) - {"total"}
    assert jobs == {"fig1_entropy", "report", "all"}, jobs
    from psftlib.report.findings import FINDINGS, VERDICTS

    findings = (ROOT / "results" / "smoke" / "findings.md").read_text()
    for f in FINDINGS:
        row = next(line for line in findings.splitlines() if line.startswith(f"| {f.id} |"))
        assert any(f"**{v}" in row for v in VERDICTS), row
    # step 0 of every curve is the base's in-training evaluation, computed once: a fresh evaluation gives it again
    from psftlib.eval import make_training_evaluator
    from psftlib.worlds.build import load_checkpoint

    base, tok = load_checkpoint(ROOT / "results" / "world" / "smoke" / "base")
    initial = json.loads((ROOT / "results" / "eval" / "smoke" / "base" / "initial_curves.json").read_text())
    assert make_training_evaluator(prof, tok)(base) == initial["scores"]
    for run in prof.runs:
        first = json.loads(
            (ROOT / "results" / "runs" / "smoke" / run / "eval.jsonl").read_text().splitlines()[0]
        )
        assert first["step"] == 0 and {k: first[k] for k in initial["scores"]} == initial["scores"], run
    for run in ["base", *prof.runs, *post]:
        scores = json.loads((ROOT / "results" / "eval" / "smoke" / run / "in_domain.json").read_text())[
            "scores"
        ]
        n_eval = prof["world"]["n_eval_target"]
        assert {t: s["n"] for t, s in scores.items()} == {
            f"world_target_{n}": n_eval for n in prof["world"]["levels"]
        }
