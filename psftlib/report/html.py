"""Pieces of the run report (``notebooks/report.py`` -> ``results/report.html``): provenance, the list of figures
and tables with captions, the token-by-token rendering of traced demonstrations, per-rule wall time."""

from __future__ import annotations

import argparse
import html
import importlib.metadata
import math
import platform
from pathlib import Path

import pandas as pd

from psftlib.artifacts import reported
from psftlib.config import load_profile
from psftlib.data import atomic_write
from psftlib.layout import ROOT, Layout
from psftlib.report.analysis import markdown_table, provenance_line, run_dir

PACKAGES = ("torch", "transformers", "trl", "lm_eval", "accelerate", "snakemake", "papermill", "jupytext",
            "numpy", "pandas", "matplotlib")  # fmt: skip


def figure_list(profile: str, root: Path = ROOT) -> list[tuple[str, str, Path]]:
    """``(stem, caption, png path)`` of every figure the profile builds (``config/artifacts.yaml``, in its order)."""
    lay = Layout(profile, root)
    return [
        (o.stem, o.caption, lay.figure(o.stem)) for o in reported(load_profile(profile)) if o.kind == "figure"
    ]


def table_list(profile: str, root: Path = ROOT) -> list[tuple[str, str, Path]]:
    """``(stem, caption, markdown path)`` of every table the profile builds (``config/artifacts.yaml``)."""
    lay = Layout(profile, root)
    return [
        (o.stem, o.caption, lay.table(o.stem)) for o in reported(load_profile(profile)) if o.kind == "table"
    ]


def table_markdown(path: Path) -> str:
    """A table's Markdown file, its headings moved two levels down to sit under the report's sections."""
    return "\n".join("##" + line if line.startswith("#") else line for line in path.read_text().splitlines())


def findings_markdown(profile: str, root: Path = ROOT) -> str:
    """The findings table of ``results/findings.md`` (without its preamble)."""
    path = Layout(profile, root).findings
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
    folder = Layout(profile, root).benchmarks
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
    import nbconvert  # deferred: only the conversion needs it, not the report notebook that imports this module
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    body, _ = nbconvert.HTMLExporter(exclude_input=True, exclude_input_prompt=True, exclude_output_prompt=True)\
        .from_notebook_node(nb)  # fmt: skip
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as f:
        f.write(body)
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description="executed report notebook -> standalone HTML (no code cells)"
    )
    parser.add_argument("notebook")
    parser.add_argument("out")
    args = parser.parse_args()
    print(to_html(args.notebook, args.out))
