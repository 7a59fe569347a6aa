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
# trained tokens with their ratio r and whether r left the trust region from above): each word's clip rate against
# how often it is trained, by word type (a frequent word is clipped often even at an average rate), and one word
# cloud per third of training, word size by the number of clips; and the share of the small world's reflective words among clipped
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
# (a) the claim of §5.1 against its confound, how often a word is trained: each token's clip rate (clips / times
# trained in the sample) against its count, by word type; large markers: each type pooled. (b-d) the clipped
# words of each third of training (numbers and symbols are in (a)), word size by number of clips.
TYPES = {"reflective word": "#d62728", "other word": "#1f77b4", "number": "#7f7f7f", "symbol": "#bcbd22"}


def word_type(token: str) -> str:
    """reflective word (the world's thinking-pattern words), other word, number, or symbol / punctuation."""
    text = token.strip()
    if text in REFLECTIVE:
        return "reflective word"
    return "number" if text.isdigit() else "other word" if text.isalpha() else "symbol"


per_token = stats.groupby("token_text")[["trained", "clipped"]].sum()
per_token = per_token.assign(
    type=[word_type(t) for t in per_token.index], rate=per_token["clipped"] / per_token["trained"]
)
phases = list(share.index)
fig = plt.figure(figsize=(15, 4.4), layout="constrained")
grid = fig.add_gridspec(1, 1 + len(phases), width_ratios=[1.7, *[1] * len(phases)])
ax = fig.add_subplot(grid[0])
for kind, color in TYPES.items():
    g = per_token[per_token["type"] == kind]
    if len(g):
        pooled = 100 * g["clipped"].sum() / g["trained"].sum()
        ax.scatter(g["trained"], 100 * g["rate"], s=14, color=color, alpha=0.6, lw=0)
        ax.scatter(g["trained"].sum() / len(g), pooled, s=140, color=color, marker="D", edgecolor="k",
                   label=f"{kind}s: {pooled:.1f} % of {int(g['trained'].sum())} ({len(g)} types)")  # fmt: skip
reflective = per_token[per_token["type"] == "reflective word"].sort_values("trained")
for k, (token, row) in enumerate(
    reflective.iterrows()
):  # labels staggered upwards: they share a clip rate of 0
    ax.annotate(token, (row["trained"], 100 * row["rate"]), fontsize=8, xytext=(0, 12 + 11 * k),
                textcoords="offset points", ha="center", arrowprops={"arrowstyle": "-", "color": "0.6", "lw": 0.6})  # fmt: skip
ax.set_xscale("log")
ax.set(xlabel="times trained (sampled tokens, whole run, log scale)", ylabel="clip rate (% of times trained)",
       title="(a) clip rate by word type and frequency")  # fmt: skip
ax.grid(alpha=0.3)
ax.legend(frameon=False, fontsize=8, title="pooled (diamonds)", title_fontsize=8, loc="upper right")
for i, phase in enumerate(phases):
    cax = fig.add_subplot(grid[i + 1])
    g = stats[(stats["phase"] == phase) & (stats["clipped"] > 0)]
    words = g[g["token_text"].map(word_type).isin(["reflective word", "other word"])]
    counts = words.set_index("token_text")["clipped"]
    cax.axis("off")
    cax.set_title(
        f"({'bcd'[i]}) {phase}: {int(counts.sum())} of {int(g['clipped'].sum())} clips on words", fontsize=10
    )
    if len(counts):
        color = lambda word, **_: TYPES[word_type(word)]  # noqa: E731 - reflective words in their colour
        cloud = WordCloud(width=360, height=300, background_color="white", random_state=0, color_func=color)
        cax.imshow(cloud.generate_from_frequencies(counts.to_dict()), interpolation="bilinear")
fig.suptitle(f"Clipped tokens of the {run!r} run (§5.1); a sampled {len(tokens)} trained tokens")
written = save_figure(fig, outputs.figures / "fig10_clipped_tokens")
csv = write_csv(share, outputs.tables / "fig10_clipped_tokens.csv")
print("\n".join(map(str, [*written, csv])))

# %%
from IPython.display import Image

Image(filename=str(written[0]))
