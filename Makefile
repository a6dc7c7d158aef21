# The two commands of the README: `make demo` (set up, then run the main job) and `make test`.
.PHONY: setup setup-test demo test lint typecheck pytest docs

VENV := .venv
BIN := $(VENV)/bin

setup:
	@bash scripts/setup.sh

setup-test:
	@bash scripts/setup.sh --test

demo: setup
	$(BIN)/guardrail check

lint: setup-test
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup-test
	$(BIN)/mypy

pytest: setup-test
	$(BIN)/python -m pytest -q

test: lint typecheck pytest

docs: setup
	$(BIN)/python -m guardrail.policy.docs docs/policies.md
