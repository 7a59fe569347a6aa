"""The layout holds: layers only import downwards, no import circles, one registry per concept that everything
else reads (objectives, artifacts), and every artifact the pipeline builds is reported and documented."""

import ast
import graphlib
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from psftlib.artifacts import load_artifacts, present, reported
from psftlib.config import ROOT, load_profile, objective_names, replicates
from psftlib.layout import DEFAULT_PROFILE
from psftlib.sources import graph, sources

# bottom to top: a module may import its own layer and those below, never one above
LAYERS = [
    ["psftlib", "psftlib.layout", "psftlib.artifacts", "psftlib.schema", "psftlib.config", "psftlib.data", "psftlib.runtime",
     "psftlib.sources", "psftlib.notebook"],
    ["psftlib.objectives", "psftlib.logprobs"],
    ["psftlib.worlds"],
    ["psftlib.eval"],
    ["psftlib.train"],
    ["psftlib.post"],
    ["psftlib.report"],
]  # fmt: skip


def layer_of(module: str) -> int:
    for i, layer in enumerate(LAYERS):
        if any(module == m or module.startswith(m + ".") for m in layer if m != "psftlib"):
            return i
    assert module == "psftlib", f"{module}: in no layer; add it to LAYERS"
    return 0


def test_every_import_points_down_the_layers():
    upward = [
        f"{m} (layer {layer_of(m)}) imports {t} (layer {layer_of(t)})"
        for m, targets in graph().items()
        for t in targets
        if layer_of(t) > layer_of(m)
    ]
    assert not upward, "\n".join(upward)


def test_no_import_circle_inside_psftlib():
    edges = {
        m: [t for t in ts if not m.startswith(t + ".")] for m, ts in graph().items()
    }  # a parent's __init__
    graphlib.TopologicalSorter(edges).prepare()  # raises CycleError naming the circle


def test_files_stay_short():
    long = {
        str(p): n for p in (ROOT / "psftlib").rglob("*.py") if (n := len(p.read_text().splitlines())) > 420
    }
    assert not long, f"split these: {long}"


def test_sources_follow_the_imports():
    train = sources("notebooks/train.py")
    assert "psftlib/train/loop.py" in train and "psftlib/objectives.py" in train
    assert (
        "psftlib/eval/tasks/world_target_3.yaml" in train
    )  # the in-training evaluation reads the task YAMLs
    figure = sources("notebooks/fig1_entropy.py")
    assert "psftlib/report/plots.py" in figure
    assert not any(
        f.startswith(("psftlib/train/", "psftlib/objectives")) for f in figure
    )  # restyling never retrains


def test_objective_registry_is_the_schema_enum():
    from psftlib.objectives import OBJECTIVES

    assert list(OBJECTIVES) == objective_names()
    assert all(o.name == name for name, o in OBJECTIVES.items())


def test_schema_accepts_figures_exactly_for_registry_entries():
    from psftlib.schema import schema_of_profiles

    accepted = set(schema_of_profiles()["properties"]["figures"]["properties"])
    assert accepted == {n for n, a in load_artifacts().items() if a.when == "figures"}


def _notebook_defaults(path: Path) -> dict[str, object]:
    """The parameters cell of a notebook: name -> default value."""
    text = path.read_text()
    cell = text.split('# %% tags=["parameters"]', 1)[1].split("# %%", 1)[0]
    return {
        t.target.id: ast.literal_eval(t.value) for t in ast.parse(cell).body if isinstance(t, ast.AnnAssign)
    }


def _notebook_parameters(path: Path) -> set[str]:
    return set(_notebook_defaults(path))


def test_notebook_defaults_reproduce_the_default_profile():
    """Opened in Jupyter and run as-is, a notebook draws what the pipeline draws for the default profile (its
    parameter defaults are the profile's), and writes under scratch/ (publish: False), never the committed files."""
    prof = load_profile(DEFAULT_PROFILE)
    for art in present(prof):
        defaults = _notebook_defaults(ROOT / art.notebook)
        assert defaults.get("publish") is False, f"{art.notebook}: publish must default to False"
        expected = art.params_of(prof)
        got = {k: defaults.get(k) for k in expected}
        assert got == expected, (
            f"{art.notebook}: defaults {got} differ from config/{DEFAULT_PROFILE}.yaml's {expected}"
        )


def test_every_artifact_has_its_notebook_with_its_parameters():
    for name, art in load_artifacts().items():
        path = ROOT / art.notebook
        assert path.exists(), f"config/artifacts.yaml: {name}: no {art.notebook}"
        missing = {"profile", *art.params} - _notebook_parameters(path)
        assert not missing, f"{art.notebook}: parameters cell lacks {missing}"
    pipeline = {"train", "world", "report"}  # compute notebooks and the report, which have rules of their own
    orphans = {p.stem for p in (ROOT / "notebooks").glob("*.py")} - set(load_artifacts()) - pipeline
    assert not orphans, f"notebooks in no rule: {orphans}; declare them in config/artifacts.yaml"


@pytest.mark.parametrize("profile", ["smoke", "mini"])
def test_everything_built_is_reported_and_everything_reported_is_built(profile):
    """Snakemake's plan (dry run) against the report's list: a figure or table built but not shown, or shown but
    never built, fails here."""
    res = subprocess.run(
        [sys.executable, "-m", "snakemake", "-n", "--forceall", "--config", f"profile={profile}"],
        cwd=ROOT, capture_output=True, text=True,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr + res.stdout
    outputs = {
        o.strip() for line in re.findall(r"^\s+output: (.*)$", res.stdout, re.M) for o in line.split(",")
    }
    lay = load_profile(profile).layout
    built = {o for o in outputs if o.startswith(lay.rel(lay.figures)) and o.endswith(".png")}
    built |= {o for o in outputs if o.startswith(lay.rel(lay.tables)) and o.endswith(".md")}
    shown = {lay.rel(o.path) for o in reported(load_profile(profile))}
    assert built == shown  # notebooks/report.py shows exactly psftlib.artifacts.reported(profile)


def test_readme_lists_every_artifact_and_its_outputs():
    readme = (ROOT / "README.md").read_text()
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `(\w+)\.py` \|.*$", readme, re.M)}
    for name, art in load_artifacts().items():
        assert name in rows, f"README: no row for notebooks/{name}.py in the table of notebooks"
        for stem in [*art.figures, *art.tables]:
            assert stem in rows[name], f"README: the row of {name}.py does not name {stem}"


def test_layout_puts_only_the_default_profile_at_the_top():
    mini, smoke = load_profile("mini").layout, load_profile("smoke").layout
    assert mini.figure("fig1_entropy") == ROOT / "figures" / "fig1_entropy.png"
    assert smoke.figure("fig1_entropy") == ROOT / "figures" / "smoke" / "fig1_entropy.png"
    assert smoke.findings == ROOT / "results" / "smoke" / "findings.md"
    assert mini.run("psft") == ROOT / "results" / "runs" / "mini" / "psft"


def test_domains_come_from_the_task_sets_not_from_names():
    from psftlib.report.analysis import domain_means

    scores = {"alpha": 1.0, "beta": 0.0, "gamma": 0.5}
    means = domain_means(scores, {"in_domain": ["alpha", "beta"], "out_of_domain": ["gamma"]})
    assert means == {"in_domain": 0.5, "out_of_domain": 0.5}
    paper = load_profile("paper")
    assert paper.domain_tasks("in_domain") and set(paper.domain_tasks("in_domain")) <= {
        t for ts in paper.task_sets.values() for t in ts
    }


def test_every_present_artifact_reads_files_the_dag_makes():
    prof = load_profile("smoke")
    for art in present(prof):
        assert art.inputs(prof), art.name
        assert yaml.safe_load(yaml.safe_dump(art.params_of(prof)))["profile"] == "smoke"


@pytest.mark.parametrize("profile", ["smoke", "mini"])
def test_an_artifact_waits_for_every_seed_of_the_runs_it_shows(profile):
    """Tables show a repeated run's seed mean ± sd and figures its seed band: each seed's outputs must be inputs
    of the rule, or Snakemake may run the notebook before the replicates are evaluated."""
    prof = load_profile(profile)
    for art in present(prof):
        inputs = set(art.inputs(prof))
        for read in art.reads:
            for run in art.select(prof, read["runs"]):
                for seed_run in replicates(prof, run)[1:]:
                    assert any(f"/{seed_run}/" in f for f in inputs), f"{art.name}: does not read {seed_run}"
