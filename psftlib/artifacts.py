"""The artifact registry: every figure and table of the paper the pipeline rebuilds, read from ``config/artifacts.yaml``.

One entry per notebook (``notebooks/<name>.py``): what it reproduces, which profiles build it, its notebook
parameters, what it reads, what it writes and each output's caption. Everything else reads it: the Snakefile makes
one rule per entry (:meth:`Artifact.inputs`, :meth:`Artifact.outputs`, :meth:`Artifact.params`), the profile schema
accepts ``figures.<name>`` for the entries that take their runs from the profile, and the report shows every output
(:func:`reported`) in this order with its caption.

The profile is passed in (a :class:`psftlib.config.Profile`, duck-typed: this module sits below ``config``).
"""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from psftlib.layout import CONFIG_DIR, PAPER_DIR, Layout

REGISTRY_PATH = CONFIG_DIR / "artifacts.yaml"
WHEN = ("figures", "calibration", "frontier", "grpo", "dpo", "always")
PARAMS = ("runs", "smooth", "run", "cold_starts")
READ_KINDS = ("metrics", "curves", "evals", "judge")
RUN_SELECTIONS = ("runs", "runs+replicates", "base+runs", "table1", "first_run", "all_runs", "all", "calibration",
                  "base+calibration", "base+frontier", "post", "runs+post", "trained", "runs+stages")  # fmt: skip
KEYS = ("paper", "when", "params", "reads", "paper_tables", "figures", "tables", "csv", "findings")


class ArtifactError(ValueError):
    """A malformed ``config/artifacts.yaml`` entry; the message names the entry and the key."""


@dataclass(frozen=True)
class Output:
    """One figure or table the report shows: its stem, caption and the file the report embeds."""

    artifact: str
    kind: str  # "figure" | "table"
    stem: str
    caption: str
    path: Path


@dataclass(frozen=True)
class Artifact:
    name: str
    paper: str
    when: str
    params: tuple[str, ...] = ()
    reads: tuple[dict[str, str], ...] = ()
    paper_tables: tuple[str, ...] = ()
    figures: dict[str, str] = field(default_factory=dict)
    tables: dict[str, str] = field(default_factory=dict)
    csv: tuple[str, ...] = ()
    findings: bool = False

    @property
    def notebook(self) -> str:
        return f"notebooks/{self.name}.py"

    def present(self, profile: Any) -> bool:
        """Whether ``profile`` builds this artifact."""
        if self.when == "always":
            return True
        if self.when == "figures":
            return self.name in (profile.data.get("figures") or {})
        return bool(profile.data.get(self.when))

    def runs(self, profile: Any) -> list[str]:
        """The runs the artifact is about: ``figures.<name>.runs``, or a stage's cold starts."""
        if self.when in ("grpo", "dpo"):
            return profile.cold_starts(self.when)
        return profile.figure_runs(self.name)

    def select(self, profile: Any, selection: str) -> list[str]:
        """A run selection of ``reads`` (see ``config/artifacts.yaml``)."""
        runs = self.runs(profile)
        return {
            "runs": lambda: runs,
            "runs+replicates": lambda: profile.with_replicates(runs),
            "base+runs": lambda: ["base", *runs],
            "table1": lambda: ["base", *profile.with_replicates(runs), *profile.selected_runs],
            "first_run": lambda: runs[:1],
            "all_runs": lambda: profile.runs,
            "all": lambda: profile.all_runs,
            "calibration": lambda: profile.calibration_runs,
            "base+calibration": lambda: ["base", *profile.calibration_runs],
            "base+frontier": lambda: ["base", *profile.with_replicates(profile.frontier_runs)],
            "post": lambda: [f"{cold}+{self.when}" for cold in runs],
            "runs+post": lambda: [*runs, *(f"{cold}+{self.when}" for cold in runs)],
            "trained": lambda: [*profile.runs, *profile.post_runs],
            "runs+stages": lambda: [
                *runs,
                *(p for r in runs for p in profile.post_runs if p.startswith(f"{r}+")),
            ],
        }[selection]()

    def inputs(self, profile: Any) -> list[str]:
        """Every file the notebook reads, relative to the project root (Snakemake re-runs it when one changes)."""
        lay: Layout = profile.layout
        files = [lay.rel(PAPER_DIR / f"{t}.csv") for t in self.paper_tables]
        for read in self.reads:
            # tables and figures show a repeated run's seeds (mean ± sd, bands): every seed's file is read
            runs = list(dict.fromkeys(profile.with_replicates(self.select(profile, read["runs"]))))
            if read["kind"] == "evals":
                sets = (
                    profile.final_task_sets
                    if read["task_sets"] == "final"
                    else ["in_domain", "out_of_domain"]
                )
                files += [lay.rel(lay.eval(r, s)) for r in runs for s in sets if s in profile.task_sets_of(r)]
            elif read["kind"] == "judge":
                # judge scores exist where the profile has paper.judge (rules/judge.smk)
                judged = bool((profile.data.get("paper") or {}).get("judge"))
                files += [lay.rel(lay.eval(r, "judge")) for r in runs] if judged else []
            elif read["kind"] == "curves":  # hub SFT-stage runs keep no curves (psftlib.train.hub)
                files += [lay.rel(lay.run(r) / "eval.jsonl") for r in runs if _keeps_curves(profile, r)]
            else:  # a run's tokens.parquet / traces.parquet are written with its metrics.jsonl, which stands for them
                files += [lay.rel(lay.run(r) / "metrics.jsonl") for r in runs if r not in profile.base_runs]
        return files

    def outputs(self, profile: Any) -> dict[str, str]:
        """Named outputs (relative to the project root): each figure's ``png`` and ``pdf``, each table's ``md`` and
        ``csv``, the extra CSVs, the findings, the executed notebook and its page (``executed``, committed)."""
        lay: Layout = profile.layout
        out: dict[str, str] = {}
        for stem in self.figures:
            out[f"{stem}_png"] = lay.rel(lay.figure(stem, "png"))
            out[f"{stem}_pdf"] = lay.rel(lay.figure(stem, "pdf"))
        for stem in self.tables:
            out[f"{stem}_md"] = lay.rel(lay.table(stem, "md"))
            out[f"{stem}_csv"] = lay.rel(lay.table(stem, "csv"))
        for stem in self.csv:
            out[f"{stem}_csv"] = lay.rel(lay.table(stem, "csv"))
        if self.findings:
            out["findings"] = lay.rel(lay.findings)
        out["executed"] = lay.rel(lay.executed(self.name))
        out["notebook"] = lay.rel(lay.notebook(self.name))
        return out

    def params_of(self, profile: Any) -> dict[str, Any]:
        """The notebook's parameters from the profile (``profile`` always; then those ``params`` names)."""
        spec = (profile.data.get("figures") or {}).get(self.name, {})
        values: dict[str, Any] = {"profile": profile.name}
        for name in self.params:
            values[name] = {
                "runs": lambda: spec["runs"],
                "smooth": lambda: spec.get("smooth", 1),
                "run": lambda: spec["runs"][0],
                "cold_starts": lambda: profile.cold_starts(self.when),
            }[name]()
        return values

    def shell_params(self, profile: Any) -> str:
        """The parameters as ``psftlib.notebook`` flags (``-p runs '["sft", "psft"]'``; values parsed as YAML)."""
        flags = [
            "-p publish True"
        ]  # the pipeline writes the committed outputs (a notebook run by hand: scratch/)
        for name, value in self.params_of(profile).items():
            text = json.dumps(value) if isinstance(value, list) else str(value)
            flags.append(f"-p {name} '{text}'" if isinstance(value, list) else f"-p {name} {text}")
        return " ".join(flags)

    def reported(self, profile: Any) -> list[Output]:
        """The figures, then the tables, the report shows for this artifact."""
        lay: Layout = profile.layout
        return [
            *(Output(self.name, "figure", s, c, lay.figure(s)) for s, c in self.figures.items()),
            *(Output(self.name, "table", s, c, lay.table(s)) for s, c in self.tables.items()),
        ]


def _keeps_curves(profile: Any, run: str) -> bool:
    """Whether a run writes ``eval.jsonl``: post-training runs always, SFT-stage runs outside the hub world."""
    return run in profile.post_runs or profile.data["world"]["kind"] != "hub"


def _check(name: str, entry: Any) -> Artifact:
    where = f"{REGISTRY_PATH.name}: {name}"
    if not isinstance(entry, dict):
        raise ArtifactError(f"{where}: expected a mapping")
    unknown = sorted(set(entry) - set(KEYS))
    if unknown:
        raise ArtifactError(f"{where}: unknown key(s) {unknown}; known: {list(KEYS)}")
    for key in ("paper", "when"):
        if key not in entry:
            raise ArtifactError(f"{where}: {key}: missing")
    if entry["when"] not in WHEN:
        raise ArtifactError(f"{where}: when: {entry['when']!r} is not one of {list(WHEN)}")
    for p in entry.get("params", []):
        if p not in PARAMS:
            raise ArtifactError(f"{where}: params: {p!r} is not one of {list(PARAMS)}")
    for i, read in enumerate(entry.get("reads", [])):
        if read.get("kind") not in READ_KINDS or read.get("runs") not in RUN_SELECTIONS:
            raise ArtifactError(
                f"{where}: reads.{i}: needs kind in {list(READ_KINDS)}, runs in {list(RUN_SELECTIONS)}"
            )
        if read["kind"] == "evals" and read.get("task_sets") not in ("final", "domains"):
            raise ArtifactError(f"{where}: reads.{i}.task_sets: 'final' or 'domains'")
    return Artifact(
        name=name, paper=entry["paper"], when=entry["when"], params=tuple(entry.get("params", [])),
        reads=tuple(entry.get("reads", [])), paper_tables=tuple(entry.get("paper_tables", [])),
        figures=dict(entry.get("figures") or {}), tables=dict(entry.get("tables") or {}),
        csv=tuple(entry.get("csv", [])), findings=bool(entry.get("findings", False)),
    )  # fmt: skip


@functools.cache
def load_artifacts(path: Path = REGISTRY_PATH) -> dict[str, Artifact]:
    """Every artifact of the registry, in its order (the report's order)."""
    with open(path) as f:
        raw = yaml.safe_load(f)
    return {name: _check(name, entry) for name, entry in raw.items()}


def present(profile: Any) -> list[Artifact]:
    """The artifacts ``profile`` builds, in registry order."""
    return [a for a in load_artifacts().values() if a.present(profile)]


def reported(profile: Any) -> list[Output]:
    """Every figure and table the report shows for ``profile``: all outputs of every artifact it builds."""
    return [o for a in present(profile) for o in a.reported(profile)]
