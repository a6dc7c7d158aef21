"""Remote and text-only self-evaluation scorers: an API's logprobs, or a chat model's parsed answer."""

from __future__ import annotations

import asyncio
import math
import re
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

from guardrail.judges.question import LABELS, Question
from guardrail.judges.self_eval import OptionProbs
from guardrail.judges.verdict import Cost
from guardrail.openai_client import OpenAIClient

__all__ = ["JUDGE_MAX_PIECES", "LogprobScorer", "TextScorer", "afirst_pieces", "first_pieces", "parse_option"]

_ASK = "\nReply with the letter of your answer only."
_PUNCTUATION = " \t\n()[].:*\"'`"
_ANSWER_RES = [
    re.compile(r"answer\s+is\s*:?\s*\(?\s*([AB])\b", re.IGNORECASE),
    re.compile(r"^\W*\(?\s*([AB])\s*(?:\)|\.|:|$|\s)"),
    re.compile(r"\(\s*([AB])\s*\)"),
]


def _messages(conversation: list[dict[str, str]], question: Question) -> list[dict[str, str]]:
    return [*conversation, {"role": "user", "content": question.text + _ASK}]


def parse_option(text: str) -> str | None:
    """The option letter a text answer chose, or None when it chose neither (or both)."""
    text = text.strip()
    stated = {m.group(1) for m in _ANSWER_RES[0].finditer(text)}
    if len(stated) == 1:
        return stated.pop()
    bracketed = {m.group(1) for m in _ANSWER_RES[2].finditer(text)}
    if len(stated) > 1 or len(bracketed) > 1:
        return None
    leading = _ANSWER_RES[1].match(text)
    if leading:
        return leading.group(1)
    return bracketed.pop() if bracketed else None


def _option_of(token: str) -> str | None:
    stripped = token.strip(_PUNCTUATION)
    return stripped if stripped in LABELS else None


class LogprobScorer:
    """Option probabilities from an OpenAI-compatible endpoint's logprobs (" A", "A", "(A" merged).

    The first generated token that is an option letter (after any "(" or spaces) is located, and the
    probabilities of both letters are read from that position's ``top_logprobs``.
    """

    name = "logprobs"

    def __init__(self, client: OpenAIClient, *, top_logprobs: int = 20, max_tokens: int = 6) -> None:
        self.client = client
        self.params: dict[str, Any] = {
            "max_tokens": max_tokens,
            "temperature": 0.0,
            "logprobs": True,
            "top_logprobs": top_logprobs,
        }

    def _read(self, reply: dict[str, Any]) -> OptionProbs:
        usage = reply.get("usage") or {}
        cost = Cost(
            api_calls=1,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
        )
        choice = reply["choices"][0]
        content = str((choice.get("message") or {}).get("content") or "")
        positions = (choice.get("logprobs") or {}).get("content") or []
        chosen = next(
            (p for p in positions if _option_of(str(p.get("token", "")))), positions[0] if positions else None
        )
        if chosen is None:
            return OptionProbs(None, 0.0, cost, raw=content[:80])
        probs = dict.fromkeys(LABELS, 0.0)
        for candidate in chosen.get("top_logprobs") or [chosen]:
            label = _option_of(str(candidate.get("token", "")))
            if label is not None:
                probs[label] += math.exp(float(candidate.get("logprob", -math.inf)))
        mass = sum(probs.values())
        return OptionProbs(probs if mass > 0 else None, mass, cost, raw=content[:80])

    def score(self, conversation: list[dict[str, str]], questions: Sequence[Question]) -> list[OptionProbs]:
        return [self._read(self.client.chat(_messages(conversation, q), **self.params)) for q in questions]

    async def ascore(self, conversation: list[dict[str, str]], questions: Sequence[Question]) -> list[OptionProbs]:
        replies = await asyncio.gather(
            *(self.client.achat(_messages(conversation, q), **self.params) for q in questions)
        )
        return [self._read(reply) for reply in replies]


#: streamed pieces a text-only judge answer is read to: the option letter comes first, and a model that
#: rambles (or an upstream that ignores max_tokens) cannot make one judge call long
JUDGE_MAX_PIECES = 16


def first_pieces(pieces: Iterable[str], limit: int = JUDGE_MAX_PIECES) -> str:
    """The text of a streamed answer's first ``limit`` pieces; the stream is closed there (generation stops)."""
    iterator = iter(pieces)
    taken: list[str] = []
    try:
        for piece in iterator:
            taken.append(piece)
            if len(taken) >= limit:
                break
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()
    return "".join(taken)


async def afirst_pieces(pieces: AsyncIterator[str], limit: int = JUDGE_MAX_PIECES) -> str:
    """``first_pieces`` for an async stream."""
    taken: list[str] = []
    try:
        async for piece in pieces:
            taken.append(piece)
            if len(taken) >= limit:
                break
    finally:
        close = getattr(pieces, "aclose", None)
        if close is not None:
            await close()
    return "".join(taken)


class TextScorer:
    """Option choice parsed from a text-only chat model's answer (any LangChain or LlamaIndex model).

    ``generate`` takes chat messages and returns the model's reply text (at temperature 0, a few tokens).
    An answer that is neither option is 'undecided', which the policy's ``judge.on_undecided`` handles.
    """

    name = "text"

    def __init__(
        self,
        generate: Callable[[list[dict[str, str]]], str],
        agenerate: Callable[[list[dict[str, str]]], Awaitable[str]] | None = None,
    ) -> None:
        self.generate = generate
        self.agenerate = agenerate

    @staticmethod
    def _read(text: str) -> OptionProbs:
        label = parse_option(text)
        probs = None if label is None else {option: float(option == label) for option in LABELS}
        return OptionProbs(probs, 1.0 if probs else 0.0, Cost(api_calls=1), raw=text[:80])

    def score(self, conversation: list[dict[str, str]], questions: Sequence[Question]) -> list[OptionProbs]:
        return [self._read(self.generate(_messages(conversation, q))) for q in questions]

    async def ascore(self, conversation: list[dict[str, str]], questions: Sequence[Question]) -> list[OptionProbs]:
        if self.agenerate is None:
            return await asyncio.to_thread(self.score, conversation, questions)
        agenerate = self.agenerate
        texts = await asyncio.gather(*(agenerate(_messages(conversation, q)) for q in questions))
        return [self._read(text) for text in texts]
