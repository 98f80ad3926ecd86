# archnet front door. `make help` lists every target.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
CONSTRAINTS ?= constraints.txt
STAMP := $(VENV)/.installed
# pytest-xdist processes for make test (each test runs torch on one thread)
TEST_WORKERS ?= 2
export WANDB_MODE ?= offline
export PYTHONWARNINGS ?= ignore

.DEFAULT_GOAL := help
-include make/*.mk

help: ## list every target with a one-line description
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-34s\033[0m %s\n", $$1, $$2}'

$(STAMP): setup.cfg pyproject.toml $(CONSTRAINTS)
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c $(CONSTRAINTS) -e '.[dev]'
	touch $(STAMP)

install: $(STAMP) ## create .venv and install archnet (editable, dev extras; torch pinned by constraints.txt)

demo: $(STAMP) ## train the tiny teacher, distill its Arch-Net student, print the table (synthetic data)
	$(BIN)/archnet-teacher experiment=demo
	$(BIN)/archnet-distill experiment=demo

test: $(STAMP) ## run the default test suite (excludes tests marked slow) on TEST_WORKERS processes
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist worksteal

test-all: $(STAMP) ## run every test, including the slow ones (DDP, long runs)
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist worksteal -m "slow or not slow"

lint: $(STAMP) ## ruff over the package, scripts and tests
	$(BIN)/ruff check archnet scripts tests

clean: ## remove outputs, caches and the virtual environment
	rm -rf outputs .cache .pytest_cache .ruff_cache .mypy_cache $(VENV) *.egg-info
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

.PHONY: help install demo test test-all lint clean
