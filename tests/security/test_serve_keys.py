"""Client keys of `guardrail serve`: a blank key refuses to start; keys are trimmed."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from guardrail.cli import main


def test_empty_api_key_exits_at_start_with_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--api-key", "", "--model", "http://127.0.0.1:9/v1"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "empty or blank" in err[0]


def test_blank_key_in_the_environment_exits_too() -> None:
    env = {**os.environ, "GUARDRAIL_API_KEYS": "k1, "}
    run = subprocess.run([sys.executable, "-m", "guardrail.cli", "serve", "--model", "http://127.0.0.1:9/v1"],
                         env=env, capture_output=True, text=True, timeout=60)  # fmt: skip
    assert run.returncode == 2 and "empty or blank" in run.stderr


def test_keys_are_trimmed() -> None:
    import argparse

    from guardrail.commands.serve import client_keys

    os.environ.pop("GUARDRAIL_API_KEYS", None)
    args = argparse.Namespace(api_key=[" k0 "])
    try:
        os.environ["GUARDRAIL_API_KEYS"] = "k1, k2"
        assert client_keys(args) == ["k0", "k1", "k2"]
    finally:
        os.environ.pop("GUARDRAIL_API_KEYS")
