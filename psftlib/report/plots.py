"""Reading run outputs and drawing the paper's figures. Plotting only: nothing here trains."""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path

import matplotlib

if "ipykernel" not in sys.modules and not os.environ.get("DISPLAY"):
    matplotlib.use("Agg")  # headless (the pipeline, tests): no window; in Jupyter the inline backend stays
import matplotlib.pyplot as plt
import pandas as pd

from psftlib.report.analysis import per_train_batch

# One colour and label per run name, the same in every figure.
STYLE = {
    "sft": {"color": "#d62728", "label": "SFT"},
    "sft_kl": {"color": "#ff7f0e", "label": "SFT-KL"},
    "psft": {"color": "#1f77b4", "label": "PSFT"},
    "psft_warmup12": {"color": "#2ca02c", "label": "PSFT + warm-up (12)"},
    "psft_warmup24": {"color": "#17becf", "label": "PSFT + warm-up (24)"},
    "sft_as_psft": {"color": "#d62728", "ls": "--", "label": "SFT at PSFT's steps and lr (ours)"},
    "psft_as_sft": {"color": "#1f77b4", "ls": "--", "label": "PSFT at SFT's lr (ours)"},
    "dft": {"color": "#9467bd", "label": "DFT"},
    "iw_sft": {"color": "#8c564b", "label": "iw-SFT"},
}


def plot_entropy(
    metrics: Mapping[str, pd.DataFrame],
    smooth: int = 1,
    title: str | None = None,
    replicates: Mapping[str, Sequence[pd.DataFrame]] | None = None,
) -> plt.Figure:
    """Figure 1's layout: token entropy on the trained tokens against training progress, one line per run.

    The x axis counts train batches (verl's and the paper's "step"): SFT takes one optimizer step per train
    batch and PSFT several, so optimizer steps would not line up. Dotted vertical lines mark epoch
    boundaries, where SFT's sawtooth shows in the paper. ``replicates[run]``: the same run at other seeds,
    drawn thin and faint in the run's colour.
    """

    def line(df: pd.DataFrame) -> tuple[pd.Index, pd.Series]:
        tb = per_train_batch(df, ["entropy"])  # one point per train batch: the same data for every objective
        return tb.index, tb["entropy"].rolling(smooth, min_periods=1).mean() if smooth > 1 else tb["entropy"]

    fig, ax = plt.subplots(figsize=(8.4, 3.6))
    for run, df in metrics.items():
        style = STYLE.get(run, {"label": run})
        (drawn,) = ax.plot(*line(df), lw=1.6, **style)
        for other in (replicates or {}).get(run, []):
            ax.plot(*line(other), lw=0.8, alpha=0.4, color=drawn.get_color(), ls=style.get("ls", "-"))
    first = per_train_batch(next(iter(metrics.values())), ["entropy"])
    for boundary in first.index[first["epoch"].diff() > 0] - 0.5:
        ax.axvline(boundary, color="0.8", ls=":", lw=0.8, zorder=0)
    ax.set_xlabel("step (train batches: one old-policy refresh each)")
    ax.set_ylabel("entropy (nats, trained tokens)")
    ax.set_title(title or "Token entropy during fine-tuning")
    ax.legend(frameon=False, fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))  # beside the axes
    ax.grid(alpha=0.3)
    fig.tight_layout()
    return fig


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
