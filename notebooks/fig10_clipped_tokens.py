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
# # Figure 10: which tokens does PSFT clip?
#
# §5.1 of the paper: the clipped tokens are mostly "thinking-pattern" words (wait, alternatively, ...), early,
# middle and late in training. From the PSFT run's token telemetry (`tokens.parquet`: a seeded sample of the
# trained tokens with their ratio r and whether r left the trust region from above), one word cloud per third of
# training, word size by the number of clips; and the share of the small world's reflective words among clipped
# tokens against their share among all trained tokens.

# %% tags=["parameters"]
profile: str = "mini"  # config/<profile>.yaml
publish: bool = False  # True (the pipeline): write the committed figures and tables; False: under scratch/
run: str = "psft"  # a run with token_sample_rate > 0

# %%
import matplotlib.pyplot as plt
import pandas as pd
from wordcloud import WordCloud

from psftlib.layout import Layout
from psftlib.report.analysis import clipped_token_stats, reflective_share, write_csv
from psftlib.report.plots import save_figure
from psftlib.worlds.small import REFLECTIVE

outputs = Layout(profile, scratch=not publish)  # where figures and tables go: committed ones or scratch/

tokens = pd.read_parquet(Layout(profile).run(run) / "tokens.parquet")
stats = clipped_token_stats(tokens)
share = reflective_share(stats, REFLECTIVE)
share

# %%
phases = list(share.index)
fig, axes = plt.subplots(1, len(phases), figsize=(4 * len(phases), 3.2))
for ax, phase in zip(axes, phases, strict=True):
    counts = stats[(stats["phase"] == phase) & (stats["clipped"] > 0)].set_index("token_text")["clipped"]
    ax.axis("off")
    ax.set_title(f"{phase}: {int(counts.sum())} clipped tokens (sampled)")
    if len(counts):
        cloud = WordCloud(width=400, height=300, background_color="white", random_state=0, colormap="viridis")
        ax.imshow(cloud.generate_from_frequencies(counts.to_dict()), interpolation="bilinear")
fig.tight_layout()
written = save_figure(fig, outputs.figures / "fig10_clipped_tokens")
csv = write_csv(share, outputs.tables / "fig10_clipped_tokens.csv")
print("\n".join(map(str, [*written, csv])))

# %%
from IPython.display import Image

Image(filename=str(written[0]))
