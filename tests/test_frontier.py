"""The frontier's comparison at equal in-domain gain (psftlib/report/frontier.py) on hand-built points."""

import numpy as np
import pandas as pd
import pytest

from psftlib.report.frontier import compare, decide


def _points(
    offset: float, noise: float = 0.004, n: int = 12, seed: int = 0, shift: float = 0.0
) -> pd.DataFrame:
    """Two methods on one bent frontier (ood = -0.3 gain^2), the reference ``offset`` above the other."""
    rng = np.random.default_rng(seed)
    rows = []
    for method, off in (("psft", offset), ("sft", 0.0)):
        gains = np.linspace(
            0.02 + (shift if method == "sft" else 0), 0.3 + (shift if method == "sft" else 0), n
        )
        for g in gains:
            rows.append(
                {
                    "method": method,
                    "in_domain_gain": g,
                    "ood_change": -0.3 * g**2 + off + rng.normal(0, noise),
                }
            )
    return pd.DataFrame(rows)


def test_a_real_offset_at_equal_gain_holds():
    (c,) = decide([compare(_points(0.03), "sft", "psft", 0.02)])
    assert c["verdict"] == "holds"
    assert c["estimate"] == pytest.approx(0.03, abs=0.006)
    assert c["df"] == 24 - 4  # 24 runs, 4 coefficients


def test_a_negative_offset_does_not_hold():
    (c,) = decide([compare(_points(-0.03), "sft", "psft", 0.02)])
    assert c["verdict"] == "does not hold"


def test_no_offset_with_tight_points_is_equivalent_and_with_loose_points_inconclusive():
    (tight,) = decide([compare(_points(0.0, noise=0.002), "sft", "psft", 0.02)])
    assert tight["verdict"] == "equivalent within ±0.02"
    (loose,) = decide([compare(_points(0.0, noise=0.05, n=5), "sft", "psft", 0.02)])
    assert loose["verdict"] == "inconclusive"


def test_only_the_common_support_is_compared():
    c = compare(_points(0.0, shift=0.2), "sft", "psft", 0.02)
    assert c["support_low"] == pytest.approx(0.22) and c["support_high"] == pytest.approx(0.30)
    assert c["n_psft"] < 12 and c["n_sft"] < 12  # points outside the range both methods reach are left out


def test_disjoint_frontiers_are_inconclusive_not_extrapolated():
    pts = _points(0.0, shift=0.5)
    (c,) = decide([compare(pts, "sft", "psft", 0.02)])
    assert c["verdict"] == "inconclusive" and c["note"] == "too few points"


def test_holm_adjusts_across_the_family():
    a = compare(_points(0.006, noise=0.004, seed=1), "sft", "psft", 0.02)
    b = compare(_points(0.03, seed=2), "sft", "psft", 0.02)
    decided = decide([a, b])
    assert decided[0]["p_holm"] >= a["p"] and decided[1]["p_holm"] >= b["p"]
