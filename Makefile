# The README's two commands. Each creates .venv from the pinned lock when missing, then runs.
#   make reproduce   every figure of the default profile (mini):  snakemake --cores all
#   make figures     re-draw every figure, table, the findings and the report from the committed results (no training)
#   make test        lint + the test suite (what CI runs, through .ci/run)
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
CORES  ?= all
PROFILE ?= mini
export PATH := $(abspath $(BIN)):$(PATH)
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export PYTHONHASHSEED := 0

.PHONY: reproduce figures test env clean-smoke

env: $(STAMP)

# torch==2.13.0 is pinned in the lock; on this machine pip takes its CPU wheel from local disk.
$(STAMP): requirements.lock pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -r requirements.lock
	$(BIN)/python -m pip install --quiet --disable-pip-version-check --no-deps --no-build-isolation -e .
	touch $@

# Snakemake sets OMP_NUM_THREADS per job from the profile's `threads` (1: two jobs side by side on 2 cores).
# The README's results block is regenerated from the default profile's findings (psftlib.report.readme).
reproduce: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --config profile=$(PROFILE)
	if [ "$(PROFILE)" = mini ]; then $(BIN)/python -m psftlib.report.readme; fi

# Redraw mode: only the figure, table, findings and report rules exist (see the Snakefile); --forceall re-runs all of
# them, whatever the file times of a fresh clone.
figures: $(STAMP)
	$(BIN)/snakemake --cores $(CORES) --config profile=$(PROFILE) redraw=true --forceall
	if [ "$(PROFILE)" = mini ]; then $(BIN)/python -m psftlib.report.readme; fi

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest

clean-smoke:
	rm -rf results/*/smoke figures/smoke results/notebooks/smoke results/logs/smoke
