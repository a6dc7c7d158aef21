"""Files a user names are checked for type and size before reading, decoded per line, and never echoed."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from guardrail.errors import PolicyError
from guardrail.files import FileRejected, decoded_lines, read_bounded
from guardrail.policy import load_policy
from guardrail.testset import load_prompts

SECRET = "root:$6$Zq9SECRETHASH$abcdefgh:19000:0:99999:7:::"


def test_extends_a_device_is_refused_before_reading(tmp_path: Path) -> None:
    policy = tmp_path / "p.yaml"
    policy.write_text("name: p\nextends: /dev/zero\nrules: []\n")
    with pytest.raises(PolicyError, match="not a regular file"):  # read 23.7 GB before
        load_policy(policy)


def test_extends_a_non_policy_file_never_echoes_it(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow"
    shadow.write_text(SECRET + "\ndaemon:*:19000:0:99999:7:::\n")
    policy = tmp_path / "p.yaml"
    policy.write_text(f"name: p\nextends: {shadow}\nrules: []\n")
    with pytest.raises(PolicyError) as caught:
        load_policy(policy)
    assert "SECRET" not in str(caught.value) and "$6$" not in str(caught.value)
    assert "not a policy" in str(caught.value)


def test_a_policy_named_directly_that_is_not_one_is_not_echoed(tmp_path: Path) -> None:
    shadow = tmp_path / "shadow.yaml"
    shadow.write_text(SECRET + "\n")
    result = subprocess.run(
        [sys.executable, "-m", "guardrail", "check", str(shadow)], capture_output=True, text=True, timeout=120
    )
    assert result.returncode != 0
    assert "SECRET" not in result.stdout + result.stderr


def test_read_bounded_reads_at_most_the_limit_from_files_that_lie_about_their_size() -> None:
    # /proc files report size 0 but are not empty: the read itself is bounded
    proc = Path("/proc/self/maps")
    if not proc.exists():
        pytest.skip("no /proc here")
    with pytest.raises(FileRejected, match="larger than"):
        read_bounded(proc, 16, "file")


def test_prompt_sets_are_bounded_too(tmp_path: Path) -> None:
    with pytest.raises(FileRejected, match="not a regular file"):
        load_prompts("/dev/zero")
    good = tmp_path / "p.jsonl"
    good.write_text('{"prompt": "hi"}\n')
    assert [p.prompt for p in load_prompts(good)] == ["hi"]


def test_lines_decode_one_by_one() -> None:
    raw = b'\xef\xbb\xbf{"a": 1}\n\xff\xfe bad\n{"b": 2}\r\n' + b"x" * 100 + b"\nlast"
    lines = list(decoded_lines(io.BytesIO(raw), max_bytes=50))
    assert [(line.number, line.text) for line in lines if line.error is None] == [
        (1, '{"a": 1}'), (3, '{"b": 2}'), (5, "last"),
    ]  # fmt: skip
    errors = {line.number: line.error for line in lines if line.error}
    assert set(errors) == {2, 4} and "not UTF-8" in str(errors[2]) and "longer than" in str(errors[4])


def test_guardrail_judge_reports_bad_lines_and_goes_on(tmp_path: Path) -> None:
    data = tmp_path / "pairs.jsonl"
    good = json.dumps({"prompt": "Where do I mail Ann?", "response": "Her address is ann@example.com"})
    data.write_bytes(b"\xef\xbb\xbf" + good.encode() + b"\n" + b"\xc3\x28 invalid\n" + good.encode() + b"\n")
    result = subprocess.run(
        [sys.executable, "-m", "guardrail", "judge", "--policy", "no_pii", "--judge", "pattern", "--input", str(data)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    records = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["line"] for r in records] == [1, 2, 3]
    assert records[0]["violated"] and records[2]["violated"]  # the BOM line is judged, not "bad"
    assert "not UTF-8" in records[1]["error"]
