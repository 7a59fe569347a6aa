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
# # Table 6 and Figure 12: how often the old policy is refreshed (§5.3)
#
# PSFT with the old policy refreshed once per train batch and 4, 8 (the default) or 16 optimizer steps per refresh,
# as §5.3 varies it: the train batch stays fixed and the mini batch sets the steps (paper: 256 / 16 = 16 steps,
# 256 / 32 = 8, the same learning rate); or never refreshed (the initial model: a trust region around the base).
# Entropy during training (Figure 12) and final scores (Table 6), beside the paper's Table 6. Only reads `results/`.

# %% tags=["parameters"]
profile: str = "mini"  # config/<profile>.yaml
publish: bool = False  # True (the pipeline): write the committed figures and tables; False: under scratch/
runs: list = [
    "psft_refresh4",
    "psft",
    "psft_refresh16",
    "psft_refresh_never",
]  # PSFT runs differing only in how often the old policy moves (mini batch size, or old_policy_refresh: never)

# %%
from psftlib.config import load_profile
from psftlib.layout import Layout
from psftlib.report.analysis import (
    markdown_table,
    paper_sections,
    per_train_batch,
    run_metrics,
    scores_table,
    write_table,
)
from psftlib.report.plots import ENTROPY, STEP, finish, new_figure, plot_runs, save_figure, seed_runs

outputs = Layout(profile, scratch=not publish)  # where figures and tables go: committed ones or scratch/

prof = load_profile(profile)


def refresh_label(run: str) -> str:
    """How often the run's old policy moves, in optimizer steps (what the paper's "upd.k" counts)."""
    cfg = prof.run_config(run)
    every = cfg.old_policy_refresh
    if every == "never":
        return "never (the base model)"
    steps = cfg.steps_per_train_batch if every == "train_batch" else every
    return f"every {steps} steps (mini batch {cfg.mini_batch_size} of {cfg.train_batch_size})"


# (a) entropy; (b) each run's entropy minus the default's (refresh every train batch), rolling mean over 10 train
# batches, beside the same difference between the default's own seeds (grey): what seed noise alone gives
# styles from each run's configuration (psftlib/report/styles.py); seed bands where a run is repeated
fig, axes = new_figure(2, width=4.6, height=3.6)
entropy = lambda r: per_train_batch(run_metrics(profile, r), ["entropy"])["entropy"]  # noqa: E731
plot_runs(axes[0][0], profile, runs, entropy, lw=1.2)
defaults = prof.data["train"]  # the default: the profile's own step structure, refreshed every train batch
default = next(r for r in runs if prof.run_config(r).old_policy_refresh == "train_batch"
               and prof.run_config(r).mini_batch_size == defaults["mini_batch_size"])  # fmt: skip
others = [r for r in runs if r != default]
plot_runs(axes[0][1], profile, others, lambda r: (entropy(r) - entropy(default)).rolling(10, min_periods=1).mean(),
          seeds=False, lw=1.2)  # fmt: skip
for copy in seed_runs(profile, default)[1:]:
    axes[0][1].plot((entropy(copy) - entropy(default)).rolling(10, min_periods=1).mean(), color="0.6", lw=1,
                    zorder=0, label="_" if copy != seed_runs(profile, default)[1] else "other seeds of the default (noise)")  # fmt: skip
axes[0][1].axhline(0, color="k", lw=0.6)
axes[0][0].set(xlabel=STEP, ylabel=ENTROPY, title="(a) entropy")
axes[0][1].set(
    xlabel=STEP, ylabel="entropy − default's (nats per token)", title="(b) difference to the default"
)
finish(fig, axes, "Figure 12: old-policy update frequency")
written = save_figure(fig, outputs.figures / "fig12_update_frequency")

# %%
ours = scores_table(profile, runs, ["in_domain", "out_of_domain"])
ours.insert(0, "old_policy_update", [refresh_label(r) for r in runs])
lines = ["# Table 6: old-policy update frequency", "", f"## This run (profile `{profile}`)", "",
         markdown_table(ours, "run"), "", *paper_sections("table6_update_frequency", "Table 6")]  # fmt: skip
write_table(outputs, "table6_update_frequency", lines, ours)
print("\n".join(lines[:10]))
