"""Reading run outputs and drawing the paper's figures. Plotting only: nothing here trains."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import matplotlib

if "ipykernel" not in sys.modules and not os.environ.get("DISPLAY"):
    matplotlib.use("Agg")  # headless (the pipeline, tests): no window; in Jupyter the inline backend stays
import matplotlib.pyplot as plt
import pandas as pd

from psftlib.config import load_profile, replicates
from psftlib.layout import Layout
from psftlib.report.analysis import per_train_batch, run_metrics
from psftlib.report.styles import Style, style_table

# axis labels, the same in every figure; the paper's x axis is the training "step" (a train batch) and its scores
# are percentages (AIME-24 "nearly 20")
STEP = "step (train batches)"
ENTROPY = "entropy (nats per token)"
ACCURACY = "accuracy (%, avg@k)"


def seed_runs(profile: str, run: str) -> list[str]:
    """``run`` and those of its seed replicates that have finished (a replicate not yet run is named and skipped)."""
    done = [
        r
        for r in replicates(load_profile(profile), run)
        if (Layout(profile).run(r) / "metrics.jsonl").exists()
    ]
    missing = sorted(set(replicates(load_profile(profile), run)) - set(done))
    if missing:
        print(f"{profile}: no results yet for {missing}: drawn without them")
    return done or [run]


def plot_runs(
    ax: plt.Axes,
    profile: str,
    runs: Sequence[str],
    series: Callable[[str], pd.Series],
    seeds: bool = True,
    **kw: Any,
) -> dict[str, Style]:
    """One line per run in its style (:mod:`psftlib.report.styles`): ``series(run)`` indexed by x. A run with seed
    replicates is drawn as the seed mean with a band from the lowest to the highest seed."""
    table = style_table(profile)
    for run in runs:
        style = table[run]
        members = seed_runs(profile, run) if seeds else [run]
        frame = pd.concat([series(r).rename(r) for r in members], axis=1).sort_index()
        label = style.label if len(members) == 1 else f"{style.label} ({len(members)} seeds: mean, range)"
        if len(members) > 1:
            ax.fill_between(
                frame.index, frame.min(axis=1), frame.max(axis=1), color=style.color, alpha=0.18, lw=0
            )
        ax.plot(frame.index, frame.mean(axis=1), **{"lw": 1.5, **kw, **style.kw, "label": label})
    return table


def new_figure(ncols: int = 1, width: float = 5.0, height: float = 3.6, **kw: Any) -> tuple[plt.Figure, Any]:
    """A figure of ``ncols`` panels laid out so that titles, labels and an outside legend are never cut."""
    return plt.subplots(1, ncols, figsize=(width * ncols, height), layout="constrained", squeeze=False, **kw)


def finish(
    fig: plt.Figure, axes: Any, title: str | None = None, legend_from: plt.Axes | None = None
) -> plt.Figure:
    """Grids, the title, and one legend below the panels (the labelled lines of ``legend_from``, else of all)."""
    flat = list(getattr(axes, "flat", [axes]))
    for ax in flat:
        ax.grid(alpha=0.3)
    handles: dict[str, Any] = {}
    for ax in [legend_from] if legend_from is not None else flat:
        for handle, label in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(label, handle)
    if handles:
        ncols = min(
            len(handles), 3 if max(map(len, handles)) < 45 else 2
        )  # below the panels: never over a title
        fig.legend(
            handles.values(),
            handles.keys(),
            loc="outside lower center",
            ncols=ncols,
            frameon=False,
            fontsize=8,
        )
    if title:
        fig.suptitle(title)
    return fig


def epoch_lines(ax: plt.Axes, metrics: pd.DataFrame) -> None:
    """Dotted vertical lines at the epoch boundaries (where SFT's sawtooth shows in the paper)."""
    first = per_train_batch(metrics, ["entropy"])
    for boundary in first.index[first["epoch"].diff() > 0] - 0.5:
        ax.axvline(boundary, color="0.8", ls=":", lw=0.8, zorder=0)


def plot_entropy(profile: str, runs: Sequence[str], smooth: int = 1, title: str | None = None) -> plt.Figure:
    """Figure 1: token entropy of the trained tokens per train batch, one line per run (seed bands where the
    profile repeats a run). Our controls (runs that take another method's lr or step structure) get a panel of
    their own, beside the references of both methods, so that they are not read as either.

    The x axis counts train batches (verl's and the paper's "step"): SFT takes one optimizer step per train batch
    and PSFT several, so optimizer steps would not line up. Dotted vertical lines mark epoch boundaries.
    """
    table = style_table(profile)

    def entropy(run: str) -> pd.Series:
        tb = per_train_batch(run_metrics(profile, run), ["entropy"])["entropy"]
        return tb.rolling(smooth, min_periods=1).mean() if smooth > 1 else tb

    controls = [r for r in runs if table[r].control]
    references = [r for r in runs if not table[r].control and r in ("sft", "psft")]
    panels = [("(a) the paper's methods", [r for r in runs if r not in controls])]
    if controls:
        panels.append(("(b) our controls, beside SFT and PSFT", [*references, *controls]))
    fig, axes = new_figure(len(panels), width=5.2, height=3.8, sharey=True)
    for ax, (name, members) in zip(axes[0], panels, strict=True):
        plot_runs(ax, profile, members, entropy)
        epoch_lines(ax, run_metrics(profile, members[0]))
        ax.set(xlabel=STEP, ylabel=ENTROPY, title=name)
    smoothing = f"; rolling mean over {smooth} steps" if smooth > 1 else ""
    return finish(
        fig, axes, title or f"Token entropy of the trained tokens{smoothing} (dotted: epoch boundaries)"
    )


def save_figure(fig: plt.Figure, stem: str | Path, formats: Sequence[str] = ("png", "pdf")) -> list[Path]:
    """Write ``stem.png`` and ``stem.pdf`` atomically, without timestamps (same data => same bytes)."""
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    written = []
    for fmt in formats:
        out = stem.with_suffix(f".{fmt}")
        tmp = out.with_name(f".{out.stem}.tmp.{fmt}")
        metadata = {"CreationDate": None} if fmt == "pdf" else {"Software": None}
        fig.savefig(tmp, format=fmt, dpi=150, metadata=metadata)
        os.replace(tmp, out)
        written.append(out)
    plt.close(fig)
    return written
