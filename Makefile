# The two commands of the README: `make demo` (set up, then run the main job) and `make test`.
.PHONY: setup demo test lint typecheck pytest docs

VENV := .venv
BIN := $(VENV)/bin

setup:
	@bash scripts/setup.sh

demo: setup
	$(BIN)/guardrail check

lint: setup
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

typecheck: setup
	$(BIN)/mypy

pytest: setup
	$(BIN)/python -m pytest -q

test: lint typecheck pytest

docs: setup
	$(BIN)/python -m guardrail.policy.docs docs/policies.md
