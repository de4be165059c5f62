# pdfrelay — `make run` starts the whole service locally, `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Two stamps: `make run` installs the runtime and the embedded S3 server (`.[dev]`, moto) only;
# `make test` everything (`.[test]`, which includes `.[dev]`). Neither reinstalls the other's.
STAMP := $(VENV)/.installed-stamp
RUN_STAMP := $(VENV)/.run-stamp

.PHONY: run test lint typecheck unit bench report system-deps run-deps services settings-doc clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -e '.[test]'
	touch $(STAMP)

$(RUN_STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	test $(STAMP) -nt pyproject.toml 2>/dev/null || $(BIN)/python -m pip install -q -e '.[dev]'
	touch $(RUN_STAMP)

# Everything the tests use (Tesseract eng+deu, docker-compose); fails when it cannot install.
system-deps:
	./infra/system-deps.sh

# What the service uses (Tesseract eng+deu); when it cannot install it says what to install.
run-deps:
	./infra/system-deps.sh --ocr --soft

services:
	./infra/services.sh

run: $(RUN_STAMP) run-deps services
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
