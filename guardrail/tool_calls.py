"""Tool calls: streamed pieces merged into whole calls, and their arguments judged before they go out.

A model streams a tool call in pieces (OpenAI deltas, LangChain ``tool_call_chunks``): the first piece of a call
carries its index, id and name, the next ones fragments of the JSON arguments. ``merge_tool_calls`` joins the
pieces by index, as LangChain's chunk addition does, except that a name or id a server repeats in every piece
(llama.cpp does) is kept once instead of being repeated.

``ToolArgumentCheck`` judges the arguments against the policy's rules with scope ``tool_arguments`` (narrowed
to tools and arguments by ``rules[].tools``): every string in a checked argument is judged as a response to
the conversation; arguments that are not a JSON object are judged whole, by every rule of the tool. The
violations come back in order, for the rewind strategy to act on with the policy's ladder (rewind the answer,
redact the span inside the argument, flag, refuse or raise). No tool call reaches the caller before this.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from guardrail.actions import redact
from guardrail.judges.base import Judge, Prompt, combine
from guardrail.judges.verdict import Verdict
from guardrail.policy import Policy, Rule

__all__ = ["ArgumentVerdict", "ToolArgumentCheck", "ToolCall", "merge_tool_calls", "redact_argument"]


@dataclass(frozen=True)
class ToolCall:
    """One whole tool call: ``arguments`` is the JSON text the model wrote (after any redaction)."""

    name: str
    arguments: str
    id: str | None = None
    index: int = 0

    def args(self) -> dict[str, Any] | None:
        """The arguments as a dict, or None when they are not a JSON object (e.g. cut off by ``max_tokens``)."""
        try:
            value = json.loads(self.arguments) if self.arguments.strip() else {}
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    def to_openai(self) -> dict[str, Any]:
        """The call in OpenAI's chat-completions shape."""
        return {"id": self.id, "type": "function", "function": {"name": self.name, "arguments": self.arguments}}

    def describe(self) -> str:
        """``name(arguments)``: how the call appears where a text is needed (rewind records, critiques)."""
        return f"{self.name}({self.arguments})"


def _piece(piece: Mapping[str, Any]) -> tuple[int | None, str | None, str, str]:
    """(index, id, name, arguments) of one piece in any of the shapes we meet."""
    function = piece.get("function")
    if isinstance(function, Mapping):  # OpenAI delta
        name, arguments = function.get("name"), function.get("arguments")
    else:  # LangChain tool_call_chunk (args: str) or whole tool call (args: dict)
        name, arguments = piece.get("name"), piece.get("args", piece.get("arguments"))
    if isinstance(arguments, Mapping):
        arguments = json.dumps(arguments, ensure_ascii=False)
    index = piece.get("index")
    return (
        index if isinstance(index, int) else None,
        str(piece["id"]) if piece.get("id") else None,
        str(name or ""),
        str(arguments or ""),
    )


def merge_tool_calls(pieces: Iterable[Mapping[str, Any]]) -> list[ToolCall]:
    """Whole calls from streamed pieces, in order of first appearance; pieces with one index form one call.

    A piece without an index starts a call of its own (LangChain's rule). A name or id equal to what the call
    already has is not appended again (servers that repeat them in every piece); other name fragments are.
    """
    calls: dict[int, dict[str, Any]] = {}
    for piece in pieces:
        index, call_id, name, arguments = _piece(piece)
        if index is None:
            index = max(calls, default=-1) + 1
        call = calls.setdefault(index, {"id": None, "name": "", "arguments": ""})
        if call_id and not call["id"]:
            call["id"] = call_id
        if name and name != call["name"]:
            call["name"] += name
        call["arguments"] += arguments
    return [ToolCall(c["name"], c["arguments"], c["id"], index) for index, c in calls.items()]


@dataclass(frozen=True)
class ArgumentVerdict:
    """The verdict on one string inside a call's arguments; ``path`` locates it in the arguments (``()``: the
    unparsed arguments as a whole)."""

    call: int
    path: tuple[str | int, ...]
    verdict: Verdict


def _strings(value: Any, path: tuple[str | int, ...]) -> Iterator[tuple[tuple[str | int, ...], str]]:
    if isinstance(value, str):
        yield path, value
    elif isinstance(value, Mapping):
        for key, item in value.items():
            yield from _strings(item, (*path, str(key)))
    elif isinstance(value, list):
        for position, item in enumerate(value):
            yield from _strings(item, (*path, position))


def _only(verdict: Verdict, rules: Sequence[Rule]) -> Verdict:
    """``verdict`` restricted to ``rules`` (a judge of every tool rule read a value only some of them check)."""
    ids = {rule.id for rule in rules}
    fired = tuple(rule for rule in verdict.rules if rule in ids)
    scores = {rule: score for rule, score in verdict.scores.items() if rule in ids}
    score = max(scores.values(), default=verdict.score if fired else 0.0)
    spans = tuple(span for span in verdict.spans if span[2] in ids)
    return replace(verdict, rules=fired, scores=scores, score=score, violated=bool(fired), spans=spans)


class ToolArgumentCheck:
    """Judges tool-call arguments with the policy's ``tool_arguments`` rules (see the module docstring)."""

    def __init__(self, policy: Policy, judge: Judge) -> None:
        self.policy = policy
        self.judge = judge
        self.rules = policy.checked_rules("tool_arguments")

    def _targets(self, call: ToolCall, every_argument: bool) -> Iterator[tuple[tuple[str | int, ...], str, list[Rule]]]:
        args = call.args()
        if args is None:  # not a JSON object: judged whole, by every rule of this tool
            rules = [rule for rule in self.rules if rule.checks_tool_argument(call.name, None)]
            if (rules or every_argument) and call.arguments.strip():
                yield (), call.arguments, rules
            return
        for key, value in args.items():
            rules = [rule for rule in self.rules if rule.checks_tool_argument(call.name, key)]
            if rules or every_argument:
                for path, text in _strings(value, (key,)):
                    if text.strip():
                        yield path, text, rules

    async def ajudge(
        self, prompt: Prompt, calls: Sequence[ToolCall], *, output_judge: Judge | None = None
    ) -> list[ArgumentVerdict]:
        """A verdict on every checked string, call by call, argument by argument. With ``output_judge`` (the
        calls are the answer itself: structured output), every string is also judged by the output rules."""
        found: list[ArgumentVerdict] = []
        for position, call in enumerate(calls):
            for path, text, rules in self._targets(call, every_argument=output_judge is not None):
                verdicts = []
                if rules:
                    verdicts.append(_only(await self.judge.ajudge(prompt, text, partial=False, explain=True), rules))
                if output_judge is not None:
                    verdicts.append(await output_judge.ajudge(prompt, text, partial=False, explain=True))
                found.append(ArgumentVerdict(position, path, combine(verdicts, "+".join(v.judge for v in verdicts))))
        return found


def redact_argument(call: ToolCall, violation: ArgumentVerdict, replacement: str) -> ToolCall:
    """``call`` with the violating spans of one argument string replaced (the whole string when the judge gave
    no spans); the arguments are written back as JSON."""
    if not violation.path:
        return replace(call, arguments=redact(call.arguments, violation.verdict, replacement))
    args = call.args()
    assert args is not None  # a path exists only into parsed arguments
    container: Any = args
    for step in violation.path[:-1]:
        container = container[step]
    last = violation.path[-1]
    container[last] = redact(str(container[last]), violation.verdict, replacement)
    return replace(call, arguments=json.dumps(args, ensure_ascii=False))
