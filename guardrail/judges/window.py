"""Sliding windows over a (question, answer) pair, so a cross-encoder judge sees the whole answer.

A window is ``[CLS] question [SEP] answer[start:end] [SEP]`` with the question kept in every window (cut to
``max_question`` tokens) and the answer split into windows of the remaining length that overlap by half. A
whole answer is judged by the highest score over its windows; a partial answer while streaming by its last
window only (the earlier ones were judged when they were last), so the cost per unit stays flat as the answer
grows. Each window records the characters of the answer it covers, which the verdict reports.

Needs only a Hugging Face tokenizer (fast, with offsets); imports nothing of the package, so the training
script can load it on a machine where the package is not installed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

__all__ = ["MAX_LENGTH", "MAX_QUESTION", "Window", "windows"]

#: Tokens per window (question, answer and three special tokens) and at most this many of the question.
MAX_LENGTH = 256
MAX_QUESTION = 64


@dataclass(frozen=True)
class Window:
    """One encoder input: token ids and segment ids, and the answer's characters ``[start, end)`` it covers."""

    input_ids: list[int]
    token_type_ids: list[int]
    start: int
    end: int
    pair: int  # index of the (question, answer) pair it belongs to


def windows(
    tokenizer: Any,
    pairs: list[tuple[str, str]],
    *,
    max_length: int = MAX_LENGTH,
    max_question: int = MAX_QUESTION,
    last_only: bool = False,
) -> list[Window]:
    """The windows of every pair, in pair order (``last_only``: only the window that ends each answer)."""
    questions = tokenizer([q for q, _ in pairs], add_special_tokens=False)["input_ids"]
    answers = tokenizer([a for _, a in pairs], add_special_tokens=False, return_offsets_mapping=True)
    cls, sep = tokenizer.cls_token_id, tokenizer.sep_token_id
    out: list[Window] = []
    for index, (question, ids, offsets) in enumerate(
        zip(questions, answers["input_ids"], answers["offset_mapping"], strict=True)
    ):
        head = [cls, *question[:max_question], sep]
        width = max(16, max_length - len(head) - 1)
        stride = max(1, width // 2)
        last = max(0, len(ids) - width)  # the window that ends the answer
        starts = [last] if last_only else [*range(0, last, stride), last]
        for start in starts:
            piece = ids[start : start + width]
            chars = offsets[start : start + width]
            out.append(
                Window(
                    input_ids=[*head, *piece, sep],
                    token_type_ids=[0] * len(head) + [1] * (len(piece) + 1),
                    start=chars[0][0] if chars else 0,
                    end=chars[-1][1] if chars else 0,
                    pair=index,
                )
            )
    return out
