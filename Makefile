# Everything installs into .venv from pinned ranges in pyproject.toml.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,bench,relay,lan]'
	touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/crdt-sync demo

test: $(STAMP)
	bash .ci/system-deps
	$(BIN)/python -m pytest -q

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/mypy

bench: $(STAMP)
	$(BIN)/python -m crdt_sync.benchmarks.write_path --turns --repeat 3
	$(BIN)/python -m crdt_sync.benchmarks.big_space
	$(BIN)/crdt-sync bench merge --shared-traces --out bench-out/merge

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
