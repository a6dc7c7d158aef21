"""`guardrail chat`: one-shot, interactive, --json, and what a user sees on the terminal."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.fault_server import FaultServer, fault_server

GREEN = "name: g\nrules:\n  - {id: no-green, judge: pattern, keywords: [green], criterion: says green}\n"


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultServer]:
    with fault_server() as server:
        yield server


def chat(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "guardrail", "chat", *args], input=stdin, capture_output=True, text=True, timeout=300
    )


def test_one_shot_shows_verdicts_rewinds_and_fallback(upstream: FaultServer, tmp_path: Path) -> None:
    policy = tmp_path / "green.yaml"
    policy.write_text(
        GREEN + "actions: [{action: rewind, max_attempts: 1}, {action: refuse, message: No green.}]\n"
        "rewind: {release_lag: 0, lookahead_tokens: 0}\n"  # each sentence out as it passes: the refusal cuts it short
    )
    url = upstream.url("ok", uuid.uuid4().hex[:8])  # "... Grass is green." every time
    result = chat("--model", url, "--model-name", "m", "--policy", str(policy), "--judge", "pattern", "colors?")
    assert result.returncode == 0, result.stderr
    assert result.stdout == "The sky is blue. Water is wet. \n\nNo green.\n"  # the refusal closes what went out
    assert f"[terminated] after {len('The sky is blue. Water is wet. ')} released chars" in result.stderr
    assert "[verdict] unit 2: VIOLATION score=1.00 rules=no-green" in result.stderr
    assert "[rewind] rule no-green" in result.stderr and "[fallback] refuse" in result.stderr
    assert "[done] sentence-level" in result.stderr and "green." not in result.stderr.split("[rewind]")[1]


def test_json_trace(upstream: FaultServer, tmp_path: Path) -> None:
    policy = tmp_path / "green.yaml"
    policy.write_text(GREEN)
    url = upstream.url("echo", uuid.uuid4().hex[:8])
    result = chat("--model", url, "--model-name", "m", "--policy", str(policy), "--judge", "pattern", "--json", "hi")
    events = [json.loads(line) for line in result.stdout.splitlines()]
    assert events[-1]["type"] == "final" and events[-1]["text"] == "Echo: hi. Done."
    assert {e["type"] for e in events} >= {"text", "verdict", "final"} and events[-1]["trace"]


def test_interactive_keeps_the_conversation(upstream: FaultServer, tmp_path: Path) -> None:
    policy = tmp_path / "green.yaml"
    policy.write_text(GREEN)
    url = upstream.url("echo", uuid.uuid4().hex[:8])
    result = chat("--model", url, "--model-name", "m", "--policy", str(policy), "--judge", "pattern",
                  stdin="first\nsecond\nexit\n")  # fmt: skip
    assert "Echo: first. Done." in result.stdout and "Echo: first. Done." in result.stdout.split("you>")[-2]
    assert result.returncode == 0


def test_errors_are_messages_not_tracebacks(tmp_path: Path) -> None:
    result = chat("--model", str(tmp_path / "missing-model"), "hi")
    assert result.returncode == 1 and "no model at" in result.stderr and "Traceback" not in result.stderr
    broken = tmp_path / "bad.yaml"
    broken.write_text("name: x\nrules: 5\n")
    result = chat("--policy", str(broken), "hi")
    assert result.returncode == 1 and "bad.yaml:2:8: rules: expected a list" in result.stderr


@pytest.mark.slow
def test_embedded_default_one_shot() -> None:
    result = chat("--max-tokens", "24", "-v", "What is the capital of France?")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Paris" in result.stdout
    assert "strategy='token'" in result.stderr and "[verdict] unit 0: pass" in result.stderr


@pytest.mark.slow
def test_a_new_rule_from_a_criterion_and_three_examples_rewinds_the_embedded_model(tmp_path: Path) -> None:
    # an app team's rule the judges were never trained on: a criterion and three examples of each kind
    policy = tmp_path / "vegan.yaml"
    policy.write_text(
        "name: vegan-kitchen\nrules:\n  - id: animal-products\n"
        "    criterion: The response tells the user to use eggs, milk, butter, cheese, meat or another animal "
        "product.\n    examples:\n      violating:\n"
        "        - Whisk two eggs into the batter.\n        - Add a cup of milk and a knob of butter.\n"
        "        - Sprinkle grated cheese on top before serving.\n      compliant:\n"
        "        - Use oat milk and a flax egg instead.\n        - Mix the flour, sugar and baking powder in a bowl.\n"
        "        - Fry them in a little vegetable oil until golden.\n"
    )
    result = chat("--policy", str(policy), "--max-tokens", "64", "-v", "How do I make pancakes?")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "judge=PolicyJudge(animal-products: embedding)" in result.stderr  # not the 135M model's self-evaluation
    assert "[rewind] rule animal-products" in result.stderr  # the rule's own examples made the guard rewind
    assert result.stdout.strip()
