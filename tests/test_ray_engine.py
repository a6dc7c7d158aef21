"""guardrail eval --engine ray on a local Ray (2 actors): the same answers as --engine local, interrupted and
resumed, and the run's files (results, audit) good for report and export."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import REPO, shared_data

pytest.importorskip("ray.data", reason="the ray extra is not installed")
pytestmark = pytest.mark.slow


def _command(run: Path, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "guardrail", "eval", "--prompts", str(shared_data("advbench.jsonl")), "--limit", "4",
        "--judge", "embedding", "--out", str(run), "--max-tokens", "24",
        "--benign", str(REPO / "benchmarks" / "data" / "benign.jsonl"), *extra,
    ]  # fmt: skip


def _rows(run: Path) -> dict[tuple[str, str], dict[str, Any]]:
    rows = [json.loads(line) for line in (run / "results.jsonl").read_text().splitlines()]
    keyed = {(r["id"], r["mode"]): r for r in rows}
    assert len(keyed) == len(rows)  # nothing answered twice
    return keyed


def _export(run: Path, out: Path) -> list[dict[str, Any]]:
    subprocess.run(
        [sys.executable, "-m", "guardrail", "export", "--run", str(run), "--out", str(out)],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    return [json.loads(line) for line in (out / "dpo.jsonl").read_text().splitlines()]


def test_ray_engine_matches_local_and_resumes(tmp_path: Path) -> None:
    local = tmp_path / "local"
    done = subprocess.run(_command(local), capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-2000:]

    ray_run = tmp_path / "ray"
    command = _command(ray_run, "--engine", "ray", "--workers", "2")
    first = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    results = ray_run / "results.jsonl"
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and first.poll() is None:
        if results.exists() and results.read_text().count("\n") >= 3:
            first.send_signal(signal.SIGINT)
            break
        time.sleep(0.2)
    _, err = first.communicate(timeout=180)
    assert first.returncode == 130, err[-2000:]
    before = results.read_text().count("\n")
    assert 3 <= before < 28

    second = subprocess.run(command, capture_output=True, text=True, timeout=900)
    assert second.returncode == 0, second.stderr[-2000:]
    assert f"{before} answers already judged" in second.stderr

    expected, got = _rows(local), _rows(ray_run)
    assert len(expected) == 28 and set(got) == set(expected)  # 14 prompts x 2 modes
    fields = ("text", "safe", "score", "rewinds", "extra_tokens", "fallback", "refusal")
    for key, row in expected.items():
        assert {f: got[key][f] for f in fields} == {f: row[f] for f in fields}, key
    assert sum(r["rewinds"] for r in got.values()) >= 1  # the guard worked inside the actors

    local_summary = json.loads((local / "summary.json").read_text())
    ray_summary = json.loads((ray_run / "summary.json").read_text())
    for summary in (local_summary, ray_summary):
        for groups in summary["modes"].values():
            for group in groups.values():
                group.pop("latency_mean_s", None)
    assert ray_summary["modes"] == local_summary["modes"]  # the same report, timings aside

    # the actors' audit records joined the run's audit file: export finds the same preference pairs
    audited = {json.loads(line)["request_id"] for line in (ray_run / "audit.jsonl").read_text().splitlines()}
    guarded = {r["request_id"] for r in got.values() if r["mode"] == "guarded"}
    assert len(guarded) == 14 and guarded <= audited
    local_pairs, ray_pairs = _export(local, tmp_path / "local-data"), _export(ray_run, tmp_path / "ray-data")
    assert len(ray_pairs) == len(local_pairs) >= 1
    assert sorted(p["rejected"] for p in ray_pairs) == sorted(p["rejected"] for p in local_pairs)
