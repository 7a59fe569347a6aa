"""Reading finished runs into tables: final scores, per-epoch curves, the epoch-boundary sawtooth.

Shared by the calibration study, the table notebooks and the findings; reads ``results/``, never trains.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from psftlib.config import Profile, load_profile, replicates
from psftlib.data import DataError, atomic_write, read_json
from psftlib.layout import ROOT, Layout
from psftlib.report.paper import load_paper_table

DOMAINS = ("in_domain", "out_of_domain")


def run_dir(profile: str, run: str, root: Path = ROOT) -> Path:
    """A run's folder (:meth:`psftlib.layout.Layout.run`)."""
    return Layout(profile, root).run(run)


def domains_of(profile: str | Profile) -> dict[str, list[str]]:
    """``{"in_domain": [tasks], "out_of_domain": [tasks]}``: the profile's ``eval.task_sets`` of those names."""
    prof = load_profile(profile)
    return {d: prof.domain_tasks(d) for d in DOMAINS}


def read_jsonl_frame(path: str | Path) -> pd.DataFrame:
    """A JSONL stream (metrics or evals) as a frame; a clear error when the run has not produced it."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"{path}: missing (run its Snakemake rule first)")
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    if not rows:
        raise ValueError(f"{path}: empty")
    return pd.DataFrame(rows)


def run_metrics(profile: str, run: str, root: Path = ROOT) -> pd.DataFrame:
    """A finished run's ``metrics.jsonl``: one row per optimizer step."""
    return read_jsonl_frame(run_dir(profile, run, root) / "metrics.jsonl")


def final_scores(profile: str, run: str, task_sets: list[str], root: Path = ROOT) -> dict[str, float]:
    """``{task: avg@k}`` of a run's final evaluation (``results/eval/<profile>/<run>/<task_set>.json``); a file that
    lacks a task of its task set (the profile's ``eval.task_sets``) is an error, not a domain mean over the rest. An
    lm-eval group of the set (``mmlu_pro``) scores as its subtasks' mean weighted by their problems (``n``)."""
    out: dict[str, float] = {}
    expected = (load_profile(profile).data.get("eval") or {}).get("task_sets") or {}
    for task_set in task_sets:
        path = Layout(profile, root).eval(run, task_set)
        if not path.exists():
            raise FileNotFoundError(f"{path}: missing (snakemake {path.relative_to(root)})")
        scores = read_json(path, "an evaluation summary").get("scores") or {}
        # a task group of lm-eval (mmlu_pro) is scored by its subtasks (mmlu_pro_biology, ...)
        missing = [
            t for t in expected.get(task_set, []) if not any(k == t or k.startswith(f"{t}_") for k in scores)
        ]
        if missing:
            raise DataError(
                f"{path}: no score for task(s) {missing} of task set {task_set!r}; evaluate again"
            )
        # a key belongs to the longest task of the set it is or is a subtask of (mmlu_pro_law: mmlu_pro, not mmlu)
        parts: dict[str, list[tuple[float, float]]] = {}
        for key, s in scores.items():
            owners = [t for t in expected.get(task_set, []) if key == t or key.startswith(f"{t}_")]
            task = max(owners, key=len) if owners else key
            parts.setdefault(task, []).append((float(s["avg_at_k"]), float(s.get("n") or 1)))
        for task, p in parts.items():
            out[task] = float(np.average([v for v, _ in p], weights=[n for _, n in p]))
    return out


def domain_means(scores: dict[str, float], domains: dict[str, list[str]]) -> dict[str, float]:
    """Each domain's score: the mean over the scores of its tasks (``domains``: :func:`domains_of`); NaN if none."""
    out = {}
    for domain, tasks in domains.items():
        values = [v for k, v in scores.items() if k in tasks]
        out[domain] = float(np.mean(values)) if values else float("nan")
    return out


def per_train_batch(metrics: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """Mean of ``columns`` over the optimizer steps of each train batch (SFT: one step, PSFT: several), so every
    objective is compared on the same data. Index: train batch (1-based); column ``epoch`` (0-based)."""
    tb = np.ceil(metrics["train_batch"] - 1e-9).astype(int)
    out = metrics.assign(tb=tb).groupby("tb")[columns].mean()
    ends = metrics.assign(tb=tb).groupby("tb")["epoch"].max()
    out["epoch"] = np.ceil(ends - 1e-9).astype(int) - 1
    return out


def boundary_share(metrics: pd.DataFrame, column: str, window: int = 1) -> float:
    """The share of the per-epoch drop of ``column`` that happens across epoch boundaries (the sawtooth).

    Per train batch means ``m``; at each boundary between epochs e and e+1 the boundary drop is
    ``mean(last window of e) - mean(first window of e+1)``, the epoch drop is ``mean(first window of e) -
    mean(first window of e+1)``; the share is the sum of boundary drops over the sum of epoch drops. A smooth
    decline gives about ``window / batches_per_epoch``; a pure staircase gives 1. NaN with fewer than 2 epochs or
    no net drop.
    """
    m = per_train_batch(metrics, [column])
    epochs = sorted(m["epoch"].unique())
    boundary = drop = 0.0
    for e, nxt in itertools.pairwise(epochs):
        cur, new = m[m["epoch"] == e][column], m[m["epoch"] == nxt][column]
        if len(cur) < 2 * window or len(new) < window:
            continue
        boundary += cur.iloc[-window:].mean() - new.iloc[:window].mean()
        drop += cur.iloc[:window].mean() - new.iloc[:window].mean()
    return float(boundary / drop) if drop > 0 else float("nan")


def per_epoch(metrics: pd.DataFrame, evals: pd.DataFrame | None = None) -> pd.DataFrame:
    """One row per epoch: mean training nll / entropy / clip fractions over the epoch, and the in-training eval
    (teacher-forced train and held-out nll, held-out entropy, curve scores) taken at the epoch's end."""
    cols = [
        c for c in ("nll", "entropy", "clip_fraction_high", "clip_fraction_low", "grad_norm") if c in metrics
    ]
    out = per_train_batch(metrics, cols).groupby("epoch")[cols].mean()
    out.index = out.index + 1
    out.index.name = "epoch"
    if evals is not None:
        ends = evals[np.isclose(evals["epoch"], np.round(evals["epoch"])) & (evals["epoch"] > 0)]
        ends = ends.assign(epoch=np.round(ends["epoch"]).astype(int)).set_index("epoch")
        keep = [c for c in ends.columns if c not in ("step", "train_batch")]
        out = out.join(ends[keep].add_prefix("eval_"), how="left")
    return out


def run_summary(profile: Any, run: str, task_sets: list[str], root: Path = ROOT) -> dict[str, Any]:
    """One row describing a finished run: its settings, final scores, last-epoch NLLs/entropy, clipping, sawtooth.

    ``clip_fraction_high``: the share of trained tokens clipped (r > 1 + eps_high), mean over the steps;
    ``ratio_below_low_fraction``: the share with r < 1 - eps_low, which PSFT (A = 1) does not clip: they keep their
    gradient. Both 0 for objectives without a ratio."""
    domains = domains_of(profile)
    if run == "base":
        scores = final_scores(profile.name, run, task_sets, root)
        return {"run": "base", **domain_means(scores, domains), **scores}
    cfg = profile.run_config(run)
    metrics = run_metrics(profile.name, run, root)
    evals = read_jsonl_frame(run_dir(profile.name, run, root) / "eval.jsonl")
    epochs = per_epoch(metrics, evals)
    last = epochs.iloc[-1]
    # only r > 1 + eps_high is clipped (A = 1: the max of the clipped and unclipped terms takes the clipped one and
    # its gradient is 0); r < 1 - eps_low is not (the unclipped term is larger and keeps its gradient), so it is
    # reported as its own column, never added into the clip fraction
    clip_high = metrics.get("clip_fraction_high", pd.Series([0.0]))
    ratio_below = metrics.get("clip_fraction_low", pd.Series([0.0]))
    scores = final_scores(profile.name, run, task_sets, root)
    return {
        "run": run, "objective": cfg.objective, "lr": cfg.lr, "steps_per_train_batch": cfg.steps_per_train_batch,
        **domain_means(scores, domains), **scores,
        "train_nll": last.get("eval_train_nll"), "heldout_nll": last.get("eval_heldout_nll"),
        "nll_gap": last.get("eval_heldout_nll", np.nan) - last.get("eval_train_nll", np.nan),
        "heldout_entropy": last.get("eval_heldout_entropy"), "entropy": last.get("entropy"),
        "clip_fraction_high": float(clip_high.mean()), "ratio_below_low_fraction": float(ratio_below.mean()),
        "boundary_share_nll": boundary_share(metrics, "nll"), "boundary_share_entropy": boundary_share(metrics, "entropy"),
    }  # fmt: skip


def smallest_lr_reaching_best(rows: list[dict[str, Any]], tolerance: float) -> dict[str, Any]:
    """The calibration rule: of a learning-rate grid, the smallest lr whose final in-domain score is within
    ``tolerance`` of the grid's best (small steps that still learn the target; never chosen by what PSFT does)."""
    best = max(r["in_domain"] for r in rows)
    ok = [r for r in rows if r["in_domain"] >= best - tolerance]
    return min(ok, key=lambda r: r["lr"])


def scores_table(profile: str, runs: list[str], task_sets: list[str], root: Path = ROOT) -> pd.DataFrame:
    """Rows: runs (``base`` first if listed); columns: every task's avg@k, then ``in_domain`` / ``out_of_domain``,
    their standard deviations over seeds (``in_domain_sd`` / ``out_of_domain_sd``) and ``seeds``. A run the profile
    repeats (``seed_replicates``) shows the mean over its seeds; a run with one seed has no spread (NaN)."""
    prof = load_profile(profile)
    domains = domains_of(prof)
    rows = {}
    for run in runs:
        per_seed = []
        for r in replicates(prof, run) if run in prof.runs else [run]:
            scores = final_scores(profile, r, task_sets, root)
            per_seed.append({**scores, **domain_means(scores, domains)})
        frame = pd.DataFrame(per_seed)
        rows[run] = {**frame.mean().to_dict(), "seeds": len(frame)}
        rows[run].update({f"{d}_sd": frame[d].std(ddof=1) if len(frame) > 1 else np.nan for d in domains})
    table = pd.DataFrame(rows).T
    in_domain = sorted(c for c in table if c in domains["in_domain"])
    out_of_domain = [c for c in table if c in domains["out_of_domain"]]
    return table[[*in_domain, "in_domain", "in_domain_sd", *out_of_domain, "out_of_domain", "out_of_domain_sd",
                  "seeds"]]  # fmt: skip


def selected_table(profile: str, runs: list[str], task_sets: list[str], root: Path = ROOT) -> pd.DataFrame:
    """Table 1 at the selected checkpoints (§4.1.2): rows ``runs``, the scores of ``<run>@selected`` (the checkpoint
    of the best in-training in-domain score, ``psftlib.eval.selection_score``) and where it was taken
    (``selected_epoch`` of the run's ``epochs``). Empty when the runs keep no selection (hub runs)."""
    infos = [run_dir(profile, run, root) / "selected.json" for run in runs]
    if not all(info.exists() for info in infos):
        return pd.DataFrame()
    table = scores_table(profile, [f"{run}@selected" for run in runs], task_sets, root)
    table.index = runs
    chosen = [json.loads(info.read_text()) for info in infos]
    table.insert(0, "selected_on", [c["score"] for c in chosen])
    table.insert(0, "selected_epoch", [c["epoch"] for c in chosen])
    return table


def seed_spread_table(profile: Any, runs: list[str], root: Path = ROOT) -> pd.DataFrame:
    """Rows: the runs the profile repeats over seeds; columns: in-domain / out-of-domain mean and standard deviation
    over the seeds (the run and its ``<run>_seed<k>`` copies) and the number of seeds. Empty without replicates."""
    repeated = [run for run in runs if len(replicates(profile, run)) > 1]
    if not repeated:
        return pd.DataFrame()
    table = scores_table(profile.name, repeated, list(DOMAINS), root)
    return table[["in_domain", "in_domain_sd", "out_of_domain", "out_of_domain_sd", "seeds"]].rename(
        columns={"in_domain": "in_domain_mean", "out_of_domain": "out_of_domain_mean"}
    )


def curves(profile: str | Profile, run: str, root: Path = ROOT) -> pd.DataFrame:
    """A run's in-training evals with ``in_domain`` and ``out_of_domain`` added: the mean avg@k over the tasks of
    each domain that the in-training subset has; x axis ``train_batch``."""
    prof = load_profile(profile)
    domains = domains_of(prof)
    ev = read_jsonl_frame(run_dir(prof.name, run, root) / "eval.jsonl")
    means = {}
    for domain, tasks in domains.items():
        cols = [c for c in ev if c.endswith("/avg_at_k") and c.removesuffix("/avg_at_k") in tasks]
        means[domain] = ev[cols].mean(axis=1) if cols else np.nan
    return ev.assign(**means)


# Columns that hold an accuracy (0-1 in results/, shown in % like the paper): a task (world_*, paper_*), a domain
# mean, their gains and seed statistics, and the short names world_calibration uses.
SCORE_COLUMN = re.compile(
    r"^(world_\w+|paper_\w+|in_domain|out_of_domain|target_\d+|reverse|sort|compare|arith|count|format|"
    r"selected_on|alignment|ood_without_format|in_domain_gain|ood_change)(_mean|_sd)?$"
)
SCORE_NOTE = "*Accuracy in % (0-100, the paper's scale); a ± b: mean ± standard deviation over seeds.*"


def column_label(name: str) -> str:
    """A column id in words: ``world_target_3`` -> "3 terms", ``world_skill_reverse`` -> "reverse",
    ``in_domain`` -> "in-domain", ``selected_epoch`` -> "selected epoch"."""
    name = re.sub(r"_(mean)$", "", name)
    if m := re.fullmatch(r"(?:world_)?target_(\d+)", name):
        return f"{m.group(1)} terms"
    name = re.sub(r"^(world_skill_|world_|paper_)", "", name)
    return name.replace("in_domain", "in-domain").replace("out_of_domain", "out-of-domain").replace("_", " ")


def _cell(x: Any, score: bool) -> str:
    """One value: scores in % with one decimal, whole numbers as integers, others with 2-3 decimals."""
    if x is None or (isinstance(x, (float, np.floating)) and not np.isfinite(x)):
        return "—"
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, float, np.integer, np.floating)):
        return str(x)
    if score:
        return f"{100 * x:.1f}"
    if float(x).is_integer():
        return str(int(x))
    if 0 < abs(x) < 0.01:
        return f"{x:.3g}"  # learning rates keep their digits
    return f"{x:.2f}" if abs(x) >= 1 else f"{x:.3f}"


def markdown_table(df: pd.DataFrame, index_name: str = "") -> str:
    """A frame as a GitHub Markdown table for people: column ids in words (:func:`column_label`), accuracies
    (:data:`SCORE_COLUMN`) in % with a note saying so, whole numbers as integers, and a column ``X`` (or ``X_mean``)
    beside ``X_sd`` shown as one "mean ± sd" column. The CSV beside it keeps the raw values."""
    columns, spread = [], {}
    for col in map(str, df.columns):
        base = col.removesuffix("_mean")
        if col.endswith("_sd") and (col[:-3] in df.columns or f"{col[:-3]}_mean" in df.columns):
            continue
        if f"{base}_sd" in df.columns:
            spread[col] = f"{base}_sd"
        columns.append(col)
    scores = {c for c in columns if SCORE_COLUMN.match(c)}

    def cell(row: pd.Series, col: str) -> str:
        text = _cell(row[col], col in scores)
        if col in spread and text != "—" and np.isfinite(row[spread[col]]):
            text += " ± " + _cell(row[spread[col]], col in scores)
        return text

    head = "| " + " | ".join([index_name, *map(column_label, columns)]) + " |"
    rule = "|" + "---|" * (len(columns) + 1)
    body = ["| " + " | ".join([str(i), *(cell(row, c) for c in columns)]) + " |" for i, row in df.iterrows()]
    return "\n".join([*([SCORE_NOTE, ""] if scores else []), head, rule, *body])


def clipped_token_stats(tokens: pd.DataFrame, phases: int = 3) -> pd.DataFrame:
    """Per training phase (early / middle / late thirds of the train batches) and token: how often it was trained
    and how often clipped (ratio above 1 + clip_high). Figure 10's data."""
    tb = tokens["train_batch"]
    edges = np.linspace(tb.min(), tb.max() + 1e-9, phases + 1)
    names = ["early", "middle", "late"] if phases == 3 else [f"phase{i + 1}" for i in range(phases)]
    phase = pd.cut(tb, edges, labels=names, include_lowest=True)
    out = (
        tokens.assign(phase=phase)
        .groupby(["phase", "token_text"], observed=True)["clipped"]
        .agg(["size", "sum"])
    )
    return out.rename(columns={"size": "trained", "sum": "clipped"}).reset_index()


def reflective_share(stats: pd.DataFrame, words: list[str]) -> pd.DataFrame:
    """Per phase: the share of reflective words among clipped tokens vs among all trained tokens (§5.1)."""
    rows = []
    for phase, g in stats.groupby("phase", observed=True):
        is_w = g["token_text"].isin(words)
        rows.append({"phase": phase, "clipped_tokens": int(g["clipped"].sum()),
                     "reflective_share_of_clipped": g.loc[is_w, "clipped"].sum() / max(1, g["clipped"].sum()),
                     "reflective_share_of_trained": g.loc[is_w, "trained"].sum() / max(1, g["trained"].sum()),
                     "clip_rate_reflective": g.loc[is_w, "clipped"].sum() / max(1, g.loc[is_w, "trained"].sum()),
                     "clip_rate_other": g.loc[~is_w, "clipped"].sum() / max(1, g.loc[~is_w, "trained"].sum())})  # fmt: skip
    return pd.DataFrame(rows).set_index("phase")


def paper_sections(
    table_name: str, label: str, rows_of: Any = None, columns: str = "benchmark_id"
) -> list[str]:
    """Markdown sections of a transcribed paper table (``results/paper/<table_name>.csv``), one per model:
    method rows x benchmark columns (``columns``: the CSV's column naming them), to print beside ours;
    ``rows_of(table) -> table`` keeps some of its rows first (one model, one setting)."""
    paper = load_paper_table(table_name)
    paper = rows_of(paper) if rows_of is not None else paper
    lines: list[str] = []
    for model in paper["model"].unique():
        rows = paper[paper["model"] == model]
        t = rows.pivot_table(index="method_id", columns=columns, values="value", sort=False)
        lines += [
            f"## Paper ({model}, {label}; `results/paper/{table_name}.csv`)",
            "",
            markdown_table(t, "method"),
            "",
        ]
    return lines


def write_csv(frame: pd.DataFrame, path: Path, **to_csv: Any) -> Path:
    """``frame`` as CSV (6 significant digits), written atomically."""
    with atomic_write(path) as f:
        frame.to_csv(f, float_format="%.6g", **to_csv)
    return path


def git_commit(root: Path = ROOT) -> tuple[str, bool]:
    """(HEAD commit, whether sources or configs differ from it); ("unknown", False) outside a git checkout."""

    def git(*args: str) -> str:
        return subprocess.run(
            ["git", *args], cwd=root, capture_output=True, text=True, check=True
        ).stdout.strip()

    try:
        dirty = bool(
            git("status", "--porcelain", "--", "psftlib", "notebooks", "config", "Snakefile", "rules")
        )
        return git("rev-parse", "HEAD"), dirty
    except (OSError, subprocess.CalledProcessError):
        return "unknown", False


def provenance_line(profile: str, root: Path = ROOT) -> str:
    """One line naming what produced an output: the git commit and the profile's config file with its sha256."""
    prof = load_profile(profile)
    path = prof.path if Path(prof.path).is_absolute() else root / prof.path
    digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]
    commit, dirty = git_commit(root)
    return (f"Produced at commit `{commit[:12]}`{' (with uncommitted source changes)' if dirty else ''} from "
            f"`{prof.path}` (sha256 `{digest}`).")  # fmt: skip


def write_table(outputs: Layout, name: str, lines: list[str], table: pd.DataFrame) -> Path:
    """``<outputs.tables>/<name>.md`` (``lines`` + a provenance line) and ``.csv`` (``table``), each written
    atomically (``results/tables[/<profile>]``, or under ``scratch/`` for a notebook run by hand)."""
    out = outputs.tables / name
    with atomic_write(out.with_suffix(".md")) as f:
        f.write("\n".join([*lines, "", provenance_line(outputs.profile, outputs.root), ""]))
    write_csv(table, out.with_suffix(".csv"), index_label="run")
    return out
