"""The paper's findings as measurable tests on this run's outputs, each with a verdict a statistician would sign.

Every finding is a claim from the paper, a test written as code (``Finding.fn``), the numbers it used (means with
95 % t intervals, the difference with its interval), the test's statistic, degrees of freedom and p-value, an
equivalence bound, the seeds behind each run, and a verdict: **holds**, **does not hold**, **equivalent within
±δ**, **inconclusive**, or **not run** (a run it needs is not in the profile).

Variance: training seeds. A run the profile repeats (``seed_replicates``) gives one value per seed, and two such runs
are compared by Welch's t test. A run with one seed has no variance of its own: its seed variance is the pooled
seed variance of the replicated runs (every run of ``seed_replicates`` with 2+ finished seeds; the row names them).
Scores are the mean avg@k over a domain's tasks on fixed evaluation problems; the inference is over seeds with the
problems held fixed. Where no replicated measure exists (a trend within a run, DPO's per-batch log-probabilities,
the clipped tokens), the row says which noise it uses instead.

Multiple comparisons: the rows of this table are one family for the difference tests and one for the equivalence
tests; each is Holm-adjusted (family-wise error 5 %), and verdicts use the adjusted p-values
(``psftlib/report/stats.py``). Rows placed above the paper's findings (``LEAD_FINDINGS``: the learning-rate
frontier) carry their own tests and adjustment.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from psftlib.layout import ROOT
from psftlib.report.analysis import clipped_token_stats, curves, run_dir
from psftlib.report.findings_data import (
    FLUCTUATION_DELTA,
    RATIO_FACTOR,
    SCORE_DELTA,
    Runs,
    boundary_drops,
    excess_variation,
    grad_norm_stat,
    sawtooth_excess,
)
from psftlib.report.frontier import frontier_findings
from psftlib.report.stats import (
    FAILS,
    HOLDS,
    INCONCLUSIVE,
    NOT_RUN,
    Test,
    binomial_enrichment,
    decide,
    paired_test,
    slope_difference,
)
from psftlib.worlds.small import REFLECTIVE

VERDICTS = (HOLDS, FAILS, "equivalent within", INCONCLUSIVE, NOT_RUN)  # every row's verdict starts with one
LOG2 = math.log(RATIO_FACTOR)


@dataclass
class Finding:
    id: str
    claim: str  # the paper's words (shortened)
    test: str  # what is measured and how it is tested, in words; the code is ``fn``
    needs: tuple[str, ...]
    fn: Callable[[Runs], Test]


# ---- the hook for findings placed above the paper's (the lead's learning-rate frontier) ----
def _frontier_rows(profile: str, root: Path) -> list[dict[str, Any]]:
    """The frontier's rows; one *not run* row naming the first missing output while its runs are unfinished (the
    pipeline's findings rule waits for them; a notebook run by hand may not)."""
    try:
        return frontier_findings(profile, root)
    except FileNotFoundError as err:
        return [{"id": "frontier", "claim": "PSFT keeps more out-of-domain skill at equal in-domain gain",
                 "test": "psftlib/report/frontier.py", "numbers": f"not all runs finished: {err}", "seeds": "-",
                 "verdict": NOT_RUN}]  # fmt: skip


# Functions (profile, root) -> rows (``id, claim, test, numbers, seeds, verdict``, optionally ``statistic`` and
# ``equivalence``) whose rows come first in the findings, each with its own tests and multiple-comparison family.
LEAD_FINDINGS: list[Callable[[str, Path], list[dict[str, Any]]]] = [_frontier_rows]


# ---- tests ----
def _domain(domain: str, a: str, b: str, kind: str = "greater") -> Callable[[Runs], Test]:
    def fn(r: Runs) -> Test:
        return r.compare(a, b, lambda x: r.score(x, domain), delta=SCORE_DELTA, kind=kind)

    return fn


def _instruction(a: str, b: str) -> Callable[[Runs], Test]:
    def fn(r: Runs) -> Test | None:
        if (found := r.instruction_task()) is None:  # no instruction-following task in the profile: not run
            return None
        task_set, tasks = found
        t = r.compare(a, b, lambda x: r.score(x, task_set, tasks), delta=SCORE_DELTA)
        t.note = f"tasks {', '.join(tasks)}"
        return t

    return fn


def _entropy_kept(r: Runs) -> Test:
    return r.compare("psft", "sft", lambda x: r.last_epoch(x, "entropy"), delta=r.entropy_delta())


def _sawtooth(r: Runs) -> Test:
    n_boundaries = len(boundary_drops(r.metrics("sft"), "entropy")[0])
    t = r.compare(
        "sft", "psft", lambda x: sawtooth_excess(r.metrics(x)), delta=r.entropy_delta() / max(1, n_boundaries)
    )
    drops = {
        x: np.concatenate([boundary_drops(r.metrics(s), "entropy")[0] for s in r.seeds(x)])
        for x in ("sft", "psft")
    }
    drops = {x: d for x, d in drops.items() if len(d) > 1}
    t.note = "mean boundary drop (nats): " + ", ".join(f"{x} {d.mean():.4f} (sd {d.std(ddof=1):.4f}, n {len(d)})"
                                                      for x, d in drops.items())  # fmt: skip
    return t


def _fluctuation(r: Runs) -> Test:
    def measure(x: str) -> float:
        return excess_variation(curves(r.profile, x, r.root)["out_of_domain"].to_numpy())

    t = r.compare("sft", "psft", measure, delta=FLUCTUATION_DELTA)
    points = curves(r.profile, "psft", r.root)
    t.note = f"{len(points)} evaluation points per curve"
    return t


def _control(column: str) -> Callable[[Runs], Test]:
    def fn(r: Runs) -> Test:
        if column == "out_of_domain":
            return r.compare("psft", "sft_as_psft", lambda x: r.score(x, column), delta=SCORE_DELTA)
        return r.compare("psft", "sft_as_psft", lambda x: r.last_epoch(x, column), delta=r.entropy_delta())

    return fn


def _clipped_reflective(r: Runs) -> Test:
    """Reflective words among PSFT's clipped tokens against their share among its trained (sampled) tokens, strata
    seed x phase; the expected share is the clipped-count-weighted trained share (independence within strata)."""
    k = n = expected = 0.0
    phases: dict[str, list[float]] = {}
    for seed_run in r.seeds("psft"):
        path = run_dir(r.profile, seed_run, r.root) / "tokens.parquet"
        if not path.exists():
            continue
        stats_ = clipped_token_stats(pd.read_parquet(path))
        for phase, g in stats_.groupby("phase", observed=True):
            is_w = g["token_text"].isin(REFLECTIVE)
            clipped, reflective = float(g["clipped"].sum()), float(g.loc[is_w, "clipped"].sum())
            share = g.loc[is_w, "trained"].sum() / max(1, g["trained"].sum())
            k, n, expected = k + reflective, n + clipped, expected + clipped * share
            acc = phases.setdefault(str(phase), [0.0, 0.0, 0.0])
            acc[0], acc[1], acc[2] = acc[0] + reflective, acc[1] + clipped, acc[2] + clipped * share
    t = binomial_enrichment(
        int(k), int(n), expected / n if n else 0.0, factor=RATIO_FACTOR, label="reflective share of clipped"
    )
    t.note = "per phase, reflective of clipped (expected): " + ", ".join(
        f"{ph} {int(a)}/{int(b)} ({c:.1f})" for ph, (a, b, c) in phases.items())  # fmt: skip
    return t


def _grad_norm(phase: str) -> Callable[[Runs], Test]:
    def fn(r: Runs) -> Test:
        def measure(stat: str) -> Callable[[str], float]:
            return lambda x: grad_norm_stat(r.metrics(x), phase, stat)

        tests = {
            s: r.compare("psft_noclip", "psft", measure(s), delta=LOG2, log=True)
            for s in ("mean", "p99", "max")
        }
        t = tests["mean"]
        t.note = "; ".join(f"{s}: ratio {math.exp(x.estimate):.3g} (95 % CI {math.exp(x.ci[0]):.3g}.."
                           f"{math.exp(x.ci[1]):.3g}), p = {x.p:.2g} unadjusted (descriptive)"
                           for s, x in tests.items() if s != "mean")  # fmt: skip
        return t

    return fn


def _post_gain(
    stage: str, domain: str, tasks: Callable[[Runs], tuple[str, tuple[str, ...]]] | None = None
) -> Callable[[Runs], Test]:
    """The change of a score over post-training ``stage`` (final of ``<cold>+<stage>`` minus final of ``<cold>``),
    PSFT cold start against SFT's; the seed variance of each post-trained run is the pool's."""

    def fn(r: Runs) -> Test | None:
        if (found := tasks(r) if tasks else (domain, ())) is None:  # no such task in the profile: not run
            return None
        task_set, which = found

        def score(x: str) -> float:
            return r.score(x, task_set, which)

        gains = [[score(f"{c}+{stage}") - score(c)] for c in ("psft", "sft")]
        r.seeds(f"psft+{stage}"), r.seeds(f"sft+{stage}")
        pool = [[score(x) for x in g] for g in r.replicated()]
        return r.seed_test(*gains, pool, delta=SCORE_DELTA, labels=("PSFT gain", "SFT gain"))

    return fn


def _instruction_set(r: Runs) -> tuple[str, tuple[str, ...]] | None:
    return r.instruction_task()


def _grpo_entropy(r: Runs) -> Test:
    values = [[float(r.metrics(f"{c}+grpo")["entropy"].mean())] for c in ("psft", "sft")]
    r.seeds("psft+grpo"), r.seeds("sft+grpo")
    pool = [[r.last_epoch(x, "entropy") for x in g] for g in r.replicated()]
    t = r.seed_test(*values, pool, delta=r.entropy_delta(), labels=("PSFT+GRPO", "SFT+GRPO"))
    t.note = "seed variance: the replicated SFT runs' last-epoch entropy (no GRPO run is replicated)"
    return t


def _grpo_entropy_slope(r: Runs) -> Test:
    frames = []
    for c in ("psft", "sft"):
        r.seeds(f"{c}+grpo")
        m = r.metrics(f"{c}+grpo")
        frames.append(pd.DataFrame({"x": m["step"], "y": m["entropy"], "g": f"{c.upper()}+GRPO"}))
    data = pd.concat(frames, ignore_index=True).dropna()
    steps = float(data["x"].max())
    t = slope_difference(data, delta=r.entropy_delta() / steps, labels=("PSFT+GRPO", "SFT+GRPO"))
    t.note = "entropy per GRPO step; noise: each run's scatter around its trend (one seed each)"
    return t


def _dpo_gap(r: Runs) -> Test:
    """log p(chosen) - log p(rejected) per DPO batch (the same batches for both runs), SFT cold start minus PSFT's."""
    gap = {c: r.metrics(f"{c}+dpo").eval("logp_chosen - logp_rejected").to_numpy() for c in ("sft", "psft")}
    r.seeds("sft+dpo"), r.seeds("psft+dpo")
    t = paired_test(gap["sft"], gap["psft"], delta=LOG2, labels=("SFT+DPO", "PSFT+DPO"))
    t.note = "nats per sequence, mean over DPO's batches; noise: batch to batch (no replicated DPO run)"
    return t


FINDINGS = [
    Finding("4.1.1-1a", "PSFT avoids entropy collapse", "mean token entropy over the last epoch, PSFT > SFT (Welch t over seeds)",
            ("psft", "sft"), _entropy_kept),
    Finding("4.1.1-1b", "for SFT, entropy shows a marked decline after each epoch (sawtooth); PSFT is smoother",
            "excess epoch-boundary drop of the entropy (mean drop across a boundary minus mean drop between train "
            "batches inside an epoch, nats), SFT > PSFT", ("psft", "sft"), _sawtooth),
    Finding("4.1.1-2", "PSFT matches or surpasses in-domain performance of SFT",
            "final in-domain avg@k, PSFT >= SFT - δ (non-inferiority)", ("psft", "sft"), _domain("in_domain", "psft", "sft", "at_least")),
    Finding("4.1.1-3a", "PSFT with warm-up surpasses standard SFT", "final in-domain, PSFT+warm-up(24) > SFT",
            ("psft_warmup24", "sft"), _domain("in_domain", "psft_warmup24", "sft")),
    Finding("4.1.1-3b", "longer warm-up periods yield greater in-domain gains",
            "final in-domain, warm-up 24 > warm-up 12 train batches", ("psft_warmup24", "psft_warmup12"),
            _domain("in_domain", "psft_warmup24", "psft_warmup12")),
    Finding("4.1.1-4", "PSFT avoids large fluctuations in out-of-domain performance",
            "excess total variation of the in-training out-of-domain curve (net change removed), SFT > PSFT",
            ("psft", "sft"), _fluctuation),
    Finding("4.1.2-2a", "PSFT generalizes better than SFT out of domain", "final out-of-domain mean, PSFT > SFT",
            ("psft", "sft"), _domain("out_of_domain", "psft", "sft")),
    Finding("4.1.2-2b", "SFT degrades instruction following (IFEval); PSFT compromises it minimally",
            "final instruction-following score, PSFT > SFT", ("psft", "sft"), _instruction("psft", "sft")),
    Finding("control-a", "(ours) the out-of-domain effect is clipping, not PSFT's smaller steps",
            "final out-of-domain, PSFT > SFT run with PSFT's step structure and lr", ("psft", "sft_as_psft"),
            _control("out_of_domain")),
    Finding("control-b", "(ours) the entropy effect is clipping, not PSFT's smaller steps",
            "last-epoch entropy, PSFT > SFT run with PSFT's step structure and lr", ("psft", "sft_as_psft"),
            _control("entropy")),
    Finding("5.1", "the clipped tokens are mostly thinking-pattern words (wait, alternatively, ...)",
            "share of reflective words among PSFT's clipped tokens > their share among its trained tokens (exact "
            "binomial, all seeds and phases; the expected share weights each seed x phase by its clips)",
            ("psft",), _clipped_reflective),
    Finding("5.2", "PSFT without clipping suffers from large, unstable gradient norms",
            "mean gradient norm over the whole run, no clip > eps_high 0.28 (log ratio; p99, max reported)",
            ("psft_noclip", "psft"), _grad_norm("all")),
    Finding("5.2-early", "(5.2 in the first epoch)", "as 5.2, first epoch only", ("psft_noclip", "psft"), _grad_norm("early")),
    Finding("5.2-late", "(5.2 in the last epoch)", "as 5.2, last epoch only", ("psft_noclip", "psft"), _grad_norm("late")),
    Finding("5.3a", "updating the old policy is essential: a fixed reference (no updates) performs poorly",
            "final in-domain, refresh every train batch > never", ("psft", "psft_refresh_never"),
            _domain("in_domain", "psft", "psft_refresh_never")),
    Finding("5.3b", "frequent updates (every 4 steps) deliver substantial in-domain gains",
            "final in-domain, 4 optimizer steps per refresh (a larger mini batch) > 8 (the default)",
            ("psft_refresh4", "psft"), _domain("in_domain", "psft_refresh4", "psft")),
    Finding("5.3c", "smaller mini batches, i.e. more steps per refresh, cost generalization",
            "final out-of-domain, 8 optimizer steps per refresh (the default) > 16 (a smaller mini batch)",
            ("psft", "psft_refresh16"), _domain("out_of_domain", "psft", "psft_refresh16")),
    Finding("4.2-1a", "PSFT leaves much room for RL: higher entropy throughout GRPO",
            "mean policy entropy over the GRPO steps, PSFT cold start > SFT's", ("psft+grpo", "sft+grpo"), _grpo_entropy),
    Finding("4.2-1b", "... with a steeper increase", "linear trend of the entropy over GRPO steps, PSFT cold start > "
            "SFT's (OLS interaction)", ("psft+grpo", "sft+grpo"), _grpo_entropy_slope),
    Finding("4.2-2", "PSFT shows slow start and rapid catch-up in RL",
            "in-domain gain over GRPO (final after minus before), PSFT cold start > SFT's",
            ("psft+grpo", "sft+grpo", "psft", "sft"), _post_gain("grpo", "in_domain")),
    Finding("4.2-3", "PSFT achieves better in-domain performance after RL", "final in-domain, PSFT+GRPO > SFT+GRPO",
            ("psft+grpo", "sft+grpo"), _domain("in_domain", "psft+grpo", "sft+grpo")),
    Finding("4.2-4", "PSFT outperforms SFT out of domain after RL", "final out-of-domain, PSFT+GRPO > SFT+GRPO",
            ("psft+grpo", "sft+grpo"), _domain("out_of_domain", "psft+grpo", "sft+grpo")),
    Finding("4.3-1a", "PSFT enables DPO for alignment: it performs even better during DPO",
            "final alignment (instruction following) after DPO, PSFT+DPO > SFT+DPO", ("psft+dpo", "sft+dpo"),
            _instruction("psft+dpo", "sft+dpo")),
    Finding("4.3-1b", "PSFT provides a strong starting point, DPO unlocking further gains",
            "alignment gain over DPO (final after minus before), PSFT cold start > SFT's",
            ("psft+dpo", "sft+dpo", "psft", "sft"), _post_gain("dpo", "", _instruction_set)),
    Finding("4.3-2", "after SFT the chosen answers are near certain and the rejected rare; PSFT exploits both",
            "gap log p(chosen) - log p(rejected) on DPO's batches, SFT cold start > PSFT's (paired t over batches)",
            ("psft+dpo", "sft+dpo"), _dpo_gap),
    Finding("4.3-3", "PSFT reduces the alignment tax", "final out-of-domain after DPO, PSFT+DPO > SFT+DPO",
            ("psft+dpo", "sft+dpo"), _domain("out_of_domain", "psft+dpo", "sft+dpo")),
    Finding("T7a", "training on the high-entropy tokens only keeps in-domain performance (Table 7)",
            "final in-domain, PSFT on the top 20 % entropy tokens = PSFT (equivalence)",
            ("psft_entropy0.2", "psft"), _domain("in_domain", "psft_entropy0.2", "psft", "equivalent")),
    Finding("T7b", "this sparse update may contribute to more robust generalization (Table 7)",
            "final out-of-domain, PSFT on the top 20 % entropy tokens > PSFT", ("psft_entropy0.2", "psft"),
            _domain("out_of_domain", "psft_entropy0.2", "psft")),
    Finding("T9a", "iw-SFT trains like PSFT, but PSFT ends better (Table 9)", "final in-domain, PSFT > iw-SFT",
            ("psft", "iw_sft"), _domain("in_domain", "psft", "iw_sft")),
    Finding("T9b", "(Table 9, out of domain)", "final out-of-domain, PSFT > iw-SFT", ("psft", "iw_sft"),
            _domain("out_of_domain", "psft", "iw_sft")),
    Finding("T9c", "DFT yields poor performance (Table 9)", "final in-domain, PSFT > DFT", ("psft", "dft"),
            _domain("in_domain", "psft", "dft")),
    Finding("T9d", "(Table 9, out of domain)", "final out-of-domain, PSFT > DFT", ("psft", "dft"),
            _domain("out_of_domain", "psft", "dft")),
    Finding("T10a", "PSFT still achieves stable performance at a larger learning rate (Table 10)",
            "final out-of-domain, PSFT at 2x its lr = PSFT (equivalence)", ("psft_lr3e-5", "psft"),
            _domain("out_of_domain", "psft_lr3e-5", "psft", "equivalent")),
    Finding("T10b", "PSFT keeps IFEval above SFT at the other learning rate (Table 10; the paper's SFT point is at a "
            "smaller lr, ours at 2x)", "final instruction-following, PSFT at 2x its lr > SFT at 2x its lr",
            ("psft_lr3e-5", "sft_lr6e-4"), _instruction("psft_lr3e-5", "sft_lr6e-4")),
]  # fmt: skip


def _seeds_column(runs: Runs) -> str:
    used = ", ".join(f"{run} {n}" for run, n in runs.seeds_used.items()) or "-"
    if runs.pooled_from:
        used += f"; seed variance pooled from {', '.join(runs.pooled_from)}"
    return used


def evaluate_paper_findings(profile: str, root: Path = ROOT) -> list[dict[str, Any]]:
    """One row per finding of :data:`FINDINGS`: id, claim, test, numbers, statistic, equivalence, method, seeds,
    verdict (Holm-adjusted over the rows, :func:`psftlib.report.stats.decide`)."""
    runs = Runs(profile, root)
    rows, tests = [], []
    for f in FINDINGS:
        runs.seeds_used, runs.pooled_from = {}, []
        test = None
        if runs.exists(*f.needs):
            test = f.fn(runs)
        tests.append(test)
        rows.append(
            {"id": f.id, "claim": f.claim, "test": f.test, "seeds": _seeds_column(runs), "needs": f.needs}
        )
    for row, test in zip(rows, decide(tests), strict=True):
        needs = row.pop("needs")
        if test is None:
            row.update(numbers=f"needs runs {', '.join(needs)}", statistic="—", equivalence="—", method="—",
                       verdict=NOT_RUN)  # fmt: skip
        else:
            row.update(numbers=test.describe(), statistic=test.statistic(), equivalence=test.equivalence(),
                       method=test.method, verdict=test.verdict)  # fmt: skip
    return rows


def evaluate_findings(profile: str, root: Path = ROOT) -> list[dict[str, Any]]:
    """The rows of every function in :data:`LEAD_FINDINGS` first (the frontier), then the paper's findings."""
    lead = [row for fn in LEAD_FINDINGS for row in fn(profile, root)]
    return [*lead, *evaluate_paper_findings(profile, root)]
