# moe-tf: `make demo` runs the main job, `make test` runs the tests, `make lab` opens the lessons.
# Each creates .venv and installs the package on first use.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install test demo bench lab clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[course,test,bench,lab]"
	@touch $(STAMP)

install: $(STAMP)

# Lint and format first (ruff, the rules in pyproject.toml), then the tests and the library's doctests.
# Two workers (pytest-xdist): the notebooks' smoke runs and the grader's subprocesses wait on
# imports and kernels as much as on the CPU, so two at a time finish sooner even on 2 cores. Tests
# that share an expensive module fixture carry an xdist_group mark and stay on one worker.
test: $(STAMP)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m pytest -n 2 --dist loadgroup --durations=15

# The main job: dense vs dense-moe vs top-2 vs Switch on MNIST (55k/5k/10k), then the results table.
# Writes runs/mnist-<timestamp>/ (results.json, curves.png, expert_load.png).
demo: $(STAMP)
	$(PY) -m moe_tf train --task mnist --model all

# The lessons in JupyterLab, from notebooks/. Installs Jupyter into .venv if it is missing (the `lab`
# extra). The notebooks read MNIST and IMDB from $MOE_TF_DATA_DIR when it is set, from the
# environment or the command line (`make lab MOE_TF_DATA_DIR=moe_tf_data`; a relative folder is
# taken from here, not from notebooks/), else they download them once into a checksum-verified cache.
# LAB_ARGS goes to JupyterLab: LAB_ARGS="--no-browser --port 8889"; LAB_ARGS=--version only checks.
LAB_ARGS ?=
lab: $(STAMP)
	@$(PY) -c "import jupyterlab" 2>/dev/null || $(PY) -m pip install --quiet --disable-pip-version-check -e ".[lab]"
	@if [ -n "$$MOE_TF_DATA_DIR" ]; then \
	  dir=$$(cd "$$MOE_TF_DATA_DIR" 2>/dev/null && pwd -P) || { echo "MOE_TF_DATA_DIR=$$MOE_TF_DATA_DIR: no such folder (prepare one with: $(PY) -m moe_tf.data download DIR)" >&2; exit 2; }; \
	  export MOE_TF_DATA_DIR="$$dir"; echo "data: $$dir (MOE_TF_DATA_DIR)"; \
	else echo "data: downloaded once into the cache (set MOE_TF_DATA_DIR to read a local folder)"; fi; \
	echo "Opening notebooks/ in JupyterLab: start with 01, run the cells in order. Ctrl-C stops the server."; \
	$(VENV)/bin/jupyter lab notebooks/ $(LAB_ARGS)

bench: $(STAMP)
	$(PY) bench/dispatch.py
	$(PY) bench/jit.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis runs
