# The two commands of the README: `make demo` (the main job) and `make test` (what CI runs).
VENV ?= .venv
PY := $(VENV)/bin/python
SRC := diamond_env tests docs/hooks.py $(wildcard examples benchmarks tools train_wm.py)
RUN_DIR ?= runs/demo

.PHONY: install test test-fast lint docs demo bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	# CPU machines: the pinned CPU build of torch, before anything pulls the CUDA one.
	command -v nvidia-smi >/dev/null 2>&1 || $(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev]"
	touch $@

install: $(VENV)/.installed

lint: install
	$(VENV)/bin/ruff check $(SRC)
	$(VENV)/bin/ruff format --check $(SRC)
	$(VENV)/bin/mypy

docs: install
	$(VENV)/bin/python docs/hooks.py --check
	$(VENV)/bin/mkdocs build --strict --quiet

test: lint docs
	$(VENV)/bin/python -m pytest

# the default suite without its slow end-to-end runs (marker e2e), for local iteration
test-fast: install
	$(VENV)/bin/python -m pytest -m "not slow and not gpu and not clients and not e2e"

demo: install
	$(PY) -m diamond_env demo --game Breakout --run-dir $(RUN_DIR)
	@echo "report: $(RUN_DIR)/report.md"

bench: install
	$(PY) -m diamond_env bench --quick

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
