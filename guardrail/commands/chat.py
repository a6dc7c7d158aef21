"""``guardrail chat``: a guarded chat in the terminal, one-shot or interactive.

Verified text streams to standard output; each verdict, rewind and fallback is shown on standard error (what
was rejected by which rule, how far it went back, what it cost), so you see the guard working. ``--json``
prints one JSON event per line instead (the last one holds the full trace).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from typing import IO, Any

from guardrail.errors import BackendError, GuardrailError, GuardrailViolation, JudgeError, PolicyError
from guardrail.events import (
    Event,
    FallbackEvent,
    FinalEvent,
    RewindEvent,
    TerminatedEvent,
    TextEvent,
    VerdictEvent,
)
from guardrail.judges.factory import JUDGE_KINDS
from guardrail.presets import AUTO

__all__ = ["add_parsers", "build_guard", "describe"]

_DIM, _RED, _YELLOW, _GREEN, _RESET = "\033[2m", "\033[31m", "\033[33m", "\033[32m", "\033[0m"


def build_guard(args: argparse.Namespace, *, judge_kind: str | None = None, audit_texts: bool = False) -> Any:
    """The Guard that ``--policy``, ``--model``, ``--judge`` and ``--rewind`` describe (shared by chat, serve and
    eval; ``judge_kind`` overrides ``--judge``; ``audit_texts`` makes the audit keep texts for export). The
    defaults are the library's (``guardrail.presets``), the same as ``Guard(...)`` in Python."""
    from guardrail.guard import Guard
    from guardrail.policy import load_policy
    from guardrail.presets import make_backend

    policy = load_policy(args.policy)
    if audit_texts:
        policy = policy.model_copy(update={"audit": policy.audit.model_copy(update={"include_rejected_text": True})})
    if getattr(args, "rewind", None):
        update = {"mode": args.rewind} if args.rewind in {"token", "sentence", "off"} else {"strategy": args.rewind}
        if args.rewind in {"verify", "rain"}:
            update["mode"] = "auto"
        policy = policy.model_copy(update={"rewind": policy.rewind.model_copy(update=update)})
    backend = make_backend(args.model, args.model_name)
    judge = judge_kind or args.judge
    return Guard(
        policy, backend, judge=judge, audit=getattr(args, "audit", None), max_tokens=args.max_tokens,
        deadline_s=getattr(args, "deadline", None),
    )  # fmt: skip


def describe(event: Event) -> str | None:
    """One line about a verdict, rewind or fallback (None for text and the final event)."""
    if isinstance(event, VerdictEvent):
        verdict = event.verdict
        outcome = "VIOLATION" if verdict.violated else "pass"
        rules = f" rules={','.join(verdict.rules)}" if verdict.rules else ""
        cost = verdict.cost
        spent = f"{cost.ms:.0f} ms" + (f", {cost.forward_tokens} forward tokens" if cost.forward_tokens else "")
        spent += f", {cost.api_calls} API calls" if cost.api_calls else ""
        where = f"{event.scope} " if event.scope == "input" else ""
        score = f"score={verdict.score:.2f}{rules} by {verdict.judge}"
        return f"[verdict] {where}unit {event.unit}: {outcome} {score} ({spent})"
    if isinstance(event, RewindEvent):
        why = (
            "backend failed"
            if event.reason == "backend_error"
            else f"rule {','.join(event.rules)} score={event.score:.2f}"
        )
        unit = "sentence" if event.strategy == "sentence" else "chunk"
        return (
            f"[rewind] {why}: rejected {event.rejected_tokens} tokens ({event.rejected_chars} chars, sha256 "
            f"{event.rejected_sha256[:12]}), back to after {unit} {event.back_to_unit}, attempt {event.attempt}, "
            f"{event.strategy}"
        )
    if isinstance(event, FallbackEvent):
        return f"[fallback] {event.action} ({event.scope}, rules {','.join(event.rules) or '-'})"
    if isinstance(event, TerminatedEvent):
        return f"[terminated] after {event.released_chars} released chars ({event.reason}): the answer is cut short"
    return None


def _summary(event: FinalEvent) -> str:
    r = event.result
    gen = r.generation_cost
    model = f", {gen.forward_tokens} generation forward tokens" if gen.forward_tokens else ""
    return (
        f"[done] {r.strategy}-level: {len(r.verdicts)} verdicts, {len(r.rewinds)} rewinds, "
        f"{r.extra_tokens} extra tokens, judge {r.judge_cost.ms:.0f} ms{model}, {r.latency_s:.1f} s"
    )


def _color(line: str, stream: IO[str]) -> str:
    if not stream.isatty():
        return line
    color = _RED if "VIOLATION" in line or line.startswith(("[rewind]", "[fallback]", "[terminated]")) else _DIM
    color = _GREEN if line.startswith("[done]") else color
    return f"{color}{line}{_RESET}"


def _same_destination() -> bool:
    """Whether stdout and stderr end up in one place (a terminal, or one file / pipe)."""
    if sys.stdout.isatty() and sys.stderr.isatty():
        return True
    try:
        out, err = os.fstat(sys.stdout.fileno()), os.fstat(sys.stderr.fileno())
    except (OSError, ValueError):
        return False
    return (out.st_dev, out.st_ino) == (err.st_dev, err.st_ino)


def _answer(guard: Any, messages: list[dict[str, str]], args: argparse.Namespace) -> str:
    text = ""
    mid_line = False  # verified text was written since the last event line
    same_screen = _same_destination()  # separately piped output gets no extra newlines
    params = {"max_tokens": args.max_tokens, "temperature": args.temperature, "seed": args.seed}
    for event in guard.stream(messages, **params):
        if args.json:
            print(json.dumps(event.to_dict(), ensure_ascii=False), flush=True)
            text += event.text if isinstance(event, TextEvent) else ""
            continue
        if isinstance(event, TextEvent):
            text += event.text
            sys.stdout.write(event.text)
            sys.stdout.flush()
            mid_line = same_screen and bool(event.text) and not event.text.endswith("\n")
            continue
        line = _summary(event) if isinstance(event, FinalEvent) else None
        if line is None and (args.verbose or not isinstance(event, VerdictEvent) or event.verdict.violated):
            line = describe(event)
        if line:
            if mid_line:
                sys.stdout.write("\n")
                sys.stdout.flush()
                mid_line = False
            print(_color(line, sys.stderr), file=sys.stderr, flush=True)
    if not args.json and (mid_line or (text and not text.endswith("\n"))):
        sys.stdout.write("\n")  # each answer ends its line
    return text


def run_chat(args: argparse.Namespace) -> int:
    try:
        guard = build_guard(args)
    except (PolicyError, JudgeError, BackendError, GuardrailError) as err:
        print(f"guardrail chat: {err}", file=sys.stderr)
        return 1
    if not args.json:
        print(_color(f"[guard] {guard!r}", sys.stderr), file=sys.stderr)
    history: list[dict[str, str]] = []
    questions = [" ".join(args.question)] if args.question else None
    try:
        while True:
            if questions is not None:
                if not questions:
                    return 0
                question = questions.pop(0)
            else:
                try:
                    question = input("you> ").strip()
                except EOFError:
                    return 0
                if question in {"exit", "quit", ":q"}:
                    return 0
                if not question:
                    continue
            history.append({"role": "user", "content": question})
            answer = _answer(guard, history, args)
            history.append({"role": "assistant", "content": answer})
    except GuardrailViolation as err:
        print(f"\n[raise] {err} (rules: {', '.join(err.rules)})", file=sys.stderr)
        return 3
    except BackendError as err:
        print(f"\nguardrail chat: {err}", file=sys.stderr)
        return 1


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """--policy, --model, --model-name, --judge, --rewind, --max-tokens (shared by chat and serve)."""
    parser.add_argument("--policy", default="harmless", help="policy file or built-in name (default: harmless)")
    parser.add_argument(
        "--model",
        help="'default' (the embedded SmolLM2-135M-Instruct, offline), a local model folder or .gguf file, or an "
        "OpenAI-compatible base URL such as http://127.0.0.1:8080/v1 (default: the embedded model)",
    )
    parser.add_argument("--model-name", help="model name to send to an OpenAI-compatible endpoint")
    parser.add_argument(
        "--judge",
        default="auto",
        choices=[AUTO, *JUDGE_KINDS],
        help="auto (default, as in Python): the policy's judges, but the trained embedding judge where it can score "
        "a rule and the model cannot judge itself (the embedded one, local models under 1B parameters)",
    )
    parser.add_argument("--rewind", choices=["token", "sentence", "off", "verify", "rain"], help="override the policy")
    parser.add_argument("--max-tokens", type=int, default=256)
    parser.add_argument(
        "--deadline", type=float, help="seconds one answer may take in all (default: the policy's rewind.deadline_s)"
    )


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    chat = sub.add_parser(
        "chat", help="a guarded chat (one-shot with a question, else interactive)", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )  # fmt: skip
    chat.add_argument("question", nargs="*", help="ask this and exit (no question: interactive)")
    add_model_arguments(chat)
    chat.add_argument("--temperature", type=float, default=0.0)
    chat.add_argument("--seed", type=int, default=0)
    chat.add_argument("--json", action="store_true", help="one JSON event per line (machine-readable trace)")
    chat.add_argument("-v", "--verbose", action="store_true", help="show passing verdicts too")
    chat.add_argument("--audit", help="append audit records (JSON lines) to this file")
    chat.set_defaults(run=run_chat)
