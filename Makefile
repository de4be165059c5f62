# pdfrelay — `make run` starts the whole service locally, `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run test lint typecheck unit bench report system-deps services settings-doc clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

system-deps:
	./infra/system-deps.sh

services:
	./infra/services.sh

run: $(STAMP) services
	$(BIN)/pdfrelay dev

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: $(STAMP)
	$(BIN)/mypy

test: $(STAMP) system-deps services lint typecheck
	$(BIN)/pytest -p no:cacheprovider

settings-doc: $(STAMP)
	$(BIN)/python -m infra.settings_doc --write

bench: $(STAMP) services
	$(BIN)/python -m tests.perf

clean:
	rm -rf $(VENV) *.egg-info .mypy_cache .ruff_cache .pytest_cache
