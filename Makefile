# moe-tf: `make demo` runs the main job, `make test` runs the tests.
# Both create .venv and install the package on first use.

PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed-stamp

.PHONY: install test demo bench clean

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check --upgrade pip
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[test,bench]"
	@touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(PY) -m pytest --durations=15

# The main job: dense vs dense-moe vs top-2 vs Switch on MNIST (55k/5k/10k), then the results table.
# Writes runs/mnist-<timestamp>/ (results.json, curves.png, expert_load.png).
demo: $(STAMP)
	$(PY) -m moe_tf train --task mnist --model all

bench: $(STAMP)
	$(PY) bench/dispatch.py
	$(PY) bench/jit.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis runs
