"""The audit sink: one JSON line per verdict, rewind, fallback and final result.

Rejected text is recorded as its SHA-256 unless the policy sets ``audit.include_rejected_text``; strings that
look like credentials are masked before anything is written, so an API key never reaches the audit.
"""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path
from typing import Any, TextIO

from guardrail.events import Event

__all__ = ["AuditSink", "mask_secrets"]

_SECRET = re.compile(r"(?:sk|pk|rk|ghp|gho|xox[abp])-[A-Za-z0-9_\-]{12,}|Bearer\s+[A-Za-z0-9._\-]{12,}")


def mask_secrets(text: str) -> str:
    """Mask API-key-shaped substrings (``sk-...``, ``Bearer ...``)."""
    return _SECRET.sub("[secret masked]", text)


class AuditSink:
    """Appends audit records to a JSON-lines file (thread-safe; one open handle per sink).

    Example::

        guard = Guard("harmless", backend, audit="audit.jsonl")
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._handle: TextIO | None = None

    def record(
        self, event: Event, *, request_id: str, policy: str, prompt_sha256: str = "", prompt_text: str | None = None
    ) -> None:
        if event.type == "text":
            return
        data: dict[str, Any] = {"ts": round(time.time(), 3), "request_id": request_id, "policy": policy}
        if prompt_sha256:
            data["prompt_sha256"] = prompt_sha256
        if prompt_text is not None:
            data["prompt_text"] = prompt_text
        data.update(event.to_dict())
        if event.type == "final":
            data.pop("trace", None)  # the trace is already recorded event by event
        line = mask_secrets(json.dumps(data, ensure_ascii=False))
        with self._lock:
            if self._handle is None:
                self._handle = self.path.open("a", encoding="utf-8")
            self._handle.write(line + "\n")
            self._handle.flush()

    def close(self) -> None:
        with self._lock:
            if self._handle is not None:
                self._handle.close()
                self._handle = None
