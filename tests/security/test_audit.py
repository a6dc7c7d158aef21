"""The audit never loses a record silently: checked at start, failures follow `audit.on_error`, private by
default (HMAC under a deployment key, mode 0600), rotated by size."""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import stat
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from guardrail import parse_policy
from guardrail.audit import AUDIT_KEY_ENV, AuditError, AuditSink
from guardrail.backends.remote import OpenAIBackend
from guardrail.guard import Guard
from guardrail.server import create_app
from tests.fakes import ScriptedBackend
from tests.fault_server import FaultServer, fault_server
from tests.llama_server import free_port, wait_ready
from tests.servers import serving

POLICY_TEXT = (
    "name: audited\nrules:\n  - {id: no-bad, judge: pattern, keywords: [BAD], criterion: says BAD}\n"
    "actions: [{action: rewind, max_attempts: 2}, {action: refuse, message: Refused.}]\n"
)
UNWRITABLE = "/proc/guardrail-audit/audit.jsonl"  # not creatable, even for root


@pytest.fixture(autouse=True)
def audit_key(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(AUDIT_KEY_ENV, "test-deployment-key")


@pytest.fixture(scope="module")
def upstream() -> Iterator[FaultServer]:
    with fault_server() as server:
        yield server


def policy(extra: str = "") -> Any:
    return parse_policy(POLICY_TEXT + extra)


def test_an_unwritable_audit_location_fails_at_construction() -> None:
    with pytest.raises(AuditError, match="cannot write the audit file"):
        Guard(policy(), ScriptedBackend(["Fine."]), audit=UNWRITABLE)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a disk that is always full)")
def test_a_full_disk_fails_closed_with_no_unaudited_answer() -> None:
    guard = Guard(policy(), ScriptedBackend(["Fine answer. More."]), audit="/dev/full")
    with pytest.raises(AuditError, match="fail_closed"):
        guard.invoke("hi")
    released = []
    with pytest.raises(AuditError):
        for event in guard.stream("hi"):
            if event.type == "text":
                released.append(event.text)
    assert released == []  # the verdict that would admit the text could not be recorded: nothing went out


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_a_full_disk_with_on_error_warn_answers_and_logs(caplog: Any) -> None:
    guard = Guard(policy("audit: {on_error: warn}\n"), ScriptedBackend(["Fine answer."]), audit="/dev/full")
    with caplog.at_level(logging.ERROR, logger="guardrail.audit"):
        assert guard.invoke("hi").text == "Fine answer."
    errors = [r for r in caplog.records if r.name == "guardrail.audit"]
    assert len(errors) == 1 and "going on without an audit" in errors[0].getMessage()


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full")
def test_serve_answers_503_when_the_audit_fails(upstream: FaultServer) -> None:
    guard = Guard(policy(), OpenAIBackend(upstream.url("ok", uuid.uuid4().hex[:8]), model="m"), audit="/dev/full")
    with serving(create_app(guard)) as base:
        body = {"messages": [{"role": "user", "content": "hi"}]}
        response = httpx.post(f"{base}/chat/completions", json=body, timeout=30)
        assert response.status_code == 503 and response.json()["error"]["type"] == "audit_error"
        assert "/dev/full" not in response.text
        streamed = httpx.post(f"{base}/chat/completions", json={**body, "stream": True}, timeout=30).text
        assert "audit_error" in streamed and "The sky" not in streamed and streamed.rstrip().endswith("[DONE]")


def test_records_are_private_by_default(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    Guard(policy(), ScriptedBackend(["This is BAD. ", "Fine answer."]), audit=audit).invoke("my secret question")
    text = audit.read_text()
    assert stat.S_IMODE(audit.stat().st_mode) == 0o600
    assert "secret question" not in text and "Fine answer" not in text and "BAD" not in text
    for plain in ("my secret question", "Fine answer.", "This is BAD. "):  # not confirmable by a plain hash
        assert hashlib.sha256(plain.encode()).hexdigest() not in text
    records = [json.loads(line) for line in text.splitlines()]
    assert {r["type"] for r in records} >= {"verdict", "rewind", "final"}
    assert all(len(r["prompt_hmac"]) == 64 for r in records)
    final = records[-1]
    assert "text" not in final and len(final["text_hmac"]) == 64
    sink = AuditSink(tmp_path / "other.jsonl")
    assert final["text_hmac"] == sink.digest("Fine answer.")  # verifiable by whoever holds the key


def test_a_generated_key_is_kept_beside_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(AUDIT_KEY_ENV)
    first = AuditSink(tmp_path / "a.jsonl")
    key = tmp_path / "a.jsonl.key"
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_text()) == 64
    assert AuditSink(tmp_path / "a.jsonl").digest("x") == first.digest("x")  # the same deployment, the same key


def test_the_text_is_kept_only_when_the_policy_asks(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    pol = policy("audit: {include_rejected_text: true}\n")
    Guard(pol, ScriptedBackend(["This is BAD. ", "Fine answer."]), audit=audit).invoke("q")
    final = json.loads(audit.read_text().splitlines()[-1])
    assert final["text"] == "Fine answer." and final["prompt_text"] == "q"


def test_records_rotate_by_size(tmp_path: Path) -> None:
    audit = tmp_path / "audit.jsonl"
    guard = Guard(policy("audit: {max_bytes: 2000, backups: 2}\n"), ScriptedBackend(["Fine."] * 30), audit=audit)
    for _ in range(30):
        guard.invoke("hi")
    files = sorted(path.name for path in tmp_path.glob("audit.jsonl*") if not path.name.endswith(".key"))
    assert files == ["audit.jsonl", "audit.jsonl.1", "audit.jsonl.2"]
    assert all(path.stat().st_size <= 2000 for path in tmp_path.glob("audit.jsonl*"))
    for path in (audit, tmp_path / "audit.jsonl.1"):
        assert all(json.loads(line)["request_id"] for line in path.read_text().splitlines())  # whole records


# ----------------------------------------------------------------------------------------------- the CLI


def serve_command(policy_file: Path, upstream_url: str, *extra: str) -> list[str]:
    return [sys.executable, "-m", "guardrail", "serve", "--policy", str(policy_file), "--model", upstream_url, *extra]


def test_serve_with_an_unwritable_audit_exits_at_start_with_one_line(tmp_path: Path) -> None:
    policy_file = tmp_path / "p.yaml"
    policy_file.write_text(POLICY_TEXT)
    result = subprocess.run(
        serve_command(policy_file, "http://127.0.0.1:9/v1", "--audit", UNWRITABLE, "--port", str(free_port())),
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "cannot write the audit file" in lines[0], result.stderr


def test_sigterm_stops_serve_within_seconds_with_a_request_in_flight(tmp_path: Path, upstream: FaultServer) -> None:
    policy_file = tmp_path / "p.yaml"
    policy_file.write_text(POLICY_TEXT)
    port = free_port()
    stall = upstream.url("stall", uuid.uuid4().hex[:8])  # one word, then 60 s of silence
    process = subprocess.Popen(
        serve_command(policy_file, stall, "--port", str(port), "--deadline", "600", "--grace", "2"),
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )  # fmt: skip
    try:
        wait_ready(f"http://127.0.0.1:{port}/health", None, timeout=60)
        body = {"messages": [{"role": "user", "content": "hi"}]}
        outcome: list[Any] = []

        def ask() -> None:
            try:
                outcome.append(httpx.post(f"http://127.0.0.1:{port}/v1/chat/completions", json=body, timeout=90))
            except httpx.HTTPError as err:
                outcome.append(err)

        client = threading.Thread(target=ask, daemon=True)
        client.start()
        time.sleep(1.0)  # the request is waiting on the silent upstream
        start = time.monotonic()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)
        assert time.monotonic() - start < 10
        client.join(10)
        assert outcome and not (isinstance(outcome[0], httpx.Response) and outcome[0].status_code == 200)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGKILL)
            process.wait()
