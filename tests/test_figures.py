"""Every figure of the `mini` profile, drawn from the committed results: each run it shows has a style of its own
(colour, line style) and a legend name in words, and every panel with data has labelled axes. The style table
(psftlib/report/styles.py) gives runs the profile may add (learning-rate grids, seed replicates) a style too."""

import re
import runpy

import matplotlib.pyplot as plt
import pytest
import yaml

import psftlib.report.plots as plots
from psftlib.artifacts import present
from psftlib.config import ROOT, load_profile
from psftlib.report.styles import style_table

RAW_ID = re.compile(r"^[a-z0-9_.+\-]+$")  # sft_lr6e-4, psft+grpo: a run id, not a name in words


def _figure_notebooks() -> list[str]:
    prof = load_profile("mini")
    return sorted(a.name for a in present(prof) if a.figures)


def _draw(name: str, out) -> dict[str, plt.Figure]:
    """stem -> Figure of one figure notebook of `mini`, run as-is (its defaults; tables under scratch/)."""
    figures: dict[str, plt.Figure] = {}
    save = plots.save_figure

    def keep(fig, stem, formats=("png",)):  # save_figure would close the figure: drawn here, kept open
        stem = str(stem).rsplit("/", 1)[-1]
        figures[stem] = fig
        fig.savefig(out / f"{stem}.png", dpi=150)
        return [out / f"{stem}.png"]

    plots.save_figure = keep
    try:
        runpy.run_path(str(ROOT / "notebooks" / f"{name}.py"), run_name="__main__")
    finally:
        plots.save_figure = save
    return figures


@pytest.mark.parametrize("name", _figure_notebooks())
def test_figure_styles_names_and_labels(name, tmp_path):
    """Every figure the registry lists is drawn; in each panel every labelled line has its own (colour, line
    style) and a name in words; every panel with data has both axis labels; no title runs off the figure."""
    drawn = _draw(name, tmp_path)
    artifact = next(a for a in present(load_profile("mini")) if a.name == name)
    assert set(artifact.figures) <= set(drawn), (
        f"{name}: not drawn: {sorted(set(artifact.figures) - set(drawn))}"
    )
    ids = set(style_table("mini"))
    for stem, fig in drawn.items():
        fig.canvas.draw()
        for ax in fig.axes:
            pairs: dict[tuple, str] = {}
            for line in ax.get_lines():
                label = line.get_label()
                if label.startswith("_"):
                    continue  # unlabelled: reference lines, epoch boundaries
                assert label not in ids and not RAW_ID.match(label), (
                    f"{stem}: legend shows a run id: {label!r}"
                )
                key = (
                    line.get_color(),
                    line.get_linestyle(),
                    str(getattr(line, "_unscaled_dash_pattern", "")),
                )
                assert key not in pairs, f"{stem}: {label!r} is drawn like {pairs[key]!r} ({key[:2]})"
                pairs[key] = label
            if ax.axison and (ax.get_lines() or ax.collections or ax.patches):
                assert ax.get_xlabel() and ax.get_ylabel(), (
                    f"{stem}: panel {ax.get_title()!r} lacks an axis label"
                )
            for text in [ax.title, *([fig._suptitle] if fig._suptitle else [])]:
                ext = text.get_window_extent(renderer=fig.canvas.get_renderer())
                inside = ext.x0 >= fig.bbox.x0 - 1 and ext.x1 <= fig.bbox.x1 + 1 and ext.y1 <= fig.bbox.y1 + 1
                assert not text.get_text() or inside, (
                    f"{stem}: title {text.get_text()!r} is cut: {ext} in {fig.bbox}"
                )
        plt.close(fig)


def test_new_runs_get_a_style_without_editing_a_table(tmp_path):
    """The lead's learning-rate grid and seed replicates, and an objective no style knows, each get a distinct
    (colour, line style) within their method and a name in words."""
    data = yaml.safe_load((ROOT / "config" / "mini.yaml").read_text())
    data["runs"].update({
        "sft_lr9e-5": {"objective": "sft", "mini_batch_size": 16, "micro_batch_size": 16, "lr": 9.0e-5},
        "psft_lr9e-6": {"objective": "psft", "lr": 9.0e-6},
        "sft_as_psft_lr6e-5": {"objective": "sft", "lr": 6.0e-5},
    })  # fmt: skip
    data["seed_replicates"]["runs"].append("sft_lr9e-5")
    path = tmp_path / "grid.yaml"
    path.write_text(yaml.safe_dump(data))
    table = style_table(load_profile(path))
    assert table["sft_lr9e-5"].label == "SFT, lr 9e-5"
    assert table["psft_lr9e-6"].label == "PSFT, lr 9e-6"
    assert table["sft_as_psft_lr6e-5"].label == "SFT at PSFT's step structure, lr 6e-5"
    assert table["sft_lr9e-5_seed1"] == table["sft_lr9e-5"]  # replicates: one style, drawn as a band
    assert table["sft_as_psft"].label == "SFT at PSFT's step structure and lr"
    assert table["psft_as_sft"].label == "PSFT at SFT's lr" and table["psft_as_sft"].control
    primary = {r: s for r, s in table.items() if "_seed" not in r and "+" not in r}
    pairs = [(s.color, str(s.ls)) for s in primary.values()]
    assert len(set(pairs)) == len(pairs), "two runs share a (colour, line style)"
    assert all(not RAW_ID.match(s.label) for s in primary.values())
