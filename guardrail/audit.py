"""The audit sink: one JSON line per verdict, rewind, fallback and final result; never loses a record silently.

- **Checked at start.** The file is opened (its folder created) when the sink is made, so a read-only or
  missing location is an ``AuditError`` before a server listens, not a 500 on the first request.
- **Failures follow the policy** (``audit.on_error``): ``fail_closed`` (default) raises ``AuditError`` from the
  request, so no answer goes out unaudited (a record is written before the text it admits is released);
  ``warn`` logs once per failure streak and goes on.
- **Private by default.** Prompts, answers and rejected drafts are stored as HMAC-SHA-256 under a
  per-deployment key (``GUARDRAIL_AUDIT_KEY``, or a random key kept beside the file as ``<file>.key``, mode
  0600; a rejected draft as the HMAC of its SHA-256, the only form an event carries), so a guessable prompt
  cannot be confirmed from the audit alone; the text itself only when the policy
  sets ``audit.include_rejected_text`` (what ``guardrail export`` needs). Strings that look like credentials
  are masked in every record.
- **Durable and bounded.** Mode 0600, flushed after every record, rotated by size (``audit.max_bytes``,
  ``audit.backups``: ``audit.jsonl.1`` is the newest old file).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import threading
import time
from pathlib import Path
from typing import Any, Literal

from guardrail.errors import AuditError
from guardrail.events import Event

__all__ = ["AUDIT_KEY_ENV", "AuditError", "AuditSink", "mask_secrets"]

#: Environment variable holding the deployment's audit key (hex or any string); shared by replicas.
AUDIT_KEY_ENV = "GUARDRAIL_AUDIT_KEY"
_SECRET = re.compile(r"(?:sk|pk|rk|ghp|gho|xox[abp])-[A-Za-z0-9_\-]{12,}|Bearer\s+[A-Za-z0-9._\-]{12,}")
_log = logging.getLogger("guardrail.audit")


def mask_secrets(text: str) -> str:
    """Mask API-key-shaped substrings (``sk-...``, ``Bearer ...``)."""
    return _SECRET.sub("[secret masked]", text)


class AuditSink:
    """Appends audit records to a JSON-lines file (thread-safe; one open handle per sink).

    Example::

        guard = Guard("harmless", backend, audit="audit.jsonl")
        sink = AuditSink("audit.jsonl", on_error="warn", max_bytes=50_000_000)
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        on_error: Literal["fail_closed", "warn"] = "fail_closed",
        max_bytes: int = 100 << 20,
        backups: int = 5,
        key: bytes | None = None,
    ) -> None:
        self.path = Path(path)
        self.on_error = on_error
        self.max_bytes = max_bytes
        self.backups = backups
        self._lock = threading.Lock()
        self._failing = False
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._key = key if key is not None else _deployment_key(self.path)
            self._fd: int | None = _open(self.path)
        except OSError as err:
            raise AuditError(f"cannot write the audit file {str(self.path)!r}: {err.strerror or err}") from None

    def __repr__(self) -> str:
        return f"AuditSink({str(self.path)!r}, on_error={self.on_error!r})"

    def digest(self, text: str) -> str:
        """HMAC-SHA-256 of ``text`` under the deployment key (what the audit stores instead of the text)."""
        return hmac.new(self._key, text.encode("utf-8", "surrogatepass"), hashlib.sha256).hexdigest()

    def record(self, event: Event, *, request_id: str, policy: str, prompt: str = "", raw_text: bool = False) -> None:
        """Write one event. ``raw_text``: keep prompt, answer and rejected text (the policy asked for it)."""
        if event.type == "text":
            return
        data: dict[str, Any] = {"ts": round(time.time(), 3), "request_id": request_id, "policy": policy}
        data["prompt_hmac"] = self.digest(prompt)
        if raw_text:
            data["prompt_text"] = prompt
        data.update(event.to_dict())
        if "rejected_sha256" in data:  # unsalted, a guessable draft could be confirmed from it: keyed instead
            data["rejected_hmac"] = self.digest(str(data.pop("rejected_sha256")))
        if event.type == "final":
            data.pop("trace", None)  # the trace is already recorded event by event
            if not raw_text:
                data["text_hmac"] = self.digest(str(data.pop("text", "")))
        self._write(mask_secrets(json.dumps(data, ensure_ascii=False)) + "\n")

    @property
    def key(self) -> bytes:
        """The deployment key the HMACs are made with (hand it to workers whose records join this file)."""
        return self._key

    def write_line(self, line: str) -> None:
        """Append a record another sink made under the same key (a worker's, ``guardrail.ray_engine``)."""
        self._write(mask_secrets(line.rstrip("\n")) + "\n")

    def _write(self, line: str) -> None:
        payload = line.encode("utf-8", "surrogatepass")
        with self._lock:
            try:
                if self._fd is None:
                    self._fd = _open(self.path)
                if self.max_bytes and os.fstat(self._fd).st_size + len(payload) > self.max_bytes:
                    self._rotate()
                written = os.write(self._fd, payload)
                if written != len(payload):
                    raise OSError(f"short write ({written} of {len(payload)} bytes)")
            except OSError as err:
                self._failed(err)
                return
            if self._failing:
                _log.warning("audit file %s is writable again", self.path)
                self._failing = False

    def _failed(self, err: OSError) -> None:
        message = f"cannot write the audit record to {str(self.path)!r}: {err.strerror or err}"
        if self.on_error == "fail_closed":
            raise AuditError(message + " (audit.on_error: fail_closed; no unaudited answer is given)")
        if not self._failing:
            _log.error("%s; going on without an audit (audit.on_error: warn)", message)
        self._failing = True

    def _rotate(self) -> None:
        """audit.jsonl -> audit.jsonl.1 -> ... -> audit.jsonl.<backups> (the oldest is dropped)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        for index in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{index}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{index + 1}"))
        if self.backups > 0:
            self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        else:
            self.path.unlink(missing_ok=True)
        self._fd = _open(self.path)

    def close(self) -> None:
        with self._lock:
            if self._fd is not None:
                os.close(self._fd)
                self._fd = None


def _open(path: Path) -> int:
    """Open for appending, created 0600 (the mode is also tightened on a file that exists)."""
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    if hasattr(os, "fchmod") and path.is_file():
        os.fchmod(fd, 0o600)
    return fd


def _deployment_key(path: Path) -> bytes:
    """The HMAC key: ``GUARDRAIL_AUDIT_KEY``, else ``<audit file>.key`` (created 0600 with 32 random bytes)."""
    given = os.environ.get(AUDIT_KEY_ENV)
    if given:
        return given.strip().encode()
    key_file = path.with_name(path.name + ".key")
    try:
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return key_file.read_bytes().strip()
    with os.fdopen(fd, "w") as handle:
        handle.write(secrets.token_hex(32))
    return key_file.read_bytes().strip()
