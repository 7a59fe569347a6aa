"""``python -m psftlib.train --profile mini --run psft [--set KEY=VALUE ...]`` (console script ``psft-train``).

The arguments, the profile and every ``--set`` value are checked before torch loads, so ``--help`` and a bad value
answer at once (``--set lr=abc`` -> ``--set: lr: got 'abc'; allowed: a number > 0, finite``); the run itself is
:func:`psftlib.train.run.main`.
"""

from __future__ import annotations

import argparse
import sys

from psftlib.config import ConfigError, load_profile, parse_overrides


def build_parser() -> argparse.ArgumentParser:
    """The command line of one training run (:func:`psftlib.train.run.main` trains from its parsed arguments)."""
    parser = argparse.ArgumentParser(
        prog="python -m psftlib.train", description="Train one run of a profile (any objective of the paper)."
    )
    parser.add_argument("--profile", default="mini", help="profile name (config/<name>.yaml) or a YAML path")
    parser.add_argument("--run", required=True, help="run name under runs: in the profile")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="override TrainConfig fields; each value is read as its field's type and checked "
                        "against config/schema.yaml, e.g. --set lr=1e-5 epochs=2 max_length=null")  # fmt: skip
    parser.add_argument("--out", default=None, help="output folder (default results/runs/<profile>/<run>)")
    parser.add_argument("--initial-curves", default=None, metavar="PATH",
                        help="the base model's in-training evaluation (psftlib.eval --initial-curves): step 0")  # fmt: skip
    return parser


def main(argv: list[str] | None = None) -> None:
    """Check the arguments, the profile and the overrides (a clear error and exit 2), then train."""
    argv = sys.argv[1:] if argv is None else argv
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        load_profile(args.profile).run_config(args.run, parse_overrides(args.set))
    except ConfigError as err:
        parser.error(str(err))
    from psftlib.train.run import main as run  # torch, transformers: only once the arguments are known good

    run(args)


if __name__ == "__main__":
    main()
