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
# # Report: every table and figure of this run, beside the paper's, with a verdict per finding
#
# Executed by `snakemake` (rule `report`) and converted to `results/report.html` (`results/<profile>/report.html`
# for other profiles). It only reads what the other rules wrote: figures, tables, findings, the PSFT run's token
# traces, Snakemake's per-rule benchmark files; nothing is computed here that a table does not already hold.

# %% tags=["parameters"]
profile: str = "mini"  # config/<profile>.yaml
trace_run: str = "psft"  # a run with trace_examples > 0: its demonstrations rendered token by token
trace_example: int = 0  # which traced demonstration
max_tokens: int = 400  # cut the rendering after this many tokens

# %%
from IPython.display import HTML, Image, Markdown, display

from psftlib.report.html import (
    benchmarks_table,
    figure_list,
    findings_markdown,
    provenance,
    render_trace,
    table_list,
    table_markdown,
)

display(Markdown(provenance(profile)))

# %% [markdown]
# ## Findings
# Each numbered finding of the paper as a test on this run (`psftlib/findings.py`); the noise rule is stated in
# `results/findings.md`.

# %%
display(Markdown(findings_markdown(profile)))

# %% [markdown]
# ## Figures

# %%
for name, caption, path in figure_list(profile):  # every figure of config/artifacts.yaml this profile builds
    display(Markdown(f"### {name}\n\n{caption}"))
    display(Image(filename=str(path)) if path.exists() else Markdown(f"*missing: {path}*"))

# %% [markdown]
# ## Tables (ours beside the paper's)

# %%
for name, caption, path in table_list(profile):  # every table of config/artifacts.yaml this profile builds
    display(
        Markdown(f"*{caption}*\n\n" + (table_markdown(path) if path.exists() else f"### {name}\n\n*missing*"))
    )

# %% [markdown]
# ## A demonstration, token by token, early and late in training
#
# What Figure 10 summarises, shown in place: each trained token of one demonstration, shaded by its ratio
# r = π_θ / π_old at the step it was trained (blue r < 1, red r > 1; white r = 1), clipped tokens (r > 1 + ε_high,
# no gradient) boxed. The first and the last time the demonstration was trained.

# %%
display(HTML(render_trace(profile, trace_run, trace_example, max_tokens)))

# %% [markdown]
# ## Wall time per rule (Snakemake `benchmark:` files; this machine, this run)

# %%
display(Markdown(benchmarks_table(profile)))
