"""The statistics behind the findings: t tests over seeds, equivalence bounds (TOST), exact binomial tests, and the
multiple-comparison rule that turns p-values into verdicts.

Every comparison is "a - b" oriented so that the paper's claim is ``a > b`` (kind ``greater``), ``a >= b``
(``at_least``: non-inferiority within δ) or ``a = b`` (``equivalent``), on the measure's own scale or, for ratio
measures (``log=True``), on the log scale (the difference is then a log ratio and δ a log factor).

Where the variance comes from (:func:`seed_test`):

* both sides with 2 or more seeds: Welch's t test over the seed values (statsmodels ``CompareMeans``, unequal
  variances, Welch-Satterthwaite degrees of freedom; 3 seeds against 3 gives 2 to 4 df);
* a side with one seed: the seed variance is pooled over the runs the profile replicates (``seed_replicates``:
  sft and psft in ``mini``) and over the sides that have seeds: a one-way OLS over every seed value of those groups
  (statsmodels), the difference a contrast of it with the residual degrees of freedom (3 + 3 seeds: 4 df). This
  assumes each run's seed-to-seed spread of the measure equals the pooled one, which the findings table says.

Equivalence: TOST (two one-sided t tests, statsmodels ``ttost_ind`` or the same test on the contrast); the 90 %
interval lies inside ±δ exactly when its p < 0.05. δ is fixed per measure from the measure's scale, never from
the data (the findings module lists each).

Multiple comparisons (:func:`decide`): the rows of the findings table form one family for the difference tests and
one for the equivalence tests; each family's p-values are Holm-adjusted (statsmodels ``multipletests``), family-wise
error 5 % each. Verdicts from the adjusted p-values:

* ``greater``: **holds** (p_holm < 0.05, a > b), **does not hold** (p_holm < 0.05, a < b), **equivalent within ±δ**
  (TOST p_holm < 0.05), else **inconclusive**;
* ``at_least``: **holds** when non-inferior (one-sided t test of a - b > -δ, p_holm < 0.05), **does not hold** when
  significantly below, else **inconclusive**;
* ``equivalent``: **equivalent within ±δ** (the claim holds), **does not hold** (significant difference), else
  **inconclusive**.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd
import statsmodels.formula.api as smf
from scipy import stats
from statsmodels.stats.multitest import multipletests
from statsmodels.stats.proportion import binom_tost
from statsmodels.stats.weightstats import CompareMeans, DescrStatsW, ttost_paired

ALPHA = 0.05
HOLDS, FAILS, INCONCLUSIVE, NOT_RUN = "holds", "does not hold", "inconclusive", "not run"
KINDS = ("greater", "at_least", "equivalent")


def equivalent(delta: float) -> str:
    """The verdict word of a passed equivalence test."""
    return f"equivalent within ±{delta:.3g}"


@dataclass
class Test:
    """One comparison a - b: the estimate with its standard error, t (or z) statistic, degrees of freedom, two-sided
    p of no difference, 95 % interval; the equivalence (or non-inferiority) p at margin δ; how the variance was
    obtained (``method``); per-side means and 95 % intervals; the Holm-adjusted p-values once :func:`decide` ran."""

    estimate: float
    se: float
    stat: float
    df: float
    p: float
    ci: tuple[float, float]
    p_equiv: float
    delta: float
    kind: str = "greater"
    method: str = ""
    log: bool = False
    sides: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # label -> (mean, low, high)
    stat_name: str = "t"
    note: str = ""
    p_holm: float = math.nan
    p_equiv_holm: float = math.nan
    verdict: str = ""

    def describe(self) -> str:
        """Sides with their 95 % intervals and the difference (a ratio on the log scale) with its interval."""
        parts = [f"{k} {_num(m)} [{_num(lo)}, {_num(hi)}]" for k, (m, lo, hi) in self.sides.items()]
        if self.log:
            ratio = [_num(math.exp(v)) for v in (self.estimate, *self.ci)]
            diff = f"ratio {ratio[0]} (95 % CI {ratio[1]}..{ratio[2]})"
        else:
            diff = f"difference {_num(self.estimate, '+')} (95 % CI {_num(self.ci[0], '+')}..{_num(self.ci[1], '+')})"
        if not np.isfinite(self.ci[0]):  # no test: the sides' means only
            diff = "no interval"
        return "; ".join([p for p in (", ".join(parts), diff, self.note) if p])

    def statistic(self) -> str:
        """``t = .., df = .., p = .. (Holm ..)``."""
        if not np.isfinite(self.p):
            return "—"
        df = f", df = {self.df:.3g}" if np.isfinite(self.df) else ""
        stat = f"{self.stat:.0f}" if self.stat_name == "k" else f"{self.stat:.3g}"
        return f"{self.method}: {self.stat_name} = {stat}{df}, p = {self.p:.2g} (Holm {self.p_holm:.2g})"

    def equivalence(self) -> str:
        """``δ = ..: p = .. (Holm ..)``, naming the test (TOST, or non-inferiority)."""
        margin = f"×{math.exp(self.delta):.3g}" if self.log else f"±{self.delta:.3g}"
        test = "TOST"
        if self.kind == "at_least":
            test, margin = (
                "non-inferiority",
                f"-{self.delta:.3g}" if not self.log else f"×{math.exp(-self.delta):.3g}",
            )
        if not np.isfinite(self.p_equiv):
            return f"{test} δ = {margin}: —"
        return f"{test} δ = {margin}: p = {self.p_equiv:.2g} (Holm {self.p_equiv_holm:.2g})"


def _num(v: float, sign: str = "") -> str:
    """3 decimals, or 3 significant digits for small magnitudes (trends per step)."""
    if not np.isfinite(v):
        return str(v)
    return f"{v:{sign}.3g}" if 0 < abs(v) < 0.01 else f"{v:{sign}.3f}"


def _side(values: Sequence[float], sd: float, df: float) -> tuple[float, float, float]:
    """Mean and 95 % t interval of one side: its own spread with n - 1 df, or (one seed) the pooled ``sd``/``df``."""
    x = np.asarray(values, dtype=float)
    if len(x) >= 2 and np.ptp(x) > 0:
        low, high = DescrStatsW(x).tconfint_mean(alpha=ALPHA)
        return float(x.mean()), float(low), float(high)
    if np.isfinite(sd) and df > 0:
        low, high = stats.t.interval(1 - ALPHA, df, loc=x.mean(), scale=sd / math.sqrt(len(x)))
        return float(x.mean()), float(low), float(high)
    return float(x.mean()), float(x.mean()), float(x.mean())


def _undetermined(
    a: np.ndarray, b: np.ndarray, delta: float, kind: str, log: bool, note: str, labels: tuple[str, str]
) -> Test:
    nan = math.nan
    back = np.exp if log else (lambda v: v)
    sides = {lab: (float(back(v.mean())),) * 3 for lab, v in zip(labels, (a, b), strict=True)}
    return Test(float(a.mean() - b.mean()), nan, nan, nan, nan, (nan, nan), nan, delta, kind, "none", log, sides,
                note=note)  # fmt: skip


def _one_sided_equiv(est: float, se: float, df: float, delta: float, kind: str) -> float:
    """TOST p (the larger of the two one-sided p-values) or, for ``at_least``, the non-inferiority p."""
    lower = stats.t.sf((est + delta) / se, df)  # H0: a - b <= -delta
    if kind == "at_least":
        return float(lower)
    return float(max(lower, stats.t.cdf((est - delta) / se, df)))  # H0: a - b >= +delta


def seed_test(
    a: Sequence[float],
    b: Sequence[float],
    pool: Sequence[Sequence[float]] = (),
    *,
    delta: float,
    kind: str = "greater",
    log: bool = False,
    labels: tuple[str, str] = ("a", "b"),
) -> Test:
    """a - b over seed values (module doc): Welch when both sides have 2+ seeds, else the pooled one-way OLS over
    ``a``, ``b`` and the ``pool`` groups (replicated runs' seed values of the same measure) that have 2+ values."""
    if kind not in KINDS:
        raise ValueError(f"kind {kind!r}: expected one of {KINDS}")
    tr = np.log if log else np.asarray

    def finite(values: Sequence[float]) -> np.ndarray:  # a measure a run cannot give (NaN) is left out
        x = np.asarray(tr(np.asarray(values, dtype=float)))
        return x[np.isfinite(x)]

    a_, b_ = finite(a), finite(b)
    if not len(a_) or not len(b_):
        nan = math.nan
        return Test(nan, nan, nan, nan, nan, (nan, nan), nan, delta, kind, "none", log,
                    note="the measure is undefined for these runs (NaN)")  # fmt: skip
    groups = [g for g in map(finite, pool) if len(g) >= 2]
    groups = [g for g in groups if not any(len(g) == len(s) and np.allclose(g, s) for s in (a_, b_))]
    if len(a_) >= 2 and len(b_) >= 2 and (np.ptp(a_) > 0 or np.ptp(b_) > 0):
        cm = CompareMeans(DescrStatsW(a_), DescrStatsW(b_))
        t, p, df = cm.ttest_ind(usevar="unequal")
        low, high = cm.tconfint_diff(alpha=ALPHA, usevar="unequal")
        est = float(a_.mean() - b_.mean())
        se = est / t if t else math.inf
        method = f"Welch t over seeds ({len(a_)} vs {len(b_)})"
        sd = df_pool = math.nan
    else:
        frames = [pd.DataFrame({"y": v, "g": name}) for name, v in (("a", a_), ("b", b_))]
        frames += [pd.DataFrame({"y": g, "g": f"pool{i}"}) for i, g in enumerate(groups)]
        data = pd.concat(frames, ignore_index=True)
        df_resid = len(data) - data["g"].nunique()
        if df_resid < 1:
            return _undetermined(
                a_, b_, delta, kind, log, "no seed variance to pool (no replicated run)", labels
            )
        fit = smf.ols("y ~ C(g, Treatment('b')) - 1", data=data).fit()
        names = list(fit.params.index)
        contrast = np.zeros(len(names))
        contrast[names.index("C(g, Treatment('b'))[a]")], contrast[names.index("C(g, Treatment('b'))[b]")] = (
            1,
            -1,
        )
        res = fit.t_test(contrast)
        est, se = float(np.squeeze(res.effect)), float(np.squeeze(res.sd))
        t, p, df = float(np.squeeze(res.tvalue)), float(np.squeeze(res.pvalue)), float(res.df_denom)
        low, high = (float(v) for v in np.squeeze(res.conf_int(alpha=ALPHA)))
        sd, df_pool = math.sqrt(fit.scale), df
        if sd == 0:
            return _undetermined(a_, b_, delta, kind, log, "pooled seed variance is zero", labels)
        method = f"pooled-variance t (one-way OLS over {data['g'].nunique()} runs' seeds, df {df:.0f})"
    p_equiv = _one_sided_equiv(est, se, df, delta, kind) if np.isfinite(se) and se > 0 else math.nan
    back = np.exp if log else (lambda v: v)
    sides = {}
    for label, v in zip(labels, (a_, b_), strict=True):
        m, lo, hi = _side(v, sd, df_pool)
        sides[label] = (float(back(m)), float(back(lo)), float(back(hi)))
    return Test(est, se, float(t), float(df), float(p), (float(low), float(high)), p_equiv, delta, kind, method,
                log, sides)  # fmt: skip


def paired_test(
    a: Sequence[float],
    b: Sequence[float],
    *,
    delta: float,
    kind: str = "greater",
    labels: tuple[str, str] = ("a", "b"),
) -> Test:
    """a - b paired element by element (the same batches seen by two runs): one-sample t test of the differences
    (statsmodels ``DescrStatsW``), TOST by ``ttost_paired``."""
    a_, b_ = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    d = DescrStatsW(a_ - b_)
    t, p, df = d.ttest_mean(0.0)
    low, high = d.tconfint_mean(alpha=ALPHA)
    est, se = float(d.mean), float(d.std_mean)
    p_equiv = (
        _one_sided_equiv(est, se, df, delta, kind)
        if kind == "at_least"
        else float(ttost_paired(a_, b_, -delta, delta)[0])
    )
    sides = {lab: (float(v.mean()), *map(float, DescrStatsW(v).tconfint_mean(alpha=ALPHA))) for lab, v in
             zip(labels, (a_, b_), strict=True)}  # fmt: skip
    return Test(est, se, float(t), float(df), float(p), (float(low), float(high)), p_equiv, delta, kind,
                f"paired t over {len(a_)} matched batches", False, sides)  # fmt: skip


def binomial_enrichment(k: int, n: int, p0: float, *, factor: float = 2.0, label: str = "share") -> Test:
    """Whether a category's share among ``n`` selected tokens (``k`` of them in it) differs from ``p0``, its share
    when selection is independent of the category: exact binomial test (scipy), and its equivalence within a factor
    ``factor`` of ``p0`` by statsmodels ``binom_tost`` on [p0 / factor, p0 * factor]. The estimate is the log of the
    enrichment ratio share / p0, so its margin is log(factor)."""
    if n == 0 or not 0 < p0 < 1:
        nan = math.nan
        return Test(nan, nan, nan, nan, nan, (nan, nan), nan, math.log(factor), "greater", "exact binomial", True,
                    note=f"no selected tokens or p0 = {p0}")  # fmt: skip
    res = stats.binomtest(k, n, p0)
    ci = res.proportion_ci(confidence_level=1 - ALPHA, method="exact")
    p_equiv = float(binom_tost(k, n, p0 / factor, min(1.0, p0 * factor))[0])
    share = k / n
    est = math.log(share / p0) if share > 0 else -math.inf
    low = math.log(ci.low / p0) if ci.low > 0 else -math.inf
    sides = {label: (share, float(ci.low), float(ci.high))}
    return Test(est, math.nan, float(k), math.nan, float(res.pvalue), (low, math.log(ci.high / p0)), p_equiv,
                math.log(factor), "greater", f"exact binomial test against p0 = {p0:.4f}", True, sides, stat_name="k")  # fmt: skip


def slope_difference(frame: pd.DataFrame, *, delta: float, labels: tuple[str, str]) -> Test:
    """Difference of the linear trends of ``y`` over ``x`` between group ``labels[0]`` and ``labels[1]`` (column
    ``g``): the interaction of an OLS ``y ~ x * g`` (statsmodels), with the residual degrees of freedom. Its noise is
    the scatter of each run around its trend (one run per group), not seed-to-seed variation."""
    data = frame.assign(is_a=(frame["g"] == labels[0]).astype(float))
    fit = smf.ols("y ~ x * is_a", data=data).fit()
    est, se = float(fit.params["x:is_a"]), float(fit.bse["x:is_a"])
    df = float(fit.df_resid)
    low, high = (float(v) for v in fit.conf_int(alpha=ALPHA).loc["x:is_a"])
    sides = {}
    for lab in labels:
        part = smf.ols("y ~ x", data=data[data["g"] == lab]).fit()
        lo, hi = part.conf_int(alpha=ALPHA).loc["x"]
        sides[lab] = (float(part.params["x"]), float(lo), float(hi))
    return Test(est, se, float(fit.tvalues["x:is_a"]), df, float(fit.pvalues["x:is_a"]), (low, high),
                _one_sided_equiv(est, se, df, delta, "greater"), delta, "greater",
                "OLS trend difference within runs", False, sides)  # fmt: skip


def _holm(ps: list[float]) -> list[float]:
    idx = [i for i, p in enumerate(ps) if np.isfinite(p)]
    out = [math.nan] * len(ps)
    if idx:
        for i, q in zip(idx, multipletests([ps[i] for i in idx], method="holm")[1], strict=True):
            out[i] = float(q)
    return out


def decide(tests: list[Test | None]) -> list[Test | None]:
    """Holm-adjust the family of difference p-values and the family of equivalence p-values, then attach each
    test's verdict (module doc). ``None`` entries (a finding not run) pass through."""
    live = [t for t in tests if t is not None]
    p_holm = _holm([t.p for t in live])
    p_equiv_holm = _holm([t.p_equiv for t in live])
    decided = iter(
        replace(t, p_holm=ph, p_equiv_holm=pe, verdict=_verdict(t, ph, pe), note=_both(t, ph, pe))
        for t, ph, pe in zip(live, p_holm, p_equiv_holm, strict=True)
    )
    return [None if t is None else next(decided) for t in tests]


def _both(t: Test, p: float, p_equiv: float) -> str:
    """The note, plus a remark when a difference is significant and yet inside the equivalence margin."""
    if t.kind == "greater" and p < ALPHA and p_equiv < ALPHA:
        return "; ".join([*([t.note] if t.note else []), "a significant difference, but inside the margin δ"])
    return t.note


def _verdict(t: Test, p: float, p_equiv: float) -> str:
    different = np.isfinite(p) and p < ALPHA
    equiv = np.isfinite(p_equiv) and p_equiv < ALPHA
    if t.kind == "at_least":
        if equiv or (different and t.estimate > 0):
            return HOLDS
        return FAILS if different else INCONCLUSIVE
    word = f"equivalent within ×{math.exp(t.delta):.3g}" if t.log else equivalent(t.delta)
    if t.kind == "equivalent":
        return word if equiv else FAILS if different else INCONCLUSIVE
    if different:
        return HOLDS if t.estimate > 0 else FAILS
    return word if equiv else INCONCLUSIVE
