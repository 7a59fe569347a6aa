# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
#   kernelspec:
#     display_name: Python 3
#     language: python
#     name: python3
# ---

# %% [markdown]
# # Proximal Supervised Fine-Tuning, reproduced: every table and figure beside the paper's, with a verdict per finding
#
# Executed by `snakemake` (rule `report`) and converted to `results/report.html` (`results/<profile>/report.html`
# for other profiles), a page that opens offline. It only reads what the other rules wrote: figures, tables,
# findings, the PSFT run's token traces, Snakemake's per-job benchmark files; nothing is computed here that a
# table does not already hold. Each figure and table links to the notebook that made it.

# %% tags=["parameters"]
profile: str = "mini"  # config/<profile>.yaml
trace_run: str = "psft"  # a run with trace_examples > 0: its demonstrations rendered token by token
trace_example: int = 0  # which traced demonstration
max_tokens: int = 400  # cut the rendering after this many tokens

# %%
import mistune
from IPython.display import HTML, Image, Markdown, display

from psftlib.artifacts import reported
from psftlib.config import load_profile
from psftlib.report.html import (
    benchmarks_table,
    data_hygiene,
    findings_markdown,
    headline,
    notebook_link,
    provenance,
    render_trace,
    table_markdown,
)

prof = load_profile(profile)
display(Markdown(f"Profile `{prof.name}`: {prof.data.get('description', '')}. Provenance at the end."))

# %% [markdown]
# ## Headline
#
# The verdicts of `results/findings.md` in brief. A finding *holds* or *does not hold* when its test says so at
# 5 %; *equivalent within ±δ* when a TOST puts the difference inside a margin stated before the runs;
# otherwise it is *inconclusive*. The frontier compares the methods at equal in-domain gain, which a single
# learning rate cannot.

# %%
display(Markdown(headline(profile)))

# %% [markdown]
# ## Findings
# Each numbered finding of the paper as a test on this run (`psftlib/report/findings.py`); the statistics are
# stated in `results/findings.md`.

# %%
display(Markdown(findings_markdown(profile)))

# %% [markdown]
# ## Figures

# %%
for out in reported(prof):  # every figure of config/artifacts.yaml this profile builds, in its order
    if out.kind != "figure":
        continue
    title, _, caption = out.caption.partition(": ")
    link = notebook_link(out.artifact, profile)
    display(Markdown(f"### {title}\n\n{caption}\n\n*M{link[1:]}.*"))
    display(Image(filename=str(out.path)) if out.path.exists() else Markdown(f"*missing: {out.path}*"))

# %% [markdown]
# ## Tables (ours beside the paper's)

# %%
for out in reported(prof):  # every table of config/artifacts.yaml this profile builds
    if out.kind != "table":
        continue
    link = notebook_link(out.artifact, profile)
    text = table_markdown(out.path) if out.path.exists() else f"### {out.stem}\n\n*missing*"
    display(Markdown(f"{text}\n\n*{out.caption} M{link[1:]}.*"))

# %% [markdown]
# ## Data: what each run trained on, and what it lost

# %%
display(Markdown(data_hygiene(profile)))

# %% [markdown]
# ## A demonstration, token by token, early and late in training
#
# What Figure 10 summarises, shown in place: each trained token of one demonstration, shaded by its ratio
# r = π_θ / π_old at the step it was trained (blue r < 1, red r > 1; white r = 1), clipped tokens (r > 1 + ε_high,
# no gradient) boxed. The first and the last time the demonstration was trained.

# %%
display(HTML(render_trace(profile, trace_run, trace_example, max_tokens)))

# %% [markdown]
# ## Provenance

# %%
display(Markdown(provenance(profile)))

# %% [markdown]
# ## Wall time per job (Snakemake `benchmark:` files of the run that produced these results)

# %%
display(
    HTML(f"<details><summary>Show the table</summary>{mistune.html(benchmarks_table(profile))}</details>")
)
