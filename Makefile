# Two commands: `make demo` runs the main job, `make test` runs the tests.
# Both (re)build .venv from the pinned lock file first; a second call does not reinstall.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
STAMP := $(VENV)/.installed
MT := $(VENV)/bin/medtransfer
EXTRAS ?= dev,radiomics,ray,export

.PHONY: setup demo test test-all lint lock clean

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

# The report's browser test needs Chromium: install it when possible (root or passwordless sudo), else it skips.
test: $(STAMP)
	@command -v chromium >/dev/null 2>&1 || { \
		if [ "$$(id -u)" = 0 ]; then SUDO=; elif sudo -n true 2>/dev/null; then SUDO="sudo -n"; else SUDO=false; fi; \
		{ $$SUDO apt-get update -qq && $$SUDO env DEBIAN_FRONTEND=noninteractive \
			apt-get install -y -qq --no-install-recommends chromium; } >/dev/null 2>&1; \
	} || echo 'chromium not installed: the report browser test will skip'
	$(VENV)/bin/python -m pytest -q -m "not slow" tests

# Everything, the tests marked slow too (a few more minutes).
test-all: $(STAMP)
	$(VENV)/bin/python -m pytest -q tests

lint: $(STAMP)
	$(VENV)/bin/python -m ruff check src tests

# Regenerate the lock after changing dependencies in pyproject.toml (torch pins stay in constraints.txt).
lock:
	$(PYTHON) -m uv pip compile pyproject.toml --extra dev --extra radiomics --extra ray --extra export -c constraints.txt \
		--python-version 3.11 -o requirements.lock

clean:
	rm -rf $(VENV) runs .pytest_cache
