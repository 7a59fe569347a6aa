"""Pieces of the run report (``notebooks/report.py`` -> ``results/report.html``): provenance, the list of figures
and tables with captions, the token-by-token rendering of traced demonstrations, per-rule wall time."""

from __future__ import annotations

import html
import importlib.metadata
import math
import platform
from pathlib import Path

import pandas as pd

from psftlib.analysis import markdown_table, provenance_line, run_dir, tables_dir
from psftlib.config import ROOT, load_profile
from psftlib.plots import figures_dir

PACKAGES = ("torch", "transformers", "trl", "lm_eval", "accelerate", "snakemake", "papermill", "jupytext",
            "numpy", "pandas", "matplotlib")  # fmt: skip

# (file stem, caption): paper numbering; the captions say what is ours
FIGURE_CAPTIONS = (
    ("fig1_entropy", "Figure 1: token entropy of the trained tokens per train batch (one old-policy refresh), "
     "SFT / SFT-KL / PSFT / PSFT + warm-up and our controls; thin lines: other seeds."),
    ("fig3_performance", "Figure 3: in-domain and out-of-domain accuracy during fine-tuning (in-training subset)."),
    ("fig5_grpo", "Figure 5: GRPO from the SFT and PSFT cold starts: entropy and in-domain accuracy."),
    ("fig6_dpo", "Figure 6: DPO from SFT / PSFT / prolonged PSFT: entropy, chosen and rejected rewards."),
    ("fig7_alignment_tax", "Figure 7: the alignment tax: out-of-domain scores before and after DPO."),
    ("fig10_clipped_tokens", "Figure 10: the tokens PSFT clips, early / middle / late in training (word size by "
     "number of clips)."),
    ("fig11_clip_ablation", "Figure 11: clip-value ablation (no clip, several eps_high): entropy, gradient norm, "
     "in-domain accuracy."),
    ("fig12_update_frequency", "Figure 12: old-policy update frequency (never, every 4 / 8 / 16 mini batches)."),
)  # fmt: skip
TABLE_NAMES = ("world_calibration", "table1_main", "table2_grpo", "table3_dpo", "table6_update_frequency")


def figure_list(profile: str, root: Path = ROOT) -> list[tuple[str, str, Path]]:
    """``(name, caption, png path)`` of every figure the report shows."""
    return [(stem, caption, figures_dir(profile, root) / f"{stem}.png") for stem, caption in FIGURE_CAPTIONS]


def table_list(profile: str, root: Path = ROOT) -> list[tuple[str, Path]]:
    """``(name, markdown path)`` of every table the report shows."""
    return [(name, tables_dir(profile, root) / f"{name}.md") for name in TABLE_NAMES]


def table_markdown(path: Path) -> str:
    """A table's Markdown file, its headings moved two levels down to sit under the report's sections."""
    return "\n".join("##" + line if line.startswith("#") else line for line in path.read_text().splitlines())


def findings_markdown(profile: str, root: Path = ROOT) -> str:
    """The findings table of ``results/findings.md`` (without its preamble)."""
    path = root / "results" / ("" if profile == "mini" else profile) / "findings.md"
    if not path.exists():
        return f"*{path.relative_to(root)} not produced yet*"
    lines = path.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith("Verdicts:")), 0)
    return "\n".join(lines[start:])


def provenance(profile: str, root: Path = ROOT) -> str:
    """Markdown: the profile, the git commit (and whether sources differ from it), the config's hash, versions."""
    prof = load_profile(profile)
    versions = []
    for name in PACKAGES:
        try:
            versions.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            versions.append(f"{name} (not installed)")
    return "\n".join([
        f"**Profile** `{prof.name}`: {prof.data.get('description', '')}",
        "",
        f"- {provenance_line(profile, root)}",
        f"- Python {platform.python_version()} on {platform.machine()}; " + ", ".join(versions),
    ])  # fmt: skip


def _colour(ratio: float, span: float = 0.3) -> str:
    """White at r = 1, red above, blue below; full colour at |log r| >= span."""
    x = max(-1.0, min(1.0, math.log(max(ratio, 1e-9)) / span))
    fade = int(255 * (1 - abs(x)))
    return f"rgb(255,{fade},{fade})" if x > 0 else f"rgb({fade},{fade},255)"


def render_trace(profile: str, run: str, example: int, max_tokens: int = 400, root: Path = ROOT) -> str:
    """HTML: demonstration ``example`` of ``run``'s ``traces.parquet``, the first and the last time it was trained,
    each token shaded by its ratio r, clipped tokens boxed (hover: r and the token's log-probabilities)."""
    path = run_dir(profile, run, root) / "traces.parquet"
    if not path.exists():
        return f"<p><i>{html.escape(str(path))}: no traces (set trace_examples in runs.{run})</i></p>"
    traces = pd.read_parquet(path)
    traces = traces[traces["example"] == example]
    if traces.empty:
        return f"<p><i>demonstration {example} was not traced in {html.escape(run)}</i></p>"
    parts = []
    steps = sorted(traces["step"].unique())
    for label, step in (("first time trained", steps[0]), ("last time trained", steps[-1])):
        t = traces[traces["step"] == step].sort_values("position").head(max_tokens)
        epoch = float(t["epoch"].iloc[0])
        clipped = int(t["clipped"].sum())
        spans = []
        for row in t.itertuples():
            r = 1.0 if row.ratio is None or pd.isna(row.ratio) else float(row.ratio)
            style = f"background:{_colour(r)};padding:1px 2px;margin:1px;display:inline-block"
            if row.clipped:
                style += ";outline:2px solid black;font-weight:bold"
            tip = f"r = {r:.3f}, log p = {row.logprob:.2f}"
            spans.append(
                f'<span style="{style}" title="{html.escape(tip)}">{html.escape(str(row.token_text))}</span>'
            )
        parts.append(
            f"<h4>{label}: step {step} (epoch {epoch:.2f}), {len(t)} tokens, {clipped} clipped</h4>"
            f'<div style="font-family:monospace;line-height:1.9">{"".join(spans)}</div>'
        )
    return "\n".join(parts)


def benchmarks_table(profile: str, root: Path = ROOT) -> str:
    """Markdown: wall time and peak memory of every job, from Snakemake's ``benchmark:`` files."""
    folder = root / "results" / "benchmarks" / profile
    files = sorted(folder.glob("*.tsv"))
    if not files:
        return f"*no benchmark files under {folder.relative_to(root)}*"
    rows = {}
    for f in files:
        b = pd.read_csv(f, sep="\t")
        rows[f.stem] = {"wall_s": float(b["s"].iloc[-1]), "max_rss_mb": float(b["max_rss"].iloc[-1])}
    table = pd.DataFrame(rows).T.sort_values("wall_s", ascending=False)
    total = table["wall_s"].sum()
    return (
        f"{len(table)} jobs, {total / 60:.1f} min of job time in all (jobs run side by side, so the wall time of "
        f"the whole DAG is less).\n\n" + markdown_table(table.round(1), "job")
    )


def to_html(notebook: str | Path, out: str | Path) -> Path:
    """Convert an executed notebook to a standalone HTML page without code cells, written atomically."""
    import nbconvert
    import nbformat

    from psftlib.data import atomic_write

    nb = nbformat.read(str(notebook), as_version=4)
    body, _ = nbconvert.HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)\
        .from_notebook_node(nb)  # fmt: skip
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as f:
        f.write(body)
    return out


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(
        description="executed report notebook -> standalone HTML (no code cells)"
    )
    parser.add_argument("notebook")
    parser.add_argument("out")
    args = parser.parse_args()
    print(to_html(args.notebook, args.out))
