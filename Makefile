# One entry point: `make setup`, `make book`, `make test` (what CI runs), `make clean`.
# Works from a clean clone: creates .venv, installs the pinned requirements and the library,
# fetches MathJax (npm) for offline formulas, and Chromium (apt) for the browser test.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c

PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.setup-stamp
MATHJAX := book/_static/mathjax/tex-mml-svg.js
CHROMIUM := /usr/bin/chromium
# apt-get needs root; elsewhere go through sudo.
SUDO := $(shell [ "$$(id -u)" = 0 ] || echo sudo)
APT_INSTALL := $(SUDO) env DEBIAN_FRONTEND=noninteractive apt-get install -y -q

.PHONY: setup book test clean

setup: $(STAMP) $(MATHJAX)

# Re-run pip only when the requirements or the package metadata change.
$(STAMP): requirements.txt pyproject.toml
	[ -x $(PY) ] || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q -e .
	touch $@

$(MATHJAX): | $(STAMP)
	command -v npm >/dev/null || { $(SUDO) apt-get update -q && $(APT_INSTALL) npm; }
	$(PY) -m scaling_lib.book --mathjax-only

book: setup
	$(PY) -m scaling_lib book --profile book

test: setup
	[ -x $(CHROMIUM) ] || { $(SUDO) apt-get update -q && $(APT_INSTALL) chromium; }
	MPLBACKEND=Agg $(VENV)/bin/pytest -q

clean:
	rm -rf _build .pytest_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -prune -exec rm -rf {} +
	find book -maxdepth 1 -name '.*.partial.ipynb' -delete
