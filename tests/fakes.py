"""Small fakes for fast unit tests (the real model and server tests sit beside them)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from guardrail.judges.question import Question
from guardrail.judges.self_eval import OptionProbs


@dataclass
class FixedScorer:
    """Answers P(violates) = ``p`` in every order, recording what it was asked."""

    p: float = 0.9
    name: str = "fixed"
    by_rule: dict[str, float] = field(default_factory=dict)
    asked: list[tuple[list[dict[str, str]], Question]] = field(default_factory=list)
    undecided: bool = False

    def score(self, conversation: list[dict[str, str]], questions: Sequence[Question]) -> list[OptionProbs]:
        out = []
        for question in questions:
            self.asked.append((conversation, question))
            if self.undecided:
                out.append(OptionProbs(None, 0.0, raw="maybe"))
                continue
            p = self.p
            for rule_id, value in self.by_rule.items():
                if f"{rule_id}-marker" in question.text:
                    p = value
            out.append(OptionProbs({question.violate_label: p, question.comply_label: 1 - p}))
        return out


@dataclass
class BiasedScorer:
    """A judge with a letter bias: P(label A) = bias regardless of meaning (what both orders cancel)."""

    bias: float = 0.8
    name: str = "biased"

    def score(self, conversation: list[dict[str, str]], questions: Sequence[Question]) -> list[OptionProbs]:
        return [OptionProbs({"A": self.bias, "B": 1 - self.bias}) for _ in questions]


@dataclass
class Oracle:
    """Judges right: 'violates' exactly for the harmless policy's violating examples (passes the probe)."""

    name: str = "oracle"
    asked: list[Any] = field(default_factory=list)

    def score(self, conversation: list[dict[str, str]], questions: Sequence[Question]) -> list[OptionProbs]:
        self.asked.append(conversation)
        from guardrail.policy import load_policy

        bad = set(load_policy("harmless").rules[0].examples.violating)
        p = 0.95 if conversation[-1]["content"] in bad else 0.05
        return [OptionProbs({q.violate_label: p, q.comply_label: 1 - p}) for q in questions]


class FakeChatClient:
    """Stands in for OpenAIClient.chat: returns canned replies in order."""

    def __init__(self, replies: list[dict[str, Any]]) -> None:
        self.replies = list(replies)
        self.requests: list[tuple[Any, dict[str, Any]]] = []

    def chat(self, messages: Any, **params: Any) -> dict[str, Any]:
        self.requests.append((messages, params))
        return self.replies.pop(0)

    async def achat(self, messages: Any, **params: Any) -> dict[str, Any]:
        return self.chat(messages, **params)


def logprob_reply(tokens: list[tuple[str, list[tuple[str, float]]]], content: str = "") -> dict[str, Any]:
    """A chat completion whose logprobs hold ``tokens``: (chosen token, [(candidate, logprob), ...])."""
    return {
        "choices": [
            {
                "message": {"content": content or "".join(t for t, _ in tokens)},
                "logprobs": {
                    "content": [
                        {
                            "token": t,
                            "logprob": top[0][1],
                            "top_logprobs": [{"token": c, "logprob": lp} for c, lp in top],
                        }
                        for t, top in tokens
                    ]
                },
            }
        ],
        "usage": {"prompt_tokens": 100, "completion_tokens": len(tokens)},
    }


class ScriptedBackend:
    """A streaming backend that answers call N with ``replies[N]`` (the last one repeats), word by word.

    ``fail_after`` maps a call index to a number of words after which that call raises BackendError.
    """

    name = "scripted"
    supports_prefill = False
    supports_tokens = False

    def __init__(self, replies: list[str], *, fail_after: dict[int, int] | None = None, delay: float = 0.0) -> None:
        self.replies = replies
        self.fail_after = fail_after or {}
        self.delay = delay
        self.calls: list[list[dict[str, Any]]] = []
        self.params: list[Any] = []
        self.closed = 0

    def astream(self, messages: Any, params: Any) -> Any:
        import asyncio
        import re

        from guardrail.backends.base import Chunk
        from guardrail.errors import BackendError

        index = len(self.calls)
        self.calls.append([dict(m) for m in messages])
        self.params.append(params)
        text = self.replies[min(index, len(self.replies) - 1)]

        async def gen() -> Any:
            try:
                for n, piece in enumerate(re.findall(r"\S+\s*|\s+", text)):
                    if index in self.fail_after and n >= self.fail_after[index]:
                        raise BackendError("stream broke off (injected)")
                    if self.delay:
                        await asyncio.sleep(self.delay)
                    yield Chunk(piece)
            finally:
                self.closed += 1

        return gen()

    def self_scorer(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class ToolCallingBackend(ScriptedBackend):
    """Answers call N with ``calls[N]`` (the last repeats): tool calls ``(name, arguments JSON)`` streamed as
    OpenAI deltas, the arguments in pieces of ``piece`` characters; ``repeat`` sends the id and name in every
    piece, as llama.cpp does. ``endless`` streams argument pieces forever (a model that never stops)."""

    def __init__(
        self, calls: list[list[tuple[str, str]]], *, piece: int = 4, repeat: bool = False, endless: bool = False
    ) -> None:
        super().__init__([""])
        self.tool_calls = calls
        self.piece = piece
        self.repeat = repeat
        self.endless = endless
        self.sent = 0

    def astream(self, messages: Any, params: Any) -> Any:
        from guardrail.backends.base import Chunk

        index = len(self.calls)
        self.calls.append([dict(m) for m in messages])
        self.params.append(params)
        planned = self.tool_calls[min(index, len(self.tool_calls) - 1)]

        async def gen() -> Any:
            try:
                for position, (name, arguments) in enumerate(planned):
                    call_id = f"call_{index}_{position}"
                    pieces = [arguments[i : i + self.piece] for i in range(0, len(arguments), self.piece)]
                    for n, fragment in enumerate(pieces or [""]):
                        first = n == 0 or self.repeat
                        delta: dict[str, Any] = {"index": position, "function": {"arguments": fragment}}
                        if first:
                            delta.update(id=call_id, type="function")
                            delta["function"]["name"] = name
                        self.sent += 1
                        yield Chunk("", tokens=0, tool_calls=(delta,))
                while self.endless:
                    self.sent += 1
                    yield Chunk("", tokens=0, tool_calls=({"index": 0, "function": {"arguments": "a"}},))
            finally:
                self.closed += 1

        return gen()


#: a policy that redacts e-mail addresses in the `text` argument of a `save_note` tool (tool-call tests)
NOTES_POLICY = """
name: notes
rules:
  - id: no-emails-in-notes
    judge: pattern
    scope: [tool_arguments]
    tools: {save_note: [text]}
    criterion: A note contains an e-mail address.
    patterns: ['[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\\.[A-Za-z]{2,}']
    actions: [{action: redact, replacement: "[email removed]"}]
"""
