"""``guardrail judge``: score JSON lines ``{"prompt": ..., "response": ...}`` against a policy.

One JSON line out per line in: ``score``, ``violated``, ``rules`` (and ``error`` for a line that could not be
read, after which the run goes on). Lines are judged in batches, so the embedding judge runs batched.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterable, Iterator
from typing import IO, Any

from guardrail.errors import BackendError, JudgeError, PolicyError
from guardrail.files import FileRejected, Line, checked, decoded_lines
from guardrail.judges.factory import JUDGE_KINDS
from guardrail.policy import Policy, load_policy
from guardrail.presets import AUTO, make_backend, resolve_judge

__all__ = ["add_parsers", "parse_line"]


def parse_line(line: str) -> tuple[str, str, Any]:
    """(prompt, response, id) from one input line; ``ValueError`` says what is wrong with it."""
    try:
        data = json.loads(line)
    except ValueError as err:
        raise ValueError(f"not JSON: {err}") from None
    if not isinstance(data, dict):
        raise ValueError('expected a JSON object like {"prompt": "...", "response": "..."}')
    prompt = data.get("prompt", data.get("question"))
    response = data.get("response", data.get("answer"))
    if not isinstance(prompt, str) or not isinstance(response, str):
        raise ValueError('needs string fields "prompt" and "response"')
    return prompt, response, data.get("id")


def _chunks(lines: Iterable[Line], size: int) -> Iterator[list[Line]]:
    chunk: list[Line] = []
    for line in lines:
        if line.text is None or line.text.strip():
            chunk.append(line)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def run_judge(args: argparse.Namespace) -> int:
    try:
        policy: Policy = load_policy(args.policy)
        backend = make_backend(args.model, args.model_name) if args.model else None
        judge = resolve_judge(policy, backend, args.judge)  # the library's default, as Guard(...) has it
    except PolicyError as err:
        print(err, file=sys.stderr)
        return 1
    except (JudgeError, BackendError) as err:
        print(f"guardrail judge: {err}", file=sys.stderr)
        return 1
    try:
        source: IO[bytes] = sys.stdin.buffer
        if args.input:
            checked(args.input, "input", pipe=True)
            source = open(args.input, "rb")  # noqa: SIM115 - closed below
    except FileRejected as err:
        print(f"guardrail judge: {err}", file=sys.stderr)
        return 1
    except OSError as err:
        print(f"guardrail judge: cannot read input {args.input!r}: {err.strerror or err}", file=sys.stderr)
        return 1
    judged = errors = 0
    started = time.perf_counter()
    try:
        for chunk in _chunks(decoded_lines(source), args.batch):
            good: list[tuple[int, str, str, Any]] = []
            out: dict[int, dict[str, Any]] = {}
            for line in chunk:
                try:
                    if line.text is None:
                        raise ValueError(line.error)
                    good.append((line.number, *parse_line(line.text)))
                except ValueError as err:
                    out[line.number] = {"line": line.number, "error": str(err)}
                    errors += 1
            try:
                verdicts = judge.judge_many([(p, r) for _, p, r, _ in good], explain=args.explain)
            except (JudgeError, BackendError) as err:
                print(f"guardrail judge: {err}", file=sys.stderr)
                return 1
            for (number, _, _, line_id), verdict in zip(good, verdicts, strict=True):
                record = {"line": number, **({"id": line_id} if line_id is not None else {}), **verdict.to_dict()}
                out[number] = record
                judged += 1
            for number in sorted(out):
                sys.stdout.write(json.dumps(out[number], ensure_ascii=False) + "\n")
            sys.stdout.flush()
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    elapsed = time.perf_counter() - started
    rate = judged / elapsed if elapsed > 0 else 0.0
    print(f"judged {judged} lines ({errors} unreadable) in {elapsed:.1f}s: {rate:.0f} lines/s", file=sys.stderr)
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    judge = sub.add_parser(
        "judge",
        help="score JSON lines {prompt, response} against a policy",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    judge.add_argument("--policy", default="harmless", help="policy file or built-in name (default: harmless)")
    judge.add_argument(
        "--judge",
        default=AUTO,
        choices=[AUTO, *JUDGE_KINDS],
        help="one judge for every rule; auto (default): the policy's judges, the trained embedding judge where the "
        "model (--model, default the embedded one) cannot judge itself, as Guard(...) does",
    )
    judge.add_argument(
        "--model",
        help="for self-evaluation: 'default' (embedded SmolLM2-135M), a local model folder or .gguf, or an "
        "OpenAI-compatible base URL such as http://127.0.0.1:8080/v1 (default: the embedded model)",
    )
    judge.add_argument("--model-name", help="model name to send to an OpenAI-compatible endpoint")
    judge.add_argument("--input", help="JSON-lines file (default: standard input)")
    judge.add_argument("--batch", type=int, default=64, help="lines judged together (default: 64)")
    judge.add_argument(
        "--no-explain", dest="explain", action="store_false", help="skip per-rule attribution of violations"
    )
    judge.set_defaults(run=run_judge)
