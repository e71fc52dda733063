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
	$(PY) -m pytest

demo: $(STAMP)
	$(PY) bench/dispatch.py --quick

bench: $(STAMP)
	$(PY) bench/dispatch.py

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis runs
