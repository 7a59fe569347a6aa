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
# # The operating-point frontier: out-of-domain skill at equal in-domain gain
#
# The paper compares SFT and PSFT at one pair of learning rates (PSFT's = SFT's / 20) and finds PSFT keeps more
# out-of-domain skill. But a smaller step also moves the model less. Here each method is trained over a grid of
# learning rates (`frontier:` in the profile, fixed before the runs), every run over its seeds, and every run's
# final evaluation is a point: how much it gained in-domain, how much it lost out-of-domain. Methods are compared
# where their frontiers overlap, at equal in-domain gain (`psftlib/report/frontier.py` states the test). The
# control, SFT with PSFT's step structure (8 steps per train batch) and no clip, separates what the clip does from
# what the step size does. This notebook only reads `results/`.

# %% tags=["parameters"]
profile: str = "mini"  # config/<profile>.yaml
publish: bool = False  # True (the pipeline): write the committed figures and tables; False: under scratch/

# %%
import matplotlib.pyplot as plt

from psftlib.config import load_profile
from psftlib.layout import Layout
from psftlib.report.analysis import markdown_table, write_table
from psftlib.report.findings_data import SCORE_DELTA
from psftlib.report.frontier import describe_comparison, frontier_tests, grid_means
from psftlib.report.plots import save_figure
from psftlib.report.styles import METHODS

outputs = Layout(profile, scratch=not publish)  # where figures and tables go: committed ones or scratch/

prof = load_profile(profile)
spec = prof.data["frontier"]
points, comparisons = frontier_tests(profile)
means = grid_means(points)
means

# %%
NAMES = {"sft": "SFT (1 step per train batch)", "psft": "PSFT (8 clipped steps per train batch)",
         "sft_as_psft": "SFT with PSFT's 8 steps, no clip (control)"}  # fmt: skip
COLOURS = {m: METHODS[m][1] for m in spec["methods"] if m in METHODS}  # the colours of every other figure
fig, ax = plt.subplots(figsize=(7.6, 4.8))
for method in spec["methods"]:
    colour = COLOURS.get(method)
    seeds = points[points["method"] == method]
    grid = means[means["method"] == method]
    ax.scatter(100 * seeds["in_domain_gain"], 100 * seeds["ood_change"], s=12, alpha=0.35, color=colour, lw=0)
    ax.errorbar(100 * grid["in_domain_gain"], 100 * grid["ood_change"], xerr=100 * grid["in_domain_gain_sd"],
                yerr=100 * grid["ood_change_sd"], color=colour, marker="o", ms=6, lw=1.6, capsize=2,
                label=NAMES.get(method, method))  # fmt: skip
    for _, row in grid.iterrows():
        ax.annotate(f"{row['lr']:g}", (100 * row["in_domain_gain"], 100 * row["ood_change"]),
                    textcoords="offset points", xytext=(4, 4), fontsize=7, color=colour)  # fmt: skip
ax.axhline(0, color="0.6", lw=0.8, ls=":")
ax.set_xlabel("in-domain gain over the base model (accuracy, percentage points)")
ax.set_ylabel("out-of-domain change over the base model\n(accuracy, percentage points)")
ax.set_title(f"Operating-point frontier ({profile}): points = seeds, bars = seed sd, labels = learning rate",
             fontsize=9)  # fmt: skip
ax.grid(alpha=0.3)
ax.legend(frameon=False, fontsize=8, loc="lower left")
fig.tight_layout()
written = save_figure(fig, outputs.figures / "fig_frontier")
print("\n".join(map(str, written)))

# %%
table = means.rename(columns={"grid_point": "run"}).set_index("run")
lines = [
    "# The operating-point frontier: out-of-domain skill at equal in-domain gain",
    "",
    "Each method over its learning-rate grid (`frontier:` in the profile), every run's final evaluation a point "
    "(change over the base model, in percentage points). The comparison: an ANCOVA of out-of-domain change on "
    "method, in-domain gain and gain² over the runs in the in-domain range both methods reach, a t-test on the "
    "method term (Holm-adjusted over the comparisons), and a TOST for equivalence within ±"
    f"{SCORE_DELTA:g} (`psftlib/report/frontier.py`).",
    "",
    "## Verdicts",
    "",
    "| comparison | verdict | numbers |",
    "|---|---|---|",
    *(f"| {c['comparison']} | **{c['verdict']}** | {describe_comparison(c)} |" for c in comparisons),
    "",
    "## Grid points (mean and sd over seeds)",
    "",
    markdown_table(table, index_name="run"),
]
write_table(outputs, "frontier", lines, points.set_index("run"))
print("\n".join(lines[:14]))
