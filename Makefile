# The two commands of the README: `make demo` (install + main job) and `make test` (install + tests).
# `make check` (lint + import resolution) and `make test-fast` are the contributor loop (CONTRIBUTING.md).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DATA   ?= data
DEMO_CUSTOMERS ?= 20000
AS_OF  ?= 2026-01-01

.PHONY: install demo test test-fast lint check bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev,spark]'
	touch $(STAMP)

install: $(STAMP)

## Main job on embedded defaults: demo data -> train (MLflow under data/) -> batch scores ->
## feature snapshot -> the API on http://127.0.0.1:8000 (Ctrl-C stops it).
demo: $(STAMP)
	test -d $(DATA)/demo || $(BIN)/churnguard demo-data --out $(DATA)/demo --customers $(DEMO_CUSTOMERS) --seed 7
	CHURNGUARD_DATA_DIR=$(DATA) $(BIN)/churnguard train --data $(DATA)/demo
	@v=$$(CHURNGUARD_DATA_DIR=$(DATA) $(BIN)/churnguard models --json | $(BIN)/python -c 'import json, sys; v = json.load(sys.stdin)["versions"][0]; print("" if "champion" in v["aliases"] else v["version"])'); \
	if [ -n "$$v" ]; then \
	  echo "make demo: the promotion gate kept v$$v as challenger (reason above); the demo serves it anyway: churnguard promote $$v --force"; \
	  CHURNGUARD_DATA_DIR=$(DATA) $(BIN)/churnguard promote $$v --force; \
	fi
	CHURNGUARD_DATA_DIR=$(DATA) $(BIN)/churnguard models
	CHURNGUARD_DATA_DIR=$(DATA) $(BIN)/churnguard score --data $(DATA)/demo --as-of $(AS_OF) --out $(DATA)/scores.parquet
	$(BIN)/churnguard features build --data $(DATA)/demo --as-of $(AS_OF) --out $(DATA)/features.parquet
	CHURNGUARD_DATA_DIR=$(DATA) $(BIN)/churnguard serve --host 127.0.0.1 --port 8000

## The whole test suite (what CI runs).
test: $(STAMP)
	$(BIN)/python -m pytest

## The unit tests (no real fits, no CLI/API/server integration, no Spark JVM), on both cores:
## the loop while working. Run `make test` before you push.
test-fast: $(STAMP)
	$(BIN)/python -m pytest -m "not slow and not integration and not spark" -n 2 -q

## ruff, mypy over every first-party module (churnguard.* resolves to the floor folders), and
## the floor contracts (import-linter, [tool.importlinter] in pyproject.toml).
lint: $(STAMP)
	$(BIN)/ruff check churnguard features model training serving tests bench
	$(BIN)/mypy churnguard
	$(BIN)/lint-imports

## lint + pyright (basedpyright): every import resolves as an editor sees it. CI runs this.
check: lint
	$(BIN)/basedpyright

bench: $(STAMP)
	$(BIN)/python bench/features.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
