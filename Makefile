# The two commands of the README: `make demo` (install + main job) and `make test` (install + tests).
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DATA   ?= data
DEMO_CUSTOMERS ?= 20000
AS_OF  ?= 2026-01-01

.PHONY: install demo test lint bench clean

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
	CHURNGUARD_DATA_DIR=$(DATA) $(BIN)/churnguard models
	CHURNGUARD_DATA_DIR=$(DATA) $(BIN)/churnguard score --data $(DATA)/demo --as-of $(AS_OF) --out $(DATA)/scores.parquet
	$(BIN)/churnguard features build --data $(DATA)/demo --as-of $(AS_OF) --out $(DATA)/features.parquet
	CHURNGUARD_DATA_DIR=$(DATA) $(BIN)/churnguard serve --host 127.0.0.1 --port 8000

## The whole test suite (what CI runs).
test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check churnguard features training serving tests bench
	$(BIN)/mypy churnguard features training serving

bench: $(STAMP)
	$(BIN)/python bench/features.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
