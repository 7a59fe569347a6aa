"""The paper's findings as measurable tests on this run's outputs, each with a verdict.

Every finding is a claim quoted from the paper, a test written as code (``Test.fn``), the numbers it used, and a
verdict: **holds**, **does not hold**, **within noise**, or **not run** (a run it needs is not in the profile).

Noise rule (stated once, applied to every comparison): a difference ``a - b`` counts only beyond two standard
errors of it (``sqrt(se_a**2 + se_b**2)``). For one run, the standard error of a final score comes from the eval
harness (avg@k over problems, combined over the tasks of a domain) and that of a training quantity from the
spread of the last epoch's per-train-batch values. For a run the profile repeats over seeds (``seed_replicates``:
the run and its ``<run>_seed<k>`` copies), the estimate is the mean over the seeds and its standard error the
larger of the seed-to-seed one (``std(ddof=1) / sqrt(n_seeds)``) and the single-run one averaged over seeds
(``sqrt(sum se_i**2) / n_seeds``), so a verdict of *holds* needs the effect to exceed the seed spread. Runs the
profile does not repeat carry no seed variation in their errors, which the findings table says per row.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from psftlib.config import ConfigError, load_profile, replicates
from psftlib.layout import ROOT, Layout
from psftlib.report.analysis import (
    boundary_share,
    clipped_token_stats,
    curves,
    per_train_batch,
    reflective_share,
    run_dir,
    run_metrics,
)
from psftlib.worlds.small import REFLECTIVE

HOLDS, FAILS, NOISE, NOT_RUN = "holds", "does not hold", "within noise", "not run"


@dataclass
class Estimate:
    value: float
    se: float

    def __sub__(self, other: Estimate) -> Estimate:
        return Estimate(self.value - other.value, math.hypot(self.se, other.se))

    def __str__(self) -> str:
        return f"{self.value:.3f} ± {self.se:.3f}"


def verdict(diff: Estimate, at_least: bool = False) -> str:
    """``diff > 0`` beyond 2 se: holds; below -2 se: does not hold; else within noise (``at_least``: a claim of
    "matches or surpasses" holds unless significantly below)."""
    if diff.value > 2 * diff.se:
        return HOLDS
    if diff.value < -2 * diff.se:
        return FAILS
    return HOLDS if at_least else NOISE


def over_seeds(estimates: list[Estimate]) -> Estimate:
    """Mean of per-seed estimates; se = max(seed-to-seed se, the per-seed errors averaged) (module docstring)."""
    n = len(estimates)
    if n == 1:
        return estimates[0]
    values = np.array([e.value for e in estimates])
    seed_se = float(values.std(ddof=1) / math.sqrt(n))
    run_se = math.sqrt(sum(e.se**2 for e in estimates)) / n
    return Estimate(float(values.mean()), max(seed_se, run_se))


class Runs:
    """Lazy access to a profile's finished runs; a run the profile repeats over seeds is read as their mean."""

    def __init__(self, profile: str, root: Path = ROOT):
        self.profile, self.root = profile, root
        try:
            self._profile = load_profile(profile)
        except ConfigError:  # a results tree without its config (tests): no replicates known
            self._profile = None
        self.seeds_used: dict[str, int] = {}

    def replicates(self, run: str) -> list[str]:
        """``run`` and those of its seed replicates that have finished."""
        names = [run] if self._profile is None else replicates(self._profile, run)
        done = [r for r in names if self._has_eval(r)] or [run]
        self.seeds_used[run] = len(done)
        return done

    def _has_eval(self, run: str) -> bool:
        return Layout(self.profile, self.root).eval(run, "in_domain").exists()

    def exists(self, *runs: str) -> bool:
        return all(self._has_eval(r) for r in runs)

    def score(self, run: str, domain: str, tasks: tuple[str, ...] = ()) -> Estimate:
        """Mean avg@k over a domain's tasks (or the given ones) with its standard error, over seeds."""
        return over_seeds([self._score(r, domain, tasks) for r in self.replicates(run)])

    def _score(self, run: str, domain: str, tasks: tuple[str, ...] = ()) -> Estimate:
        path = Layout(self.profile, self.root).eval(run, domain)
        scores = json.loads(path.read_text())["scores"]
        keep = [t for t in scores if not tasks or t in tasks]
        values = [scores[t]["avg_at_k"] for t in keep]
        ses = [scores[t].get("avg_at_k_stderr", 0.0) or 0.0 for t in keep]
        return Estimate(float(np.mean(values)), float(math.sqrt(sum(s * s for s in ses)) / len(ses)))

    def last_epoch(self, run: str, column: str) -> Estimate:
        """Mean of ``column`` over the last epoch's train batches, with its standard error, over seeds."""
        return over_seeds([self._last_epoch(r, column) for r in self.replicates(run)])

    def _last_epoch(self, run: str, column: str) -> Estimate:
        m = per_train_batch(run_metrics(self.profile, run, self.root), [column])
        last = m[m["epoch"] == m["epoch"].max()][column]
        return Estimate(
            float(last.mean()), float(last.std(ddof=1) / math.sqrt(len(last))) if len(last) > 1 else 0.0
        )

    def sawtooth(self, run: str, column: str) -> float:
        """Share of the net drop of ``column`` that happens at epoch boundaries, mean over seeds."""
        return float(np.mean([
            boundary_share(run_metrics(self.profile, r, self.root), column)
            for r in self.replicates(run)
        ]))  # fmt: skip


@dataclass
class Finding:
    id: str
    claim: str  # the paper's words (shortened)
    test: str  # what is measured, in words; the code is ``fn``
    needs: tuple[str, ...]
    fn: Callable[[Runs], tuple[str, str]]  # -> (numbers, verdict)


def _entropy_kept(r: Runs) -> tuple[str, str]:
    p, s = r.last_epoch("psft", "entropy"), r.last_epoch("sft", "entropy")
    return f"PSFT {p}, SFT {s}", verdict(p - s)


def _sawtooth(r: Runs) -> tuple[str, str]:
    s, p = r.sawtooth("sft", "entropy"), r.sawtooth("psft", "entropy")
    if not (np.isfinite(s) and np.isfinite(p)):
        return f"SFT {s:.3f}, PSFT {p:.3f} (no net drop in one of them)", NOISE
    return f"boundary share of the entropy drop: SFT {s:.3f}, PSFT {p:.3f}", HOLDS if s > p + 0.1 else (
        FAILS if p > s + 0.1 else NOISE)  # fmt: skip


def _in_domain_match(r: Runs) -> tuple[str, str]:
    p, s = r.score("psft", "in_domain"), r.score("sft", "in_domain")
    return f"in-domain PSFT {p}, SFT {s}", verdict(p - s, at_least=True)


def _warmup_beats_sft(r: Runs) -> tuple[str, str]:
    w, s = r.score("psft_warmup24", "in_domain"), r.score("sft", "in_domain")
    return f"in-domain PSFT+warm-up(24) {w}, SFT {s}", verdict(w - s)


def _longer_warmup(r: Runs) -> tuple[str, str]:
    a, b = r.score("psft_warmup24", "in_domain"), r.score("psft_warmup12", "in_domain")
    return f"in-domain warm-up 24 {a}, warm-up 12 {b}", verdict(a - b)


def _ood(r: Runs) -> tuple[str, str]:
    p, s = r.score("psft", "out_of_domain"), r.score("sft", "out_of_domain")
    return f"out-of-domain PSFT {p}, SFT {s}", verdict(p - s)


def _ifeval(r: Runs) -> tuple[str, str]:
    p, s = (r.score(x, "out_of_domain", ("world_skill_format",)) for x in ("psft", "sft"))
    return f"format following PSFT {p}, SFT {s}", verdict(p - s)


def _fluctuation(r: Runs) -> tuple[str, str]:
    tv = {}
    for run in ("psft", "sft"):
        per_seed = [curves(r.profile, x, r.root)["out_of_domain"].to_numpy() for x in r.replicates(run)]
        tv[run] = float(np.mean([np.abs(np.diff(c)).sum() for c in per_seed]))
    verdict_ = (
        NOISE
        if math.isclose(tv["psft"], tv["sft"], abs_tol=1e-9)
        else HOLDS
        if tv["psft"] < tv["sft"]
        else FAILS
    )
    return f"total variation of the OOD curve: PSFT {tv['psft']:.3f}, SFT {tv['sft']:.3f}", verdict_


def _clipping_not_step_size(r: Runs) -> tuple[str, str]:
    p, c = r.score("psft", "out_of_domain"), r.score("sft_as_psft", "out_of_domain")
    pe, ce = r.last_epoch("psft", "entropy"), r.last_epoch("sft_as_psft", "entropy")
    v = verdict(p - c) if verdict(p - c) != NOISE else verdict(pe - ce)
    return f"OOD PSFT {p} vs SFT at PSFT's steps and lr {c}; entropy {pe} vs {ce}", v


def _clipped_reflective(r: Runs) -> tuple[str, str]:
    path = run_dir(r.profile, "psft", r.root) / "tokens.parquet"
    if not path.exists():
        return "psft ran without token telemetry (token_sample_rate 0)", NOT_RUN
    share = reflective_share(clipped_token_stats(pd.read_parquet(path)), REFLECTIVE)
    over = share["reflective_share_of_clipped"] / share["reflective_share_of_trained"]
    numbers = "; ".join(f"{ph}: {row.reflective_share_of_clipped:.3f} of clipped vs {row.reflective_share_of_trained:.3f}"
                        f" of trained ({int(row.clipped_tokens)} clips)" for ph, row in share.iterrows())  # fmt: skip
    return numbers, HOLDS if (over > 2).sum() >= 2 else (FAILS if (over < 1).all() else NOISE)


def _noclip_grad_norm(r: Runs) -> tuple[str, str]:
    n, p = r.last_epoch("psft_noclip", "grad_norm"), r.last_epoch("psft", "grad_norm")
    return f"grad norm, last epoch: no clip {n}, eps_high 0.28 {p}", verdict(n - p)


def _in_domain_gt(a: str, b: str) -> Callable[[Runs], tuple[str, str]]:
    def fn(r: Runs) -> tuple[str, str]:
        x, y = r.score(a, "in_domain"), r.score(b, "in_domain")
        return f"in-domain {a} {x}, {b} {y}", verdict(x - y)

    return fn


def _posttrain(stage: str, domain: str) -> Callable[[Runs], tuple[str, str]]:
    def fn(r: Runs) -> tuple[str, str]:
        p, s = r.score(f"psft+{stage}", domain), r.score(f"sft+{stage}", domain)
        return f"{domain} PSFT+{stage.upper()} {p}, SFT+{stage.upper()} {s}", verdict(p - s)

    return fn


FINDINGS = [
    Finding("4.1.1-1a", "PSFT avoids entropy collapse", "mean token entropy over the last epoch: PSFT > SFT",
            ("psft", "sft"), _entropy_kept),
    Finding("4.1.1-1b", "for SFT, entropy shows a marked decline after each epoch (sawtooth); PSFT is smoother",
            "share of the entropy drop at epoch boundaries: SFT > PSFT + 0.1", ("psft", "sft"), _sawtooth),
    Finding("4.1.1-2", "PSFT matches or surpasses in-domain performance of SFT",
            "final in-domain avg@k: PSFT >= SFT - 2 se", ("psft", "sft"), _in_domain_match),
    Finding("4.1.1-3a", "PSFT with warm-up surpasses standard SFT", "final in-domain: PSFT+warm-up(24) > SFT",
            ("psft_warmup24", "sft"), _warmup_beats_sft),
    Finding("4.1.1-3b", "longer warm-up periods yield greater in-domain gains",
            "final in-domain: warm-up 24 > warm-up 12 train batches", ("psft_warmup24", "psft_warmup12"),
            _longer_warmup),
    Finding("4.1.1-4", "PSFT avoids large fluctuations in out-of-domain performance",
            "total variation of the out-of-domain curve: PSFT < SFT", ("psft", "sft"), _fluctuation),
    Finding("4.1.2-2a", "PSFT generalizes better than SFT out of domain", "final out-of-domain mean: PSFT > SFT",
            ("psft", "sft"), _ood),
    Finding("4.1.2-2b", "SFT degrades instruction following (IFEval); PSFT compromises it minimally",
            "final format-following score: PSFT > SFT", ("psft", "sft"), _ifeval),
    Finding("control", "(ours) the effect is clipping, not PSFT's smaller steps",
            "PSFT vs SFT run with PSFT's step structure and lr: OOD (then entropy) PSFT > control",
            ("psft", "sft_as_psft"), _clipping_not_step_size),
    Finding("5.1", "the clipped tokens are mostly thinking-pattern words (wait, alternatively, ...)",
            "share of reflective words among PSFT's clipped tokens > 2x their share among trained tokens, in at least "
            "2 of the 3 phases (early / middle / late)", ("psft",), _clipped_reflective),
    Finding("5.2", "PSFT without clipping suffers from large, unstable gradient norms",
            "mean gradient norm over the last epoch: no clip > eps_high 0.28", ("psft_noclip", "psft"), _noclip_grad_norm),
    Finding("5.3a", "updating the old policy is essential: a fixed reference (no updates) performs poorly",
            "final in-domain: refresh every train batch > never", ("psft", "psft_refresh_never"),
            _in_domain_gt("psft", "psft_refresh_never")),
    Finding("5.3b", "frequent updates (every 4 steps) deliver substantial in-domain gains",
            "final in-domain: refresh every 4 mini batches > every 8 (each train batch)", ("psft_refresh4", "psft"),
            _in_domain_gt("psft_refresh4", "psft")),
    Finding("4.2-3", "PSFT achieves better in-domain performance after RL", "final in-domain: PSFT+GRPO > SFT+GRPO",
            ("psft+grpo", "sft+grpo"), _posttrain("grpo", "in_domain")),
    Finding("4.2-4", "PSFT outperforms SFT out of domain after RL", "final out-of-domain: PSFT+GRPO > SFT+GRPO",
            ("psft+grpo", "sft+grpo"), _posttrain("grpo", "out_of_domain")),
    Finding("4.3-3", "PSFT reduces the alignment tax", "final out-of-domain after DPO: PSFT+DPO > SFT+DPO",
            ("psft+dpo", "sft+dpo"), _posttrain("dpo", "out_of_domain")),
]  # fmt: skip


def evaluate_findings(profile: str, root: Path = ROOT) -> list[dict[str, Any]]:
    """One row per finding: id, claim, test, numbers, verdict."""
    runs = Runs(profile, root)
    rows = []
    for f in FINDINGS:
        runs.seeds_used = {}
        if not runs.exists(*f.needs):
            numbers, v = f"needs runs {', '.join(f.needs)}", NOT_RUN
        else:
            numbers, v = f.fn(runs)
        seeds = ", ".join(f"{run} {n}" for run, n in runs.seeds_used.items()) or "-"
        rows.append(
            {"id": f.id, "claim": f.claim, "test": f.test, "numbers": numbers, "seeds": seeds, "verdict": v}
        )
    return rows
