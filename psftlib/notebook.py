"""Run a jupytext ``py:percent`` notebook with papermill and write the executed ``.ipynb`` atomically.

Command line (what the Snakefile calls)::

    python -m psftlib.notebook notebooks/train.py results/notebooks/mini/train_psft.ipynb -p profile mini -p run psft

Parameter values are parsed as YAML (``-p epochs 2`` is an int, ``-p runs '[sft, psft]'`` a list). The executed
notebook is written under a temporary name and renamed only when every cell succeeded; a failed execution is
kept beside it as ``<name>.failed.ipynb`` for debugging and the command exits non-zero.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

import yaml

from psftlib.config import ROOT


def use_this_interpreter() -> None:
    """Put this interpreter's folder first on ``PATH``, so jobs' ``python`` is the venv snakemake runs from."""
    folder = os.path.dirname(sys.executable)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != folder:
        os.environ["PATH"] = folder + os.pathsep + os.environ.get("PATH", "")


def run_notebook(
    source: str | Path, output: str | Path, parameters: dict[str, Any] | None = None, cwd: str | Path = ROOT
) -> Path:
    """Execute ``source`` (a ``.py`` jupytext notebook or an ``.ipynb``) with ``parameters`` into ``output``."""
    import jupytext
    import papermill

    source, output = Path(source), Path(output)
    if not source.exists():
        raise FileNotFoundError(f"{source}: no such notebook")
    nb = jupytext.read(source)
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    output.parent.mkdir(parents=True, exist_ok=True)
    tmp = output.with_name(f".{output.stem}.tmp.ipynb")
    failed = output.with_name(f"{output.stem}.failed.ipynb")
    try:
        papermill.execute_notebook(
            nb, str(tmp), parameters=parameters or {}, kernel_name="python3", cwd=str(cwd), progress_bar=False
        )
    except BaseException:
        if tmp.exists():
            os.replace(tmp, failed)
        raise
    os.replace(tmp, output)
    if failed.exists():
        failed.unlink()
    return output


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("source", help="notebooks/<name>.py")
    parser.add_argument("output", help="results/notebooks/<profile>/<name>.ipynb")
    parser.add_argument("-p", "--parameter", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    args = parser.parse_args(argv)
    params = {name: yaml.safe_load(value) for name, value in args.parameter}
    try:
        run_notebook(args.source, args.output, params)
    except Exception as err:  # papermill's error already carries the failing cell and traceback
        print(f"notebook {args.source} failed: {err}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
