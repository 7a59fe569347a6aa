"""Pieces of the run report (``notebooks/report.py`` -> ``results/report.html``): provenance, the list of figures
and tables with captions, the token-by-token rendering of traced demonstrations, per-rule wall time."""

from __future__ import annotations

import argparse
import html
import importlib.metadata
import json
import math
import os
import platform
import re
from pathlib import Path

import pandas as pd

from psftlib.config import load_profile
from psftlib.data import atomic_write
from psftlib.layout import ROOT, Layout
from psftlib.report.analysis import markdown_table, provenance_line, run_dir

PACKAGES = ("torch", "transformers", "trl", "lm_eval", "accelerate", "snakemake", "papermill", "jupytext",
            "numpy", "pandas", "matplotlib")  # fmt: skip


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


def data_hygiene(profile: str, root: Path = ROOT) -> str:
    """Markdown: per run, what its data lost before training (from each run's ``config.json``): records read,
    dropped or truncated by the length policy, dropped every epoch by the batch arithmetic; then the data card."""
    prof = load_profile(profile)
    lay = Layout(profile, root)
    rows = {}
    for run in prof.runs:
        path = lay.run(run) / "config.json"
        if not path.exists():
            continue
        cfg = json.loads(path.read_text())
        policy = cfg.get("length_policy") or {}
        rows[run] = {
            "records": policy.get("n_records"), "kept": policy.get("n_kept"),
            "dropped (too long)": policy.get("n_dropped"), "truncated": policy.get("n_truncated"),
            "max length": cfg.get("max_length") or "model's context", "dropped per epoch (batching)":
            cfg.get("examples_dropped_per_epoch"),
        }  # fmt: skip
    table = (
        markdown_table(pd.DataFrame(rows).T, "run") if rows else "*no run has written its config.json yet*"
    )
    card = lay.data / "card.md"
    card_text = table_markdown(card) if card.exists() else ""
    return "\n\n".join([
        "Unknown words are checked when a run starts: above 0.1 % of a dataset's tokens the run stops "
        "(`psftlib.data.DEFAULT_MAX_UNK_RATE`).", table, card_text,
    ])  # fmt: skip


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


def findings_rows(profile: str, root: Path = ROOT) -> list[dict[str, str]]:
    """The rows of ``results/findings.md``'s verdict table: ``id``, ``claim``, ``verdict`` (and the other columns)."""
    path = Layout(profile, root).findings
    if not path.exists():
        return []
    lines = [line for line in path.read_text().splitlines() if line.startswith("| ")]
    if not lines:
        return []
    names = [c.strip().split(" (")[0] for c in lines[0].strip("|").split("|")]  # "claim (paper)" -> "claim"
    rows = [
        dict(zip(names, (c.strip() for c in line.strip("|").split("|")), strict=False)) for line in lines[1:]
    ]
    return [
        {**r, "verdict": r.get("verdict", "").strip("*")} for r in rows if r.get("id") and r["id"] != "id"
    ]


def headline(profile: str, root: Path = ROOT) -> str:
    """Markdown: what holds, what does not, what is equivalent or undecided, the frontier first (it decides the
    paper's central claim at equal in-domain gain), from ``results/findings.md``."""
    rows = findings_rows(profile, root)
    if not rows:
        return "*No findings yet (results/findings.md is written by the `findings` rule).*"
    groups: dict[str, list[str]] = {}
    for r in rows:
        key = "equivalent" if r["verdict"].startswith("equivalent") else r["verdict"]
        groups.setdefault(key, []).append(f"{r['id']}: {r['claim'].split(' (')[0] or r['claim']}")
    counts = ", ".join(f"{v}: {len(ids)}" for v, ids in groups.items())
    frontier = [r for r in rows if r["id"].startswith("frontier")]
    lines = [f"**{len(rows)} findings tested** ({counts}).", ""]
    if frontier:
        lines += ["**At equal in-domain gain** (the learning-rate frontier):", ""]
        lines += [
            f"- {r['id'].removeprefix('frontier: ')}: **{r['verdict']}**; {r.get('numbers', '')}"
            for r in frontier
        ]
        lines.append("")
    for verdict in ("holds", "does not hold", "equivalent", "inconclusive", "within noise", "not run"):
        if verdict in groups:
            lines += [f"**{verdict.capitalize()}:** " + "; ".join(groups[verdict]), ""]
    return "\n".join(lines)


def notebook_link(name: str, profile: str, root: Path = ROOT) -> str:
    """Markdown: relative links from the report to the notebook that made an artifact (``notebooks/<name>.py``) and
    to that notebook as the pipeline ran it (``results/executed/<name>.html``)."""
    lay = Layout(profile, root)
    source = os.path.relpath(root / "notebooks" / f"{name}.py", lay.report.parent)
    executed = os.path.relpath(lay.executed(name), lay.report.parent)
    return f"made by [`notebooks/{name}.py`]({source}) ([as run]({executed}))"


STYLE = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;color:#222;line-height:1.45}
nav{position:fixed;top:0;left:0;bottom:0;width:16rem;overflow-y:auto;padding:1rem;background:#f6f6f6;
    border-right:1px solid #ddd;font-size:0.85rem}
nav ul{padding-left:1rem;margin:0.2rem 0} nav a{color:#035;text-decoration:none}
main{margin-left:18rem;padding:1rem 2rem;max-width:72rem}
table{border-collapse:collapse;font-size:0.8rem;margin:0.5rem 0 1rem} td,th{border:1px solid #ccc;
    padding:2px 6px;text-align:right;vertical-align:top} th{background:#eee;white-space:normal}
td:first-child,th:first-child{text-align:left}
img{max-width:100%;height:auto} pre{white-space:pre-wrap} .anchor-link{display:none}
.jp-InputArea pre,.input_area pre{background:#f4f4f4;padding:0.5em;font-size:0.8rem}
@media (max-width:900px){nav{position:static;width:auto;border:0} main{margin-left:0}}
"""


def page(title: str, body: str) -> str:
    """A self-contained HTML page: a table of contents from the body's h2/h3 headings, the body, no script and
    nothing loaded from elsewhere."""
    toc, depth = [], 2
    for level, anchor, text in re.findall(r'<h([23])\s+id="([^"]+)"[^>]*>(.*?)</h\1>', body, flags=re.S):
        text = re.sub(r"<[^>]+>", "", text).replace("¶", "").strip()
        level = int(level)
        if level > depth:
            toc.append("<ul>")
        elif level < depth:
            toc.append("</ul>")
        depth = level
        toc.append(f'<li><a href="#{anchor}">{html.escape(text, quote=False)}</a></li>')
    toc.append("</ul>" * (depth - 2))
    return (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n<title>{html.escape(title)}</title>\n'
        f"<style>{STYLE}</style>\n</head>\n<body>\n<nav><b>Contents</b><ul>{''.join(toc)}</ul></nav>\n"
        f"<main>\n{body}\n</main>\n</body>\n</html>\n"
    )


def to_html(notebook: str | Path, out: str | Path, code: bool = False) -> Path:
    """Convert an executed notebook to a self-contained HTML page (no scripts, no CDN), titled by its first heading,
    with a table of contents; written atomically. The report without its code cells; with ``code``, a figure or table
    notebook as the pipeline ran it (papermill's injected-parameters cell shows what it was given)."""
    import nbconvert  # deferred: only the conversion needs it, not the report notebook that imports this module
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    exporter = nbconvert.HTMLExporter(
        template_name="basic", exclude_input=not code, exclude_input_prompt=True, exclude_output_prompt=True
    )
    body, _ = exporter.from_notebook_node(nb)
    body = re.sub(r"<script\b.*?</script>", "", body, flags=re.S)  # widget state etc.: nothing here needs it
    body = body.replace(
        f"{ROOT}/", ""
    )  # paths a notebook printed, relative to the project: the same on any clone
    title = re.search(r"<h1[^>]*>(.*?)</h1>", body, flags=re.S)
    title_text = re.sub(r"<[^>]+>", "", title.group(1)).replace("¶", "").strip() if title else "Report"
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(out) as f:
        f.write(page(title_text, body))
    return out


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="executed notebook -> self-contained HTML page")
    parser.add_argument("notebook")
    parser.add_argument("out")
    parser.add_argument(
        "--code", action="store_true", help="keep the code cells (default: outputs only, the report)"
    )
    args = parser.parse_args()
    print(to_html(args.notebook, args.out, code=args.code))
