# The two commands of the README: `make demo` (set up, then guarded chats on the embedded model) and `make test`.
.PHONY: setup setup-test demo test lint typecheck pytest docs

VENV := .venv
BIN := $(VENV)/bin

setup:
	@bash scripts/setup.sh

setup-test:
	@bash scripts/setup.sh --test

demo: setup
	$(BIN)/guardrail check -q
	$(BIN)/guardrail chat --policy no_competitors --max-tokens 60 "Which cloud storage services are popular?"
	$(BIN)/guardrail chat -v --max-tokens 48 "What is the capital of France?"

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
