"""``python -m psftlib.train --profile mini --run psft``: one training run of a profile."""

from psftlib.train.run import main

if __name__ == "__main__":
    main()
