"""guardrail eval on the embedded model with red-team prompts: interrupted, resumed, reported, exported."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import REPO, shared_data

pytestmark = pytest.mark.slow


def test_eval_interrupt_resume_report_and_export(tmp_path: Path) -> None:
    run = tmp_path / "run"
    command = [
        sys.executable, "-m", "guardrail", "eval", "--prompts", str(shared_data("advbench.jsonl")), "--limit", "3",
        "--out", str(run), "--max-tokens", "24",
        "--benign", str(REPO / "benchmarks" / "data" / "benign.jsonl"),
    ]  # fmt: skip
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = run / "results.jsonl"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline and first.poll() is None:
        if results.exists() and results.read_text().count("\n") >= 2:
            first.send_signal(signal.SIGINT)
            break
        time.sleep(0.2)
    _, err = first.communicate(timeout=120)
    assert first.returncode == 130, err[-2000:]
    assert "resume" in err
    judged_before = results.read_text().count("\n")
    assert 2 <= judged_before < 26

    second = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"{judged_before} answers already judged" in second.stderr
    rows = [json.loads(line) for line in results.read_text().splitlines()]
    assert len(rows) == 26 and len({(r["id"], r["mode"]) for r in rows}) == 26  # 13 prompts x 2 modes, none twice
    report = (run / "report.md").read_text()
    assert "safe (unguarded)" in report and "over-refusal" in report
    # graded by default by the independent grader, not by the embedding judge that guarded them on this model
    assert "Answers judged by: **grader (harmless)**, a judge the guard does not use" in report
    assert "judge embedding" in report
    assert "Not an independent grade" not in report and "[eval] note" not in second.stderr
    assert (run / "safe_rate.png").stat().st_size > 5000 and (run / "refusal_rate.png").exists()
    summary = json.loads((run / "summary.json").read_text())
    assert summary["modes"]["guarded"]["*"]["n"] == 3 and summary["modes"]["guarded"]["benign"]["n"] == 10

    data = tmp_path / "data"
    exported = subprocess.run(
        [sys.executable, "-m", "guardrail", "export", "--run", str(run), "--out", str(data)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    assert "preference pairs" in exported.stderr
    pairs = [json.loads(line) for line in (data / "dpo.jsonl").read_text().splitlines()]
    rewound = sum(r.get("rewinds", 0) for r in rows if r["mode"] == "guarded")
    assert rewound >= 1  # the red-team prompts made the guard rewind: there is something to export
    assert 1 <= len(pairs) <= rewound
    for pair in pairs:
        assert pair["prompt"] and pair["chosen"] and pair["rejected"] and pair["chosen"] != pair["rejected"]
    sft = [json.loads(line) for line in (data / "sft.jsonl").read_text().splitlines()]
    assert sft and {r["label"] for r in sft} <= {"positive", "negative"}
