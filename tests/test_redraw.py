"""`make figures` on a fresh clone: every figure, table, the findings and the report re-drawn from the committed
`mini` results, nothing trained or evaluated, every output byte-identical to the committed one (provenance aside)."""

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from psftlib.artifacts import load_artifacts, present
from psftlib.config import ROOT, load_profile

PROVENANCE = re.compile(rb"Produced at commit[^\n]*|at commit <code>[^<]*</code>[^\n]*")
SCRATCH = ("results/notebooks/", "results/logs/", ".snakemake/")  # git-ignored: what a redraw may add


def _tracked() -> list[str]:
    out = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True)
    return [f for f in out.stdout.decode().split("\0") if f and (ROOT / f).exists()]


def _fresh_clone(dest: Path) -> list[str]:
    """The tracked files as they are in the working tree (a clone, with uncommitted edits), without .git."""
    files = _tracked()
    for f in files:
        (dest / f).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / f, dest / f)
    return files


@pytest.mark.slow
def test_make_figures_redraws_everything_from_committed_results(tmp_path):
    if not (ROOT / ".git").exists():
        pytest.skip("needs the git checkout to know which files are committed")
    clone = tmp_path / "clone"
    files = _fresh_clone(clone)
    env = dict(os.environ, PYTHONPATH=str(clone), PYTHONHASHSEED="0", HF_HUB_OFFLINE="1")
    env["PATH"] = f"{os.path.dirname(sys.executable)}:{env['PATH']}"
    env.pop("PSFT_ROOT", None)
    cmd = [sys.executable, "-m", "snakemake", "--cores", "2", "--config", "redraw=true", "--forceall"]
    done = subprocess.run(cmd, cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]

    # only the figure, table and findings rules and the report ran: nothing trained, evaluated or built a world
    ran = set(re.findall(r"^(?:local)?rule (\S+):$", done.stdout + done.stderr, flags=re.M))
    expected = {a.name for a in present(load_profile("mini"))} | {"report", "all"}
    assert ran == expected, f"ran {sorted(ran)}, expected {sorted(expected)}"

    # every committed file is byte-identical to the committed one, the provenance line aside
    differ = []
    for f in files:
        ours, committed = (clone / f).read_bytes(), (ROOT / f).read_bytes()
        if ours != committed and PROVENANCE.sub(b"", ours) != PROVENANCE.sub(b"", committed):
            differ.append(f)
    assert not differ, f"re-drawn outputs differ from the committed ones: {differ}"

    # Snakemake's own report shows the marked outputs with the registry's captions
    report = tmp_path / "snakemake_report.html"
    cmd = [sys.executable, "-m", "snakemake", "--config", "redraw=true", "--report", str(report)]
    done = subprocess.run(cmd, cwd=clone, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    caption = load_artifacts()["fig1_entropy"].figures["fig1_entropy"]
    assert caption.split(";")[0] in report.read_text()

    # and nothing new outside the scratch folders
    new = [
        str(p.relative_to(clone))
        for p in clone.rglob("*")
        if p.is_file() and str(p.relative_to(clone)) not in set(files)
    ]
    stray = [p for p in new if not p.startswith(SCRATCH) and "__pycache__" not in p]
    assert not stray, f"redraw wrote outside figures/tables/findings/report: {stray}"


@pytest.mark.slow
def test_a_notebook_run_by_hand_writes_under_scratch_not_the_committed_tables(tmp_path):
    from psftlib.layout import Layout
    from psftlib.notebook import run_notebook

    committed = Layout("mini").table("table7_entropy_tokens")
    scratch = Layout("mini", scratch=True).table("table7_entropy_tokens")
    before = committed.stat().st_mtime_ns
    scratch.unlink(missing_ok=True)
    try:
        run_notebook(ROOT / "notebooks" / "table7_entropy_tokens.py", tmp_path / "nb.ipynb")  # its defaults
        assert scratch.exists() and committed.stat().st_mtime_ns == before
        assert scratch.parts[-4:-2] == ("scratch", "results")
    finally:
        scratch.unlink(missing_ok=True)
        scratch.with_suffix(".csv").unlink(missing_ok=True)
