# segen developer commands. `make install` then `make test` is all a fresh clone needs.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test test-fast lint smoke bench clean

install:  ## create .venv and install segen (editable) with torch/torchvision, every optional extra (export, trackers, optuna, slurm) and the dev tools
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# setuptools' "Editable installation" banner is advice for editable installs, not a problem.
	# --no-compile: Python writes each module's bytecode on its first import instead of pip
	# compiling all ~19,000 files of the dependencies up front (most are never imported).
	PYTHONWARNINGS="ignore:Editable installation" $(BIN)/python -m pip install --quiet --no-compile -e ".[dev]"
	$(BIN)/python -c "import torch, torchvision; print('torch', torch.__version__, '| torchvision', torchvision.__version__)"

# `make test` runs one pytest-xdist worker per core (at most 4: each holds torch and a CLI fork server);
# a test file stays on one worker, so its module fixtures are built once.
TEST_WORKERS ?= $(shell $(PYTHON) -c "import os; print(max(1, min(4, len(os.sched_getaffinity(0)))))")

test:  ## the whole suite (what CI runs)
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) --dist loadfile

test-fast:  ## everything but the tests marked slow
	$(BIN)/python -m pytest -q -m "not slow"

lint:
	$(BIN)/ruff check segen tests scripts

smoke:  ## a seconds-long end-to-end run: train, then evaluate the checkpoint
	$(BIN)/segen train debug=smoke hydra.run.dir=outputs/smoke
	$(BIN)/segen eval ckpt=outputs/smoke/checkpoints/best.ckpt hydra.run.dir=outputs/smoke/eval

bench:  ## segen vs a plain PyTorch loop, tensor data path vs PIL DataLoader
	$(BIN)/python scripts/bench.py

clean:
	rm -rf build dist *.egg-info outputs/smoke
