"""The per-seed measures the findings test (:mod:`psftlib.report.findings`), read from a profile's finished runs:
final scores, last-epoch training quantities, gradient-norm statistics by phase, epoch-boundary drops, the
fluctuation of in-training curves; and the equivalence margins, each fixed from the scale of its measure.

Equivalence margins (set before the tests were run on any output):

* scores (avg@k, 0-1): δ = 0.05, five points of accuracy, a twentieth of the scale;
* token entropy (nats): δ = 10 % of the base model's held-out entropy (its step-0 evaluation, not an outcome);
  an epoch-boundary drop: that δ spread over the run's epoch boundaries; a trend per step: δ over the run's steps;
* out-of-domain fluctuation (excess total variation of a curve): 2 × 0.05, one dip and recovery of five points;
* ratios (gradient norms, reflective-word enrichment, DPO's chosen / rejected odds): a factor 2.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from psftlib.config import ConfigError, Profile, load_profile, replicates
from psftlib.layout import ROOT, Layout
from psftlib.report.analysis import per_train_batch, read_jsonl_frame, run_dir
from psftlib.report.stats import Test, seed_test

SCORE_DELTA = 0.05
FLUCTUATION_DELTA = 2 * SCORE_DELTA
RATIO_FACTOR = 2.0
ENTROPY_SHARE = 0.10  # of the base model's held-out entropy
FORMAT_TASK = "world_skill_format"  # the small world's IFEval (psftlib.worlds.small: format instructions)


class Runs:
    """A profile's finished runs, read per seed: each measure is a function of one run's outputs; a run the profile
    repeats over seeds (``seed_replicates``) gives one value per finished seed."""

    def __init__(self, profile: str, root: Path = ROOT):
        self.profile, self.root = profile, root
        try:
            self._profile: Profile | None = load_profile(profile)
        except ConfigError as err:  # a results tree without its config (tests): no replicates known
            if "no such profile" not in str(err):
                raise
            self._profile = None
        self.seeds_used: dict[str, int] = {}
        self.pooled_from: list[str] = []

    # ---- which runs ----
    def seeds(self, run: str) -> list[str]:
        """``run`` and those of its seed replicates that have finished (recorded for the row's seeds column)."""
        names = [run] if self._profile is None else replicates(self._profile, run)
        done = [r for r in names if self._has_eval(r)] or [run]
        self.seeds_used[run] = len(done)
        return done

    def _has_eval(self, run: str) -> bool:
        return Layout(self.profile, self.root).eval(run, "in_domain").exists()

    def exists(self, *runs: str) -> bool:
        return all(self._has_eval(r) for r in runs)

    def replicated(self) -> list[list[str]]:
        """The seed runs of every run the profile replicates that has 2+ finished seeds (the variance pool)."""
        if self._profile is None:
            return []
        runs = (self._profile.data.get("seed_replicates") or {}).get("runs", [])
        groups = [[r for r in replicates(self._profile, run) if self._has_eval(r)] for run in runs]
        return [g for g in groups if len(g) >= 2]

    # ---- comparisons ----
    def compare(self, a: str, b: str, measure: Callable[[str], float], **kw: Any) -> Test:
        """``seed_test`` of ``measure`` over the seeds of ``a`` and ``b``, the pool being the replicated runs."""
        pool = [[measure(r) for r in g] for g in self.replicated()]
        values = [[measure(r) for r in self.seeds(x)] for x in (a, b)]
        return self.seed_test(*values, pool, labels=kw.pop("labels", (a, b)), **kw)

    def seed_test(self, a: list[float], b: list[float], pool: list[list[float]], **kw: Any) -> Test:
        """:func:`stats.seed_test`, noting in the row when the seed variance was pooled and from which runs."""
        t = seed_test(a, b, pool, **kw)
        if t.method.startswith("pooled"):
            self.pooled_from = [g[0] for g in self.replicated()]
        return t

    # ---- measures of one run ----
    def score(self, run: str, domain: str, tasks: tuple[str, ...] = ()) -> float:
        """Mean avg@k of the final evaluation over a task set's tasks (or the given ones)."""
        return _score(Layout(self.profile, self.root).eval(run, domain), tasks)

    def metrics(self, run: str) -> pd.DataFrame:
        return _frame(run_dir(self.profile, run, self.root) / "metrics.jsonl")

    def last_epoch(self, run: str, column: str) -> float:
        """Mean of ``column`` over the last epoch's train batches."""
        m = per_train_batch(self.metrics(run), [column])
        return float(m[m["epoch"] == m["epoch"].max()][column].mean())

    def instruction_task(self) -> tuple[str, tuple[str, ...]] | None:
        """(task set, tasks) of instruction following: the profile's ``ifeval`` task set when it has one (the paper
        profile), else the small world's format task among the out-of-domain tasks; None when neither exists."""
        sets = (self._profile.task_sets if self._profile else {}) or {}
        if sets.get("ifeval"):
            return "ifeval", tuple(sets["ifeval"])
        if self._profile is None or FORMAT_TASK in sets.get("out_of_domain", []):
            return "out_of_domain", (FORMAT_TASK,)
        return None

    def entropy_delta(self) -> float:
        """10 % of the base model's held-out entropy (step 0 of the first training run's in-training evaluation); a
        profile without held-out demonstrations (hub: no ``teacher_forced`` scores) takes the base model's entropy on
        the first mini batch it trains on (the first run's first metrics line, before its update)."""
        runs = self._profile.runs if self._profile else ["sft", "psft"]
        for run in runs:
            path = run_dir(self.profile, run, self.root) / "eval.jsonl"
            if path.exists():
                first = _frame(path).iloc[0]
                if "heldout_entropy" in first and first["step"] == 0:
                    return ENTROPY_SHARE * float(first["heldout_entropy"])
        for run in runs if self._profile and self._profile["world"]["kind"] == "hub" else []:
            path = run_dir(self.profile, run, self.root) / "metrics.jsonl"
            if path.exists():
                return ENTROPY_SHARE * float(_frame(path).iloc[0]["entropy"])
        raise FileNotFoundError(
            f"no run of profile {self.profile} has a step-0 held-out entropy in eval.jsonl"
        )


@cache
def _frame(path: Path) -> pd.DataFrame:
    return read_jsonl_frame(path)


def _score(path: Path, tasks: tuple[str, ...]) -> float:
    scores = json.loads(path.read_text())["scores"]
    values = [s["avg_at_k"] for t, s in scores.items() if not tasks or t in tasks]
    if not values:
        raise ValueError(f"{path}: none of the tasks {list(tasks)} has a score")
    return float(np.mean(values))


# ---- measures behind several findings ----
def grad_norm_stat(metrics: pd.DataFrame, phase: str, stat: str) -> float:
    """``mean`` / ``p99`` / ``max`` of the per-step gradient norm (before clipping to max_grad_norm) over the whole
    run (``all``), its first epoch (``early``) or its last (``late``)."""
    epoch = np.ceil(metrics["epoch"] - 1e-9).astype(int) - 1
    g = metrics["grad_norm"][{"all": epoch >= 0, "early": epoch == 0, "late": epoch == epoch.max()}[phase]]
    return float({"mean": g.mean(), "p99": g.quantile(0.99), "max": g.max()}[stat])


def boundary_drops(metrics: pd.DataFrame, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(drops across epoch boundaries, drops between consecutive train batches inside an epoch) of the per-train-
    batch mean of ``column``; a drop is the earlier value minus the later one."""
    m = per_train_batch(metrics, [column])
    drop = -np.diff(m[column].to_numpy())
    across = np.diff(m["epoch"].to_numpy()) != 0
    return drop[across], drop[~across]


def sawtooth_excess(metrics: pd.DataFrame, column: str = "entropy") -> float:
    """Mean drop of ``column`` across an epoch boundary minus the mean drop between two train batches inside an
    epoch: the sawtooth beyond the run's own steady decline (0: no sawtooth). NaN without an epoch boundary."""
    across, inside = boundary_drops(metrics, column)
    return float(across.mean() - inside.mean()) if len(across) else math.nan


def excess_variation(curve: np.ndarray) -> float:
    """Total variation of a curve minus its net change: 0 for a monotone curve, twice the sum of its reversals
    otherwise (the fluctuation with the trend removed)."""
    return float(np.abs(np.diff(curve)).sum() - abs(curve[-1] - curve[0]))
