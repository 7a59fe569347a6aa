"""The findings' statistics (psftlib/report/stats.py) against scipy / statsmodels' own tests, the measures of
psftlib/report/findings_data.py on constructed curves, and the findings table on the committed mini results."""

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats as sps

from psftlib.layout import ROOT
from psftlib.report import findings, stats
from psftlib.report.findings_data import boundary_drops, excess_variation, grad_norm_stat, sawtooth_excess


def test_welch_over_seeds_is_scipys_welch_and_statsmodels_tost():
    from statsmodels.stats.weightstats import ttost_ind

    a, b = [0.9, 0.88, 0.91], [0.5, 0.45, 0.55]
    t = stats.seed_test(a, b, [[0.1, 0.3, 0.2]], delta=0.05)  # a pool is not used when both sides have seeds
    ref = sps.ttest_ind(a, b, equal_var=False)
    assert t.stat == pytest.approx(ref.statistic) and t.p == pytest.approx(ref.pvalue)
    assert t.method.startswith("Welch") and 2 <= t.df <= 4
    assert t.p_equiv == pytest.approx(ttost_ind(np.array(a), np.array(b), -0.05, 0.05, usevar="unequal")[0])
    # three seeds: the side's interval is the mean ± t(0.975, 2 df) = 4.30 standard errors
    mean, _low, high = t.sides["a"]
    assert (high - mean) / (np.std(a, ddof=1) / math.sqrt(3)) == pytest.approx(4.3027, abs=1e-3)


def test_one_seed_takes_the_pooled_seed_variance_of_the_replicated_runs():
    single, replicated = [0.30], [0.10, 0.20, 0.15]
    t = stats.seed_test(single, replicated, [replicated], delta=0.05)
    ref = sps.ttest_ind(single, replicated, equal_var=True)  # the only variance is the replicated run's: df 2
    assert t.method.startswith("pooled") and t.df == 2
    assert t.stat == pytest.approx(ref.statistic) and t.p == pytest.approx(ref.pvalue)
    other = [0.5, 0.7, 0.6]  # a second replicated run adds its 2 df and its spread to the pool
    pooled = stats.seed_test(single, replicated, [replicated, other], delta=0.05)
    assert pooled.df == 4
    s2 = (np.var(replicated, ddof=1) + np.var(other, ddof=1)) / 2
    assert pooled.se == pytest.approx(math.sqrt(s2 * (1 + 1 / 3)))
    none = stats.seed_test([0.3], [0.1], [], delta=0.05)  # nothing replicated: no test, never a verdict
    assert math.isnan(none.p) and "no seed variance" in none.note
    assert stats.decide([none])[0].verdict == stats.INCONCLUSIVE


def test_log_scale_compares_ratios():
    t = stats.seed_test([40.0], [4.0, 4.4, 3.6], [[4.0, 4.4, 3.6]], delta=math.log(2), log=True)
    assert math.exp(t.estimate) == pytest.approx(40 / math.exp(np.mean(np.log([4.0, 4.4, 3.6]))))
    assert "ratio" in t.describe() and stats.decide([t])[0].verdict == stats.HOLDS


def _test(estimate: float, p: float, p_equiv: float, kind: str = "greater") -> stats.Test:
    return stats.Test(estimate, 0.1, 1.0, 4.0, p, (estimate - 0.1, estimate + 0.1), p_equiv, 0.05, kind)


def test_verdicts_follow_the_holm_adjusted_p_values():
    holds, fails, equiv, unsure = stats.decide([
        _test(0.3, 0.001, 0.9), _test(-0.3, 0.001, 0.9), _test(0.0, 0.9, 0.001), _test(0.0, 0.9, 0.9),
    ])  # fmt: skip
    assert (holds.verdict, fails.verdict, unsure.verdict) == (stats.HOLDS, stats.FAILS, stats.INCONCLUSIVE)
    assert equiv.verdict == "equivalent within ±0.05"
    assert holds.p_holm == pytest.approx(min(1.0, 0.001 * 4))
    # alone, p = 0.03 is a difference; among two such tests Holm makes each 0.06: inconclusive
    assert stats.decide([_test(0.2, 0.03, 0.9)])[0].verdict == stats.HOLDS
    assert {t.verdict for t in stats.decide([_test(0.2, 0.03, 0.9), _test(0.2, 0.03, 0.9)])} == {
        stats.INCONCLUSIVE
    }
    # non-inferiority: inside the margin holds; significantly below without it does not
    assert stats.decide([_test(-0.01, 0.5, 0.001, "at_least")])[0].verdict == stats.HOLDS
    assert stats.decide([_test(-0.3, 0.001, 0.9, "at_least")])[0].verdict == stats.FAILS
    # a claim of equivalence: a significant difference refutes it
    assert stats.decide([_test(0.3, 0.001, 0.9, "equivalent")])[0].verdict == stats.FAILS
    assert stats.decide([None, _test(0.3, 0.001, 0.9)])[0] is None


def test_binomial_enrichment_is_scipys_exact_test_with_statsmodels_tost():
    from statsmodels.stats.proportion import binom_tost

    t = stats.binomial_enrichment(9, 707, 0.0224)
    assert t.p == pytest.approx(sps.binomtest(9, 707, 0.0224).pvalue)
    assert t.p_equiv == pytest.approx(binom_tost(9, 707, 0.0112, 0.0448)[0])
    assert math.exp(t.estimate) == pytest.approx(9 / 707 / 0.0224)
    assert stats.decide([stats.binomial_enrichment(60, 200, 0.05)])[0].verdict == stats.HOLDS


def test_paired_test_matches_scipy():
    a, b = np.array([12.0, 14.0, 11.0, 13.0, 15.0]), np.array([13.0, 15.5, 12.0, 14.5, 16.0])
    t = stats.paired_test(a, b, delta=math.log(2))
    assert t.p == pytest.approx(sps.ttest_rel(a, b).pvalue) and t.df == 4


def _metrics(entropy_per_batch: list[float], batches_per_epoch: int) -> pd.DataFrame:
    n = len(entropy_per_batch)
    tb = np.arange(1, n + 1, dtype=float)
    return pd.DataFrame({"train_batch": tb, "epoch": tb / batches_per_epoch, "entropy": entropy_per_batch,
                         "grad_norm": np.arange(1, n + 1, dtype=float)})  # fmt: skip


def test_sawtooth_is_the_boundary_drop_beyond_the_steady_decline():
    linear = _metrics(list(np.linspace(1.0, 0.5, 12)), 4)
    assert sawtooth_excess(linear) == pytest.approx(0.0, abs=1e-12)
    stairs = _metrics([1.0] * 4 + [0.8] * 4 + [0.6] * 4, 4)  # flat inside epochs, drops of 0.2 at boundaries
    across, inside = boundary_drops(stairs, "entropy")
    assert list(np.round(across, 6)) == [0.2, 0.2] and len(inside) == 9
    assert sawtooth_excess(stairs) == pytest.approx(0.2)
    assert math.isnan(sawtooth_excess(_metrics([1.0, 0.9, 0.8], 4)))  # one epoch: no boundary


def test_excess_variation_removes_the_net_change():
    assert excess_variation(np.array([1.0, 0.9, 0.7, 0.5])) == pytest.approx(0.0)
    assert excess_variation(np.array([1.0, 0.8, 1.0, 0.9])) == pytest.approx(0.4)  # a dip of 0.2 and back


def test_grad_norm_phases():
    m = _metrics([1.0] * 12, 4)  # grad norms 1..12, epochs of 4 train batches
    assert grad_norm_stat(m, "early", "mean") == pytest.approx(2.5)
    assert grad_norm_stat(m, "late", "max") == 12 and grad_norm_stat(m, "all", "mean") == pytest.approx(6.5)
    assert grad_norm_stat(m, "all", "p99") == pytest.approx(np.quantile(np.arange(1, 13), 0.99))


@pytest.fixture(scope="module")
def mini_rows():
    if not (ROOT / "results" / "eval" / "mini" / "psft" / "in_domain.json").exists():
        pytest.skip("the committed mini results are not in this checkout")
    return findings.evaluate_paper_findings("mini")


def test_every_mini_finding_states_its_test_and_a_verdict(mini_rows):
    assert [r["id"] for r in mini_rows] == [f.id for f in findings.FINDINGS]
    for row in mini_rows:
        assert row["verdict"].startswith(findings.VERDICTS), row
        if row["verdict"] != stats.NOT_RUN:
            assert "p = " in row["statistic"] and "δ = " in row["equivalence"] and row["seeds"] != "-", row
    by_id = {r["id"]: r for r in mini_rows}
    assert (
        "seed variance pooled from" in by_id["4.1.1-3a"]["seeds"]
    )  # one-seed warm-up run: pooled, and said so
    assert "world_skill_format" in by_id["4.1.2-2b"]["numbers"]


def test_lead_findings_come_first(monkeypatch, mini_rows):
    row = {
        "id": "frontier",
        "claim": "c",
        "test": "t",
        "numbers": "n",
        "seeds": "-",
        "verdict": stats.INCONCLUSIVE,
    }
    monkeypatch.setattr(findings, "LEAD_FINDINGS", [lambda profile, root: [row]])
    monkeypatch.setattr(findings, "evaluate_paper_findings", lambda profile, root: mini_rows)
    assert findings.evaluate_findings("mini") == [row, *mini_rows]


def test_instruction_task_comes_from_the_profile():
    assert findings.Runs("mini").instruction_task() == ("out_of_domain", ("world_skill_format",))
    assert findings.Runs("paper").instruction_task() == ("ifeval", ("ifeval",))


def test_clip_fraction_counts_only_clipped_tokens():
    from psftlib.config import load_profile
    from psftlib.report.analysis import run_metrics, run_summary

    if not (ROOT / "results" / "runs" / "mini" / "psft" / "metrics.jsonl").exists():
        pytest.skip("the committed mini results are not in this checkout")
    row = run_summary(load_profile("mini"), "psft", ["in_domain", "out_of_domain"])
    m = run_metrics("mini", "psft")
    assert row["clip_fraction_high"] == pytest.approx(m["clip_fraction_high"].mean())
    assert row["ratio_below_low_fraction"] == pytest.approx(m["clip_fraction_low"].mean())
    assert "clip_fraction" not in row
