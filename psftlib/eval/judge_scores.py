"""Table 3's judge scores from the judge's verdicts, by each benchmark's published scorer (App. C.7.3).

- **AlpacaEval 2 LC win rate**: the official ``alpaca_eval.metrics.glm_winrate.get_length_controlled_winrate``
  (PyPI ``alpaca_eval``, GLM ``length_controlled_v1``: ``tanh`` of the standardised length difference, AlpacaEval's
  per-instruction difficulty and its regularisation towards the two gamed baselines), called on annotations in
  AlpacaEval's shape. It downloads its precomputed ``df_gamed.csv`` from the hub dataset ``tatsu-lab/alpaca_eval``
  (network or the HF cache), so the instruction ``index`` of every annotation must be its position in AlpacaEval's
  805-instruction evaluation set.
- **Arena-Hard WR**: arena-hard-auto v0.1's ``show_result.py`` and ``utils_math.py`` (lmarena/arena-hard-auto at
  3071ef95d913bb5cd632641db336a3b6c7fe4bdd, the last v0.1 layout): each game becomes a battle baseline (model_a)
  vs model (model_b) (``get_battles_from_row``: only ``A=B`` is a tie; ``B=A``, other labels and games without a
  verdict are dropped), a strong verdict (``>>``) counts ``weight = 3`` times; Bradley-Terry by ``compute_mle_elo``
  (unpenalised logistic regression on duplicated battles, a tie = one win each, scale 400, base 10, the baseline
  anchored at 1000); 100 bootstrap rounds over battles (``np.random.seed(42)``), the interval the 2.5 / 97.5
  percentiles of the bootstrap ratings; score and bounds become win rates against the baseline
  (``get_win_rate_column``), in %. Upstream fits every judged model in one frame; here each run alone (with
  only baseline battles the model's rating is the same, the bootstrap draws differ).
- **MT-Bench**: FastChat ``fastchat/llm_judge/show_result.py`` (``display_result_single``): the mean 1-10 rating
  per turn over the judgments that parsed (FastChat writes -1 for the others and drops them).
"""

from __future__ import annotations

import importlib.metadata
import math
import sys
import types
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

ARENA_BASELINE = "gpt-4-0314"  # arena-hard-auto v0.1's anchor model
# verdict label -> winner of a game where the judge saw the baseline as A (game 1) / the model as A (game 2);
# show_result.py get_battles_from_row: any other label (B=A included) gives no battle
_GAME1 = {
    "A=B": "tie",
    "A>B": "model_a",
    "A>>B": "model_a",
    "B>A": "model_b",
    "B>>A": "model_b",
}
_GAME2 = {
    "A=B": "tie",
    "A>B": "model_b",
    "A>>B": "model_b",
    "B>A": "model_a",
    "B>>A": "model_a",
}


class ScorerError(RuntimeError):
    """The official scorer is missing or refused its input; the message says which and why."""


def _glm_winrate() -> Any:
    """``alpaca_eval.metrics.glm_winrate``. alpaca_eval 0.6.6 imports ``pkg_resources`` (setuptools < 81) for two
    version helpers the metric never calls; on a newer setuptools, that name gets a stand-in built from
    ``packaging`` / ``importlib.metadata`` before the import (nothing of alpaca_eval is copied or changed)."""
    try:
        import pkg_resources  # noqa: F401
    except ImportError:
        from packaging.version import parse

        shim = types.ModuleType("pkg_resources")
        shim.parse_version = parse  # type: ignore[attr-defined]
        shim.get_distribution = lambda name: types.SimpleNamespace(version=importlib.metadata.version(name))  # type: ignore[attr-defined]
        sys.modules.setdefault("pkg_resources", shim)
    try:
        from alpaca_eval.metrics import glm_winrate
    except ImportError as err:
        raise ScorerError(
            f"AlpacaEval's LC win rate needs the 'alpaca_eval' package (requirements.lock): {err}"
        ) from err
    return glm_winrate


def alpaca_eval_scores(
    annotations: Sequence[dict[str, Any]],
    glm_name: str = "length_controlled_v1",
    gamed_csv: str | None = None,
) -> dict[str, Any]:
    """AlpacaEval 2's win rate and length-controlled win rate (%) by the official package.

    ``annotations``: AlpacaEval's shape, one per instruction: ``index`` (its position in AlpacaEval's evaluation
    set), ``instruction``, ``output_1`` (baseline), ``output_2`` (model), ``generator_1``, ``generator_2`` and
    ``preference`` in [1, 2] (2 = the model's output is preferred). ``gamed_csv``: a local copy of the GLM's
    precomputed ``df_gamed.csv`` (columns model, index, preference, std_delta_len, instruction_difficulty,
    not_gamed_baseline), handed to the official function in place of its hub download (offline runs, tiny
    worlds); None downloads AlpacaEval's own."""
    need = {"index", "output_1", "output_2", "generator_1", "generator_2", "preference"}
    for i, a in enumerate(annotations):
        if missing := need - set(a):
            raise ScorerError(f"alpaca_eval annotation {i}: missing {sorted(missing)}")
    glm = _glm_winrate()
    df = pd.DataFrame(list(annotations))
    if gamed_csv is not None and not Path(gamed_csv).exists():
        raise ScorerError(f"{gamed_csv}: no such file (paper.judge.benchmarks.alpaca_eval.glm_data)")
    download = glm.hf_hub_download
    if gamed_csv is not None:  # the module's only hub file on this path is df_gamed.csv
        glm.hf_hub_download = lambda **kw: str(gamed_csv)
    try:
        metrics = glm.get_length_controlled_winrate(
            df, glm_name=glm_name, save_weights_dir=None, is_add_glm_preference_inplace=False
        )
    finally:
        glm.hf_hub_download = download
    out = {
        k: (float(v) if isinstance(v, (int, float, np.floating, np.integer)) else v)
        for k, v in metrics.items()
    }
    return {
        k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in out.items()
    }  # JSON has no NaN


def arena_hard_battles(
    verdicts: Sequence[tuple[str | None, str | None]],
    model: str,
    baseline: str = ARENA_BASELINE,
    weight: int = 3,
) -> pd.DataFrame:
    """Battles (model_a = baseline, model_b = model, winner) from each question's (game 1, game 2) verdict labels,
    as arena-hard-auto v0.1's ``get_battles_from_judgment``: ``>>`` counts ``weight`` times, ``None`` is dropped."""
    rows = []
    for v1, v2 in verdicts:
        for label, table in ((v1, _GAME1), (v2, _GAME2)):
            if label is None or label not in table:
                continue
            n = weight if ">>" in label else 1
            rows += [{"model_a": baseline, "model_b": model, "winner": table[label]}] * n
    return pd.DataFrame(rows, columns=["model_a", "model_b", "winner"])


def compute_mle_elo(battles: pd.DataFrame, scale: float = 400, base: float = 10, init: float = 1000,
                    baseline: str = ARENA_BASELINE) -> pd.Series:  # fmt: skip
    """Bradley-Terry ratings (arena-hard-auto v0.1 ``compute_mle_elo``), the baseline anchored at ``init``. With
    one side winning every battle the likelihood has no maximum: that side gets +inf (the other -inf)."""
    from sklearn.linear_model import LogisticRegression

    names = pd.unique(pd.concat([battles["model_a"], battles["model_b"]]))
    models = pd.Series(range(len(names)), index=names)
    df = pd.concat([battles, battles], ignore_index=True)  # duplicate battles: a tie = one A win + one B win
    x = np.zeros([len(df), len(models)])
    x[np.arange(len(df)), models[df["model_a"]].to_numpy()] = +math.log(base)
    x[np.arange(len(df)), models[df["model_b"]].to_numpy()] = -math.log(base)
    y = np.zeros(len(df))
    y[(df["winner"] == "model_a").to_numpy()] = 1.0
    tie = (df["winner"] == "tie").to_numpy(copy=True)
    tie[len(tie) // 2 :] = False
    y[tie] = 1.0
    if y.min() == y.max():  # separable: sklearn refuses one class
        a_wins = y[0] == 1.0
        elo = pd.Series(
            {
                m: (math.inf if (m == battles["model_a"].iloc[0]) == a_wins else -math.inf)
                for m in models.index
            }
        )
    else:
        lr = LogisticRegression(fit_intercept=False, C=np.inf, tol=1e-8)  # C=inf: sklearn's penalty=None
        lr.fit(x, y)
        elo = pd.Series(scale * lr.coef_[0] + init, index=models.index)
    if baseline in elo.index and math.isfinite(elo[baseline]):
        elo += init - elo[baseline]
    return elo


def predict_win_rate(elo_model: float, elo_baseline: float, scale: float = 400, base: float = 10) -> float:
    """Probability (0-1) that the model beats the baseline under the ratings (``predict_win_rate``)."""
    if math.isinf(elo_model) or math.isinf(elo_baseline):
        return 1.0 if elo_model > elo_baseline else 0.0
    return 1.0 / (1.0 + base ** ((elo_baseline - elo_model) / scale))


def arena_hard_scores(battles: pd.DataFrame, model: str, baseline: str = ARENA_BASELINE, num_rounds: int = 100,
                      seed: int = 42) -> dict[str, Any]:  # fmt: skip
    """Arena-Hard win rate (%) of ``model`` against ``baseline`` with its bootstrap 95% interval (arena-hard-auto
    v0.1: point = the fit on all battles, bounds = 2.5 / 97.5 percentiles of ``num_rounds`` resampled fits' ratings,
    each turned into a win rate against the baseline, anchored at 1000)."""
    if battles.empty:
        return {"win_rate": None, "ci_low": None, "ci_high": None, "battles": 0}
    elo = compute_mle_elo(battles, baseline=baseline)
    rng = np.random.RandomState(seed)
    boot = [compute_mle_elo(battles.sample(frac=1.0, replace=True, random_state=rng), baseline=baseline)
            for _ in range(num_rounds)]  # fmt: skip
    # the model's rating with the baseline at 1000; a one-sided resample's +-inf is clipped to a rating whose win
    # rate rounds to 100 / 0 % (upstream's unpenalised fit diverges to a huge finite one), so percentiles interpolate
    ratings = np.clip([b[model] - b[baseline] + 1000.0 for b in boot], -1e5, 1e5)
    low, high = (float(np.percentile(ratings, q)) for q in (2.5, 97.5))
    return {"win_rate": 100 * predict_win_rate(elo[model], elo[baseline]),
            "ci_low": 100 * predict_win_rate(low, 1000.0), "ci_high": 100 * predict_win_rate(high, 1000.0),
            "battles": len(battles), "bootstrap_rounds": num_rounds}  # fmt: skip


def mt_bench_scores(ratings: dict[str, dict[str, float | None]]) -> dict[str, Any]:
    """MT-Bench 1-turn / 2-turn scores: the mean parsed rating per turn (FastChat ``display_result_single``)."""
    out: dict[str, Any] = {}
    for turn in (1, 2):
        got = [r[f"turn{turn}"] for r in ratings.values() if f"turn{turn}" in r]
        ok = [x for x in got if x is not None]
        out[f"turn{turn}"] = sum(ok) / len(ok) if ok else None
        out[f"unparsed_turn{turn}"] = len(got) - len(ok)
    return out


def judge_table(profile: str, runs: Sequence[str]) -> pd.DataFrame:
    """Table 3's judge columns (%, MT-Bench 1-10) of the runs that have ``<eval dir>/<run>/judge.json`` (written by
    ``python -m psftlib.eval.judge_run``); empty when none has. Columns: ``alpaca_lc``, ``alpaca_wr``,
    ``arena_hard_wr`` (+ ``arena_hard_ci``), ``mt_bench_1``, ``mt_bench_2``."""
    import json

    from psftlib.layout import Layout

    lay = Layout(profile)
    rows = {}
    for run in runs:
        path = lay.eval(run, "judge")
        if not path.exists():
            continue
        s = json.loads(path.read_text())["scores"]
        ae, ah, mt = s.get("alpaca_eval", {}), s.get("arena_hard", {}), s.get("mt_bench", {})
        ci = f"{ah['ci_low']:.1f}..{ah['ci_high']:.1f}" if ah.get("ci_low") is not None else None
        rows[run] = {"alpaca_lc": ae.get("lc_win_rate"), "alpaca_wr": ae.get("win_rate"),
                     "arena_hard_wr": ah.get("win_rate"), "arena_hard_ci": ci,
                     "mt_bench_1": mt.get("turn1"), "mt_bench_2": mt.get("turn2")}  # fmt: skip
    return pd.DataFrame.from_dict(rows, orient="index")
