"""How fast ``--help`` of the command lines answers (target: under 1 s): the three module commands, median of
``--repeats`` runs each, printed, never asserted (tests/test_cli.py checks instead that no heavy module loads first).

    ../.venv/bin/python bench_cli_help.py                 # this checkout
    ../.venv/bin/python bench_cli_help.py --tree /tmp/old  # another tree (e.g. `git archive <rev> | tar -x -C /tmp/old`)
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

MODULES = ("psftlib.train", "psftlib.eval", "psftlib.post")


def help_seconds(module: str, tree: Path, repeats: int) -> float:
    """Median wall time of ``python -m <module> --help`` with ``tree`` first on the import path."""
    env = {**os.environ, "PYTHONPATH": str(tree), "PSFT_ROOT": str(tree), "HF_HUB_OFFLINE": "1"}
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", module, "--help"], cwd=tree, env=env, check=True, capture_output=True
        )
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tree", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    print(f"--help wall time (median of {args.repeats}), {args.tree}; load average {os.getloadavg()[0]:.1f}")
    for module in MODULES:
        seconds = help_seconds(module, args.tree.resolve(), args.repeats)
        print(
            f"  python -m {module:<14} --help  {seconds:5.2f} s  {'ok' if seconds < 1 else 'over the 1 s target'}"
        )


if __name__ == "__main__":
    main()
