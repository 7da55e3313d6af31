# SSPO for verl — the targets a user runs. `make help` lists them.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
PY := $(BIN)/python
# CPU machines: torch is installed from a pinned CPU build before anything that depends on it.
TORCH_PIN ?= torch==2.13.0
EXTRAS ?= cpu,test
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help install test lint

help:  ## list the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

$(BIN)/activate:
	$(PYTHON) -m venv $(VENV)

$(VENV)/.installed: pyproject.toml | $(BIN)/activate
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q "$(TORCH_PIN)"
	$(PY) -m pip install -q -e ".[$(EXTRAS)]"
	touch $@

install: $(VENV)/.installed  ## create .venv and install the project (CPU torch, test tools)

test: install  ## run the whole test suite (CPU only; fails if no test ran)
	@$(BIN)/pytest $(PYTEST_ARGS); rc=$$?; \
	  if [ $$rc -eq 5 ]; then echo "pytest collected no tests: failing"; exit 1; fi; exit $$rc

lint: install  ## ruff on the code, hadolint on the Dockerfile
	$(BIN)/ruff check sspo tests benchmarks recipe examples
	$(BIN)/hadolint docker/Dockerfile
