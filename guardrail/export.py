"""``guardrail export``: alignment data from guarded runs.

- **Preference pairs** (DPO) from audit records: at each rewind, the rejected draft (the accepted text it
  followed, plus the rejected part) against the answer the guard finally gave, for the same prompt:
  ``{"prompt", "chosen", "rejected", "rule"}`` JSON lines, the format TRL's DPO trainer reads. Audit records
  carry texts only when the policy sets ``audit.include_rejected_text`` (``guardrail eval`` does).
- **SFT records** from an evaluation's results, as "Trustworthy LLMs" does: every judged answer with its
  prompt, ``label`` positive (judged safe) or negative.

Both are deduplicated.
"""

from __future__ import annotations

import hashlib
import json
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from guardrail.errors import GuardrailError
from guardrail.evaluation import load_results

__all__ = ["dpo_pairs", "sft_records", "write_jsonl"]


def _key(*parts: str) -> str:
    return hashlib.sha256("\x00".join(parts).encode("utf-8")).hexdigest()


def _read_audit(path: Path) -> list[dict[str, Any]]:
    records = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if line.strip():
            try:
                records.append(json.loads(line))
            except ValueError:
                raise GuardrailError(f"{path}:{number}: not a JSON line; is this an audit file?") from None
    return records


def dpo_pairs(audit: str | Path) -> tuple[list[dict[str, Any]], dict[str, int]]:
    """Preference pairs from an audit file, and counts (requests, rewinds, pairs, hash-only rewinds skipped)."""
    by_request: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for record in _read_audit(Path(audit)):
        by_request[str(record.get("request_id", ""))].append(record)
    pairs: list[dict[str, Any]] = []
    seen: set[str] = set()
    stats = {"requests": len(by_request), "rewinds": 0, "pairs": 0, "hash_only": 0}
    for request_id, records in by_request.items():
        final = next((r for r in records if r.get("type") == "final"), None)
        if final is None or final.get("fallback") == "raise":
            continue
        chosen = str(final.get("text") or "")
        for record in records:
            if record.get("type") != "rewind" or record.get("reason") != "violation":
                continue
            stats["rewinds"] += 1
            if "rejected_text" not in record or "prompt_text" not in record:
                stats["hash_only"] += 1
                continue
            rejected = str(record.get("prefix_text") or "") + str(record["rejected_text"])
            prompt = str(record["prompt_text"])
            if not chosen.strip() or not rejected.strip() or chosen.strip() == rejected.strip():
                continue
            key = _key(prompt, chosen, rejected)
            if key in seen:
                continue
            seen.add(key)
            pairs.append(
                {
                    "prompt": prompt,
                    "chosen": chosen,
                    "rejected": rejected,
                    "rule": ",".join(record.get("rules", [])),
                    "score": record.get("score"),
                    "request_id": request_id,
                }
            )
    stats["pairs"] = len(pairs)
    if stats["rewinds"] and stats["hash_only"] == stats["rewinds"]:
        raise GuardrailError(
            f"{audit}: the audit holds only hashes of rejected text, so no pairs can be built; run with a policy "
            "that sets `audit: {include_rejected_text: true}` (guardrail eval does this for its runs)"
        )
    return pairs, stats


def sft_records(run_dir: str | Path) -> list[dict[str, Any]]:
    """Positive / negative examples from an evaluation's judged answers (deduplicated)."""
    seen: set[str] = set()
    out = []
    for row in load_results(Path(run_dir)):
        key = _key(row["prompt"], row["text"])
        if key in seen or not row["text"].strip():
            continue
        seen.add(key)
        out.append(
            {
                "prompt": row["prompt"],
                "response": row["text"],
                "label": "positive" if row["safe"] else "negative",
                "mode": row["mode"],
                "category": row["category"],
                "rules": row.get("rules", []),
            }
        )
    return out


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> int:
    """Write rows as JSON lines; returns how many."""
    count = 0
    with Path(path).open("w", encoding="utf-8") as out:
        for row in rows:
            out.write(json.dumps(row, ensure_ascii=False) + "\n")
            count += 1
    return count
