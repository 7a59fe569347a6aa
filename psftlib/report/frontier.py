"""The operating-point frontier: at equal in-domain gain, does PSFT keep more out-of-domain skill than SFT, and
than its own step-size control (SFT with PSFT's step structure)?

A method's learning rate sets how far it moves. Comparing methods at one learning-rate ratio compares models that
moved different distances, so "keeps out-of-domain skill" cannot be told from "moved less". Here each method of
the profile's ``frontier.methods`` is trained over a learning-rate grid fixed before the runs, each point over its
seed replicates. Every run gives one point: the in-domain gain and the out-of-domain change of its final
evaluation over the base model (domain means, 0-1 scale). The final evaluation is used, not the in-training
curves: its 150 in-domain and 600 out-of-domain problems give a standard error near 0.01 to 0.04 per point, while the
in-training subset (12 problems per task) gives about 0.06, as large as the differences in question.

The test (fixed before the runs), for each method against ``frontier.reference``:

* **common support**: only runs whose in-domain gain lies in the range both methods reach are compared (no
  extrapolation of one method's frontier into a region it never reached);
* **ANCOVA** (statsmodels OLS): ``ood_change ~ C(method) + gain + gain**2`` over those runs; the method
  coefficient is the out-of-domain difference at equal in-domain gain, tested by its t statistic with the residual
  degrees of freedom; a quadratic in gain because a frontier bends; a second fit with a method x gain interaction
  reports whether the difference changes along the frontier;
* **equivalence**: TOST at the findings' score margin δ = ``SCORE_DELTA`` (five points of accuracy,
  :mod:`psftlib.report.findings_data`; the 90 % interval inside ±δ);
* **multiple comparisons**: the comparisons against the reference form one family; their difference p-values are
  Holm-adjusted (statsmodels ``multipletests``).

Verdict of "the reference keeps more out-of-domain skill": **holds** (Holm-adjusted p < 0.05, difference > 0),
**does not hold** (adjusted p < 0.05, difference < 0), **equivalent within ±δ** (TOST p < 0.05), else
**inconclusive**.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats
from statsmodels.stats.multitest import multipletests

from psftlib.config import ROOT, load_profile, replicates
from psftlib.report.analysis import domain_means, domains_of, final_scores
from psftlib.report.findings_data import SCORE_DELTA

ALPHA = 0.05
MIN_POINTS = 3  # per method inside the common support; fewer: inconclusive (too few points to compare)


def frontier_points(profile: str, root: Path = ROOT) -> pd.DataFrame:
    """One row per run of ``frontier.methods`` and its seed replicates: method, base run (the grid point), seed,
    learning rate, in-domain and out-of-domain means of the final evaluation, and their change over the base."""
    prof = load_profile(profile)
    domains = domains_of(prof)
    base = domain_means(final_scores(profile, "base", list(domains), root), domains)
    rows = []
    for method, runs in prof.data["frontier"]["methods"].items():
        for point in runs:
            for run in replicates(prof, point):
                means = domain_means(final_scores(profile, run, list(domains), root), domains)
                seed = re.search(r"_seed(\d+)$", run)
                rows.append({
                    "run": run, "method": method, "grid_point": point, "seed": int(seed.group(1)) if seed else 0,
                    "lr": prof.run_config(run).lr, "in_domain": means["in_domain"],
                    "out_of_domain": means["out_of_domain"],
                    "in_domain_gain": means["in_domain"] - base["in_domain"],
                    "ood_change": means["out_of_domain"] - base["out_of_domain"],
                })  # fmt: skip
    return pd.DataFrame(rows)


def grid_means(points: pd.DataFrame) -> pd.DataFrame:
    """Per method and grid point: mean and standard deviation over seeds of gain and out-of-domain change."""
    grouped = points.groupby(["method", "grid_point"], sort=False)
    out = grouped.agg(
        lr=("lr", "first"), seeds=("seed", "count"),
        in_domain_gain=("in_domain_gain", "mean"), in_domain_gain_sd=("in_domain_gain", "std"),
        ood_change=("ood_change", "mean"), ood_change_sd=("ood_change", "std"),
    )  # fmt: skip
    return out.reset_index()


def compare(points: pd.DataFrame, method: str, reference: str, margin: float) -> dict[str, Any]:
    """``reference`` against ``method`` at equal in-domain gain (module doc): the difference reference - method,
    its 95 % interval, t, df and p; the 90 % interval and TOST p against ±``margin``; the interaction's p; the
    common support and how many runs of each method lie in it. The Holm adjustment and verdict: :func:`decide`."""
    pair = points[points["method"].isin([reference, method])].copy()
    ranges = pair.groupby("method")["in_domain_gain"].agg(["min", "max"])
    low, high = float(ranges["min"].max()), float(ranges["max"].min())
    inside = pair[(pair["in_domain_gain"] >= low) & (pair["in_domain_gain"] <= high)].copy()
    counts = inside["method"].value_counts()
    row: dict[str, Any] = {
        "comparison": f"{reference} - {method}", "support_low": low, "support_high": high,
        f"n_{reference}": int(counts.get(reference, 0)), f"n_{method}": int(counts.get(method, 0)),
    }  # fmt: skip
    if low >= high or min(counts.get(reference, 0), counts.get(method, 0)) < MIN_POINTS:
        return {**row, "estimate": np.nan, "p": np.nan, "p_tost": np.nan, "df": 0, "note": "too few points"}
    inside["is_reference"] = (inside["method"] == reference).astype(float)
    fit = smf.ols("ood_change ~ is_reference + in_domain_gain + I(in_domain_gain ** 2)", data=inside).fit()
    est, se, df = float(fit.params["is_reference"]), float(fit.bse["is_reference"]), int(fit.df_resid)
    ci95 = fit.conf_int(alpha=ALPHA).loc["is_reference"].tolist()
    ci90 = fit.conf_int(alpha=2 * ALPHA).loc["is_reference"].tolist()
    # TOST: two one-sided t tests against -margin and +margin; p is the larger of the two
    p_tost = max(stats.t.sf((est + margin) / se, df), stats.t.cdf((est - margin) / se, df))
    inter = smf.ols("ood_change ~ is_reference * in_domain_gain + I(in_domain_gain ** 2)", data=inside).fit()
    return {
        **row, "estimate": est, "se": se, "t": float(fit.tvalues["is_reference"]), "df": df,
        "ci95_low": ci95[0], "ci95_high": ci95[1], "ci90_low": ci90[0], "ci90_high": ci90[1],
        "p": float(fit.pvalues["is_reference"]), "p_tost": float(p_tost), "margin": margin,
        "p_interaction": float(inter.pvalues["is_reference:in_domain_gain"]), "note": "",
    }  # fmt: skip


def decide(comparisons: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Holm-adjust the difference p-values of the family and attach each verdict (module doc)."""
    ps = [c["p"] for c in comparisons]
    tested = [i for i, p in enumerate(ps) if not np.isnan(p)]
    adjusted = (
        dict(zip(tested, multipletests([ps[i] for i in tested], method="holm")[1], strict=True))
        if tested
        else {}
    )
    out = []
    for i, c in enumerate(comparisons):
        p_holm = float(adjusted.get(i, np.nan))
        if np.isnan(p_holm):
            verdict = "inconclusive"
        elif p_holm < ALPHA:
            verdict = "holds" if c["estimate"] > 0 else "does not hold"
        elif c["p_tost"] < ALPHA:
            verdict = f"equivalent within ±{c['margin']:g}"
        else:
            verdict = "inconclusive"
        out.append({**c, "p_holm": p_holm, "verdict": verdict})
    return out


def frontier_tests(profile: str, root: Path = ROOT) -> tuple[pd.DataFrame, list[dict[str, Any]]]:
    """The points and the decided comparisons of every method against ``frontier.reference``."""
    prof = load_profile(profile)
    spec = prof.data["frontier"]
    points = frontier_points(profile, root)
    others = [m for m in spec["methods"] if m != spec["reference"]]
    rows = [compare(points, m, spec["reference"], SCORE_DELTA) for m in others]
    return points, decide(rows)


def describe_comparison(c: dict[str, Any]) -> str:
    """One line of numbers for the findings and the table."""
    support = f"in-domain gain {c['support_low']:+.3f}..{c['support_high']:+.3f}"
    counts = ", ".join(f"{k[2:]} {v}" for k, v in c.items() if k.startswith("n_"))
    if np.isnan(c["estimate"]):
        return f"{support}; runs inside: {counts}; {c['note']}"
    return (
        f"difference {c['estimate']:+.3f} (95 % CI {c['ci95_low']:+.3f}..{c['ci95_high']:+.3f}), "
        f"t({c['df']}) = {c['t']:.2f}, p = {c['p']:.3g} (Holm {c['p_holm']:.3g}); TOST ±{c['margin']:g}: "
        f"90 % CI {c['ci90_low']:+.3f}..{c['ci90_high']:+.3f}, p = {c['p_tost']:.3g}; "
        f"interaction p = {c['p_interaction']:.3g}; {support}; runs inside: {counts}"
    )


def frontier_findings(profile: str, root: Path = ROOT) -> list[dict[str, Any]]:
    """The frontier's comparisons as findings rows (``id, claim, test, numbers, seeds, verdict``); [] when the
    profile has no ``frontier:`` section."""
    prof = load_profile(profile)
    if not prof.data.get("frontier"):
        return []
    points, comparisons = frontier_tests(profile, root)
    ref = prof.data["frontier"]["reference"]
    seeds = points.groupby("grid_point")["seed"].count()
    rows = []
    for c in comparisons:
        other = c["comparison"].split(" - ")[1]
        rows.append({
            "id": f"frontier: {ref} vs {other}",
            "claim": f"{ref} keeps more out-of-domain skill than {other} (the paper's central claim, here at equal "
                     "in-domain gain rather than at one learning rate)",
            "test": "ANCOVA of out-of-domain change on method + in-domain gain + gain² over every run in the "
                    "common support (final evaluations), t-test on the method term (Holm over the comparisons), "
                    "TOST for equivalence",
            "numbers": describe_comparison(c),
            "seeds": f"{int(seeds.min())}-{int(seeds.max())} per learning rate",
            "verdict": c["verdict"],
        })  # fmt: skip
    return rows
