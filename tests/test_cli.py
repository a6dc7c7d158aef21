"""The `guardrail` command line: check, policies."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from guardrail.cli import main

BROKEN = Path(__file__).parent / "data" / "broken_policies"


def test_check_builtins_ok(capsys: pytest.CaptureFixture[str], repo: Path) -> None:
    files = sorted(str(p) for p in (repo / "policies").glob("*.yaml"))
    assert main(["check", *files]) == 0
    out = capsys.readouterr().out
    assert "harmless v1.0" in out and "rewind x3 -> refuse" in out and "judge=pattern" in out


def test_check_broken_folder_one_line_each(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["check", str(BROKEN)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    files = sorted(BROKEN.glob("*.yaml"))
    assert err[-1] == f"{len(files)} of {len(files)} policies invalid"
    located = err[:-1]
    assert len(located) == len(files)
    for line in located:
        assert line.split(":")[1].isdigit(), line  # file:line:...


def test_console_script_exit_code() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "guardrail", "check", str(BROKEN / "thr.yaml")], capture_output=True, text=True
    )
    assert result.returncode == 1
    assert result.stderr.startswith(f"{BROKEN / 'thr.yaml'}:5:16: rules[0].threshold: must be between 0 and 1")
    assert "Traceback" not in result.stderr


def test_policies_and_taxonomy(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policies"]) == 0
    assert "trustllm" in capsys.readouterr().out
    assert main(["policies", "--taxonomy"]) == 0
    out = capsys.readouterr().out
    assert "safety.violence" in out and "fairness.disparate_performance  (evaluation-only)" in out


def test_usage_error_is_exit_2() -> None:
    with pytest.raises(SystemExit) as info:
        main(["no-such-command"])
    assert info.value.code == 2
