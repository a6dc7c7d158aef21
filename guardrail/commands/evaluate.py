"""``guardrail eval`` and ``guardrail export``: evaluate a model per TrustLLM category, unguarded and guarded,
and turn the runs into alignment data. See ``guardrail.evaluation``, ``guardrail.report``, ``guardrail.export``."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from guardrail.commands.chat import add_model_arguments, build_guard
from guardrail.errors import BackendError, GuardrailError, JudgeError, PolicyError
from guardrail.judges.factory import JUDGE_KINDS
from guardrail.presets import AUTO

__all__ = ["add_parsers"]


def _prompts(args: argparse.Namespace, guard: Any) -> list[Any]:
    from guardrail import testset
    from guardrail.evaluation import plain_answer

    prompts: list[Any] = []
    if args.prompts:
        prompts += testset.load_prompts(args.prompts)
    if args.generate:
        if args.generator:
            from guardrail.backends.remote import OpenAIBackend

            generator: Any = OpenAIBackend(args.generator, model=args.generator_name)
        else:
            generator = guard.backend  # the evaluated model writes its own test questions
        # the paper generated at temperature 1.1 with a lightly aligned model
        prompts += testset.generate(lambda text: plain_answer(generator, text, max_tokens=64, temperature=1.1))
    if args.misuse:
        prompts += testset.misuse_prompts()
    prompts = testset.dedupe(prompts)
    if args.limit:
        prompts = prompts[: args.limit]
    if args.benign:
        prompts += [p.__class__(p.prompt, "benign", p.source) for p in testset.load_prompts(args.benign)]
    if args.typos:
        prompts += testset.with_typos([p for p in prompts if p.category != "benign"])
    if not prompts:
        raise GuardrailError("no prompts: give --prompts FILE, --generate or --misuse")
    return prompts


def _shared_judges(grader: Any, guard_judge: Any) -> set[str]:
    """Judge kinds that both grade the answers and guarded them (``embedding``, ``self``, ...)."""

    def kinds(judge: Any) -> set[str]:
        return {part.name for part in getattr(judge, "parts", [judge])}

    return kinds(grader) & kinds(guard_judge)


def _graders(args: argparse.Namespace, guard: Any) -> tuple[Any, Any]:
    """The judge that grades every answer, and the policy it grades against."""
    from guardrail.judges import build_judge, needs_scorer
    from guardrail.policy import load_policy

    judge_policy = load_policy(args.judge_policy)
    scorer = guard.backend.self_scorer() if needs_scorer(judge_policy, args.judge) else None
    return build_judge(judge_policy, scorer=scorer, override=args.judge), judge_policy


def _worker_evaluation(args: argparse.Namespace, audit: Path, key: bytes | None) -> Any:
    """A Ray actor's Evaluation: the same guard and grader as the driver's, auditing to the actor's own file."""
    import copy

    from guardrail.audit import AuditSink
    from guardrail.evaluation import Evaluation

    own = copy.copy(args)
    own.audit = AuditSink(audit, key=key)
    guard = build_guard(own, judge_kind=args.guard_judge, audit_texts=True)
    judge, _ = _graders(args, guard)
    # the actor's Evaluation only answers (the driver writes the run): its folder is the audit file's
    return Evaluation(guard, judge, audit.parent, max_tokens=args.max_tokens, seed=args.seed)


def _engine(args: argparse.Namespace, guard: Any) -> Any:
    if args.engine == "local":
        return None
    import functools

    from guardrail.ray_engine import RayEngine

    key = guard.audit.key if guard.audit is not None else None
    return RayEngine(functools.partial(_worker_evaluation, args), workers=args.workers, address=args.ray_address,
                     key=key)  # fmt: skip


def run_eval(args: argparse.Namespace) -> int:
    from guardrail.report import compare, write_report

    if args.compare:
        print(compare(args.compare))
        return 0
    try:
        from guardrail.evaluation import Evaluation

        args.audit = str(Path(args.out) / "audit.jsonl")
        Path(args.out).mkdir(parents=True, exist_ok=True)
        guard = build_guard(args, judge_kind=args.guard_judge, audit_texts=True)  # texts kept for `export`
        judge, judge_policy = _graders(args, guard)
        prompts = _prompts(args, guard)
        engine = _engine(args, guard)
    except (PolicyError, JudgeError, BackendError, GuardrailError, ValueError, OSError) as err:
        print(f"guardrail eval: {err}", file=sys.stderr)
        return 1
    shared = _shared_judges(judge, guard.judge)
    meta = {
        "model": args.model or "default (SmolLM2-135M-Instruct)",
        "judge": f"{args.judge} ({judge_policy.name})",
        "guard": f"{guard.strategy.name}-level, judge {guard.judge.name}",
        "prompts": len(prompts),
        "independent_grade": not shared,
    }
    if shared:
        print(
            f"[eval] note: the answers are graded by the {', '.join(sorted(shared))} judge, which also guarded them: "
            "the guarded safe rate is then not an independent measure (a guard passes what its own judge passes). "
            "Grade with another judge (--judge) or guard with another (--guard-judge) for an honest number.",
            file=sys.stderr,
        )
    try:
        evaluation = Evaluation(guard, judge, args.out, max_tokens=args.max_tokens, seed=args.seed, meta=meta)
        evaluation.run(prompts, engine=engine)
    except KeyboardInterrupt:
        print(f"\n[eval] interrupted; run the same command again to resume from {args.out}", file=sys.stderr)
        raise  # the CLI leaves at once (exit 130)
    except (BackendError, GuardrailError) as err:
        print(f"\nguardrail eval: {err}", file=sys.stderr)
        return 1
    report = write_report(args.out)
    print(f"[eval] report: {report}", file=sys.stderr)
    print(report.read_text(encoding="utf-8"))
    return 0


def run_export(args: argparse.Namespace) -> int:
    from guardrail.export import dpo_pairs, sft_records, write_jsonl

    run = Path(args.run_dir)
    audit = Path(args.audit) if args.audit else run / "audit.jsonl"
    try:
        pairs, stats = dpo_pairs(audit)
    except (GuardrailError, OSError) as err:
        print(f"guardrail export: {err}", file=sys.stderr)
        return 1
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = write_jsonl(out / "dpo.jsonl", pairs)
    print(
        f"[export] {written} preference pairs from {stats['rewinds']} rewinds in {stats['requests']} requests "
        f"-> {out / 'dpo.jsonl'}",
        file=sys.stderr,
    )
    if (run / "results.jsonl").exists():
        count = write_jsonl(out / "sft.jsonl", sft_records(run))
        print(f"[export] {count} SFT records (positive / negative) -> {out / 'sft.jsonl'}", file=sys.stderr)
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    ev = sub.add_parser("eval", help="evaluate a model per category, unguarded vs guarded, with a report")
    add_model_arguments(ev)
    ev.set_defaults(judge="grader")
    for action in ev._actions:
        if action.dest == "judge":
            action.help = (
                "the judge that grades every answer (default: grader, the independent grader: another encoder, "
                "trained on questions the embedding judge never saw; should differ from the guard's)"
            )
    ev.add_argument(
        "--guard-judge",
        default=AUTO,
        choices=[AUTO, *JUDGE_KINDS],
        help="the guard's own judge (default: auto, as in guardrail chat)",
    )
    ev.add_argument("--judge-policy", default="harmless", help="the policy the answers are judged against")
    ev.add_argument(
        "--prompts",
        help="JSON lines or CSV with a prompt column (e.g. ../shared/data/advbench.jsonl), or .txt, one prompt a line",
    )
    ev.add_argument("--generate", action="store_true", help="generate test questions per category (paper's template)")
    ev.add_argument("--generator", help="OpenAI-compatible base URL of the generator model (default: the model)")
    ev.add_argument("--generator-name", help="model name at --generator")
    ev.add_argument("--misuse", action="store_true", help="add the misuse study's templates")
    ev.add_argument("--typos", action="store_true", help="add typo variants (consistency study)")
    ev.add_argument("--benign", help="benign prompts (JSON lines, CSV or .txt) for the over-refusal rate")
    ev.add_argument("--limit", type=int, help="first N prompts")
    ev.add_argument("--seed", type=int, default=0)
    ev.add_argument("--out", default="eval-run", help="run folder (reuse it to resume; default: eval-run)")
    ev.add_argument(
        "--engine",
        choices=["local", "ray"],
        default="local",
        help="local: answer here, one by one (default); ray: on Ray Data actors (pip install 'guardrail-rewind[ray]')",
    )
    ev.add_argument("--workers", type=int, default=2, help="--engine ray: actors, each with its own guard")
    ev.add_argument("--ray-address", help="--engine ray: an existing cluster (e.g. ray://head:10001); default local")
    ev.add_argument("--compare", nargs="+", metavar="RUN", help="put finished runs side by side and exit")
    ev.set_defaults(run=run_eval, max_tokens=96)

    ex = sub.add_parser("export", help="alignment data (DPO pairs, SFT records) from a guarded run")
    ex.add_argument("--run", dest="run_dir", default="eval-run", help="a `guardrail eval` run folder")
    ex.add_argument("--audit", help="an audit file (default: RUN/audit.jsonl)")
    ex.add_argument("--out", default="alignment-data", help="output folder (dpo.jsonl, sft.jsonl)")
    ex.set_defaults(run=run_export)
