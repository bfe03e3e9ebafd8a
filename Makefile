# Two commands: `make demo` runs the main job, `make test` runs the tests.
# Both (re)build .venv from the pinned lock file first; a second call does not reinstall.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
MT := $(VENV)/bin/medtransfer
EXTRAS ?= dev,radiomics

.PHONY: setup demo test lint lock clean

setup: $(STAMP)

# The stamp depends on the files that define the environment, so editing them refreshes it.
$(STAMP): pyproject.toml requirements.lock constraints.txt
	@$(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet uv
	@test -x $(VENV)/bin/python || $(PYTHON) -m uv venv --quiet --python $(PYTHON) $(VENV)
	$(PYTHON) -m uv pip install --python $(VENV)/bin/python --compile-bytecode \
		-r requirements.lock -c constraints.txt -e ".[$(EXTRAS)]"
	@touch $(STAMP)

demo: $(STAMP)
	$(MT) demo --out runs/demo

test: $(STAMP)
	$(VENV)/bin/python -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/python -m ruff check src tests

# Regenerate the lock after changing dependencies in pyproject.toml (torch pins stay in constraints.txt).
lock:
	$(PYTHON) -m uv pip compile pyproject.toml --extra dev --extra radiomics -c constraints.txt \
		--python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) runs .pytest_cache
