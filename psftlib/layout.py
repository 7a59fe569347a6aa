"""Where every file of a profile goes: the one place that knows the project's folder layout (conventions.md).

The Snakefile, the command-line entry points and the notebooks all ask a :class:`Layout` for their paths::

    lay = Layout("mini")
    lay.data / "train.jsonl"            results/data/mini/train.jsonl
    lay.base                            results/world/mini/base
    lay.run("psft")                     results/runs/mini/psft/
    lay.eval("psft", "in_domain")       results/eval/mini/psft/in_domain.json
    lay.figure("fig1_entropy")          figures/fig1_entropy.png
    lay.table("table1_main")            results/tables/table1_main.md

The published outputs of the default profile (its figures, tables, findings and report) sit at the top of
``figures/`` and ``results/``, where a reader of the repository finds them; every other profile's go into a
folder named after it (``figures/smoke/``, ``results/tables/smoke/``, ``results/smoke/findings.md``). That is the
only place the default profile is special, and it is stated here once (:attr:`Layout.published`).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path


def _find_root() -> Path:
    """The project folder: ``$PSFT_ROOT``, else the checkout this package sits in, else the working dir."""
    if os.environ.get("PSFT_ROOT"):
        return Path(os.environ["PSFT_ROOT"]).resolve()
    checkout = Path(__file__).resolve().parent.parent
    return checkout if (checkout / "config" / "schema.yaml").exists() else Path.cwd()


ROOT = _find_root()
CONFIG_DIR = ROOT / "config"
NOTEBOOK_DIR = ROOT / "notebooks"
PAPER_DIR = ROOT / "results" / "paper"  # the paper's own numbers (psftlib.report.paper)
# the profile `snakemake` runs without --config, whose figures, tables, findings and report are committed
DEFAULT_PROFILE = "mini"


@dataclass(frozen=True)
class Layout:
    """Paths of one profile's inputs and outputs (nothing is created or checked here)."""

    profile: str
    root: Path = ROOT
    # figures, tables, findings and report under <root>/scratch/ (same structure): what a notebook run by hand
    # writes, so it never overwrites the committed outputs the pipeline made
    scratch: bool = False

    @property
    def published(self) -> bool:
        """The default profile's figures, tables, findings and report sit at the top level (see module doc)."""
        return self.profile == DEFAULT_PROFILE

    def _outputs(self, *parts: str) -> Path:
        base = self.root / "scratch" if self.scratch else self.root
        return base.joinpath(*parts) if self.published else base.joinpath(*parts, self.profile)

    # ---- compute: data, base model, runs, evaluations ----
    @property
    def data(self) -> Path:
        """Demonstrations, held-out set, eval sets, RL prompts, preference pairs (and the data card)."""
        return self.root / "results" / "data" / self.profile

    @property
    def base(self) -> Path:
        """The small world's base model (Hugging Face format)."""
        return self.root / "results" / "world" / self.profile / "base"

    def run(self, run: str) -> Path:
        """A run's folder: ``metrics.jsonl``, ``eval.jsonl``, ``config.json``, ``checkpoint/`` ..."""
        return self.root / "results" / "runs" / self.profile / run

    def eval_dir(self, run: str) -> Path:
        """A run's final evaluations (``base`` for the base model, ``<run>@selected`` for Table 1's selection)."""
        return self.root / "results" / "eval" / self.profile / run

    def eval(self, run: str, task_set: str, suffix: str = ".json") -> Path:
        """One final evaluation: ``.json`` (scores) or ``.samples.jsonl`` (every sampled response)."""
        return self.eval_dir(run) / f"{task_set}{suffix}"

    @property
    def initial_curves(self) -> Path:
        """The base model on the in-training subset: step 0 of every run's curves."""
        return self.eval_dir("base") / "initial_curves.json"

    # ---- figures, tables, findings, report ----
    @property
    def figures(self) -> Path:
        return self._outputs("figures")

    def figure(self, stem: str, fmt: str = "png") -> Path:
        return self.figures / f"{stem}.{fmt}"

    @property
    def tables(self) -> Path:
        return self._outputs("results", "tables")

    def table(self, stem: str, fmt: str = "md") -> Path:
        return self.tables / f"{stem}.{fmt}"

    @property
    def findings(self) -> Path:
        return self._outputs("results") / "findings.md"

    @property
    def report(self) -> Path:
        return self._outputs("results") / "report.html"

    def executed(self, name: str) -> Path:
        """A figure or table notebook as the pipeline ran it, code and outputs, as a page
        (``results/executed[/<profile>]/<name>.html``; the report links to it)."""
        return self._outputs("results", "executed") / f"{name}.html"

    # ---- by-products: executed notebooks, logs, per-job benchmarks ----
    def notebook(self, name: str) -> Path:
        """An executed notebook (``results/notebooks/<profile>/<name>.ipynb``)."""
        return self.root / "results" / "notebooks" / self.profile / f"{name}.ipynb"

    @property
    def logs(self) -> Path:
        return self.root / "results" / "logs" / self.profile

    @property
    def benchmarks(self) -> Path:
        """Snakemake's per-job wall time and memory (``benchmark:`` files; the report shows them)."""
        return self.root / "results" / "benchmarks" / self.profile

    def rel(self, path: Path) -> str:
        """``path`` relative to the project root, as the Snakefile names files."""
        return str(Path(path).relative_to(self.root))
