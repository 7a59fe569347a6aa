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
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

import yaml

from psftlib.config import ROOT

# papermill, jupytext and jupyter_client are imported where a notebook runs: the Snakefile imports this module
# for use_this_interpreter only, and those packages cost seconds to import


def use_this_interpreter() -> None:
    """Put this interpreter's folder first on ``PATH``, so jobs' ``python`` is the venv snakemake runs from."""
    folder = os.path.dirname(sys.executable)
    if os.environ.get("PATH", "").split(os.pathsep)[0] != folder:
        os.environ["PATH"] = folder + os.pathsep + os.environ.get("PATH", "")


def _ipc_kernel_manager() -> type:
    """A kernel manager talking to its kernel over private Unix sockets instead of TCP ports.

    With TCP, jupyter_client picks "free" ports by binding and releasing them; two notebooks starting side by side
    (``snakemake --cores 2``) can pick the same port and one kernel dies at start-up. Sockets in a fresh private
    folder cannot collide (and are not reachable from the network).
    """
    from jupyter_client.manager import AsyncKernelManager

    class IPCKernelManager(AsyncKernelManager):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            self.transport = "ipc"
            self.ip = os.path.join(tempfile.mkdtemp(prefix="psft-kernel-"), "k")

        async def _async_cleanup_resources(self, restart: bool = False) -> None:
            await super()._async_cleanup_resources(restart=restart)
            if not restart:
                shutil.rmtree(os.path.dirname(self.ip), ignore_errors=True)

    return IPCKernelManager


# Kernel start-up on a loaded 2-core machine (another job training beside it) can take far longer than papermill's
# 60 s default; a start-up failure (not a failing cell) is retried once.
START_TIMEOUT_S = 600
START_ATTEMPTS = 2


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
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            papermill.execute_notebook(
                nb,
                str(tmp),
                parameters=parameters or {},
                kernel_name="python3",
                cwd=str(cwd),
                progress_bar=False,
                start_timeout=START_TIMEOUT_S,
                kernel_manager_class=_ipc_kernel_manager(),
            )
            break
        except papermill.PapermillExecutionError:  # a cell failed: deterministic, no retry
            if tmp.exists():
                os.replace(tmp, failed)
            raise
        except Exception as err:  # the kernel did not start or died: retry once
            if tmp.exists():
                os.replace(tmp, failed)
            if attempt == START_ATTEMPTS:
                raise
            print(
                f"notebook {source}: kernel failed ({type(err).__name__}: {err}); retrying", file=sys.stderr
            )
    _number_cells(tmp)
    os.replace(tmp, output)
    if failed.exists():
        failed.unlink()
    return output


def _number_cells(path: Path) -> None:
    """Cell ids by position (``cell-0``, ...): jupytext and papermill draw random ones, which would make every
    executed notebook, and the report rendered from one, differ from run to run."""
    import nbformat

    nb = nbformat.read(path, as_version=4)
    for i, cell in enumerate(nb.cells):
        cell.id = f"cell-{i}"
    nbformat.write(nb, path)


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
