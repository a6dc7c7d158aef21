"""``guardrail check`` and ``guardrail policies``: validate policy files, list the built-ins."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path

from guardrail.errors import PolicyError
from guardrail.policy import Policy, builtin_policy_names, load_policy
from guardrail.taxonomy import CATEGORIES, EVALUATION_ONLY

__all__ = ["add_parsers", "policy_summary"]


def _ladder(steps: Sequence[object]) -> str:
    parts = []
    for step in steps:
        name = getattr(step, "action", "?")
        if name == "rewind":
            parts.append(f"rewind x{getattr(step, 'max_attempts', '?')}")
        elif name in {"refuse", "raise"}:
            parts.append(f"{name} {getattr(step, 'message', '')!r}")
        elif name == "redact":
            parts.append(f"redact -> {getattr(step, 'replacement', '')!r}")
        else:
            parts.append(str(name))
    return " -> ".join(parts)


def policy_summary(policy: Policy) -> str:
    """A one-screen summary of a validated policy: rules, actions, judges, rewind settings."""
    lines = [f"{policy.name} v{policy.version}" + (f" (extends {policy.extends})" if policy.extends else "")]
    if policy.description:
        lines.append(f"  {policy.description.strip()[:110]}")
    checked = len(policy.checked_rules("output")) + len(
        [r for r in policy.checked_rules("input") if "output" not in r.scope]
    )
    lines.append(f"  rules: {len(policy.rules)} ({checked} checked per response)")
    width = max((len(rule.id) for rule in policy.rules), default=4)
    for rule in policy.rules:
        tags = [rule.severity, "+".join(rule.scope), f"judge={policy.judge_for(rule)}"]
        tags.append(f"threshold={policy.threshold_for(rule):g}")
        if rule.evaluation_only:
            tags.append("evaluation-only")
        if rule.actions is not None:
            tags.append(f"actions: {_ladder(rule.actions)}")
        lines.append(f"    {rule.id:<{width}}  {rule.category or '-':<40} {' '.join(tags)}")
    lines.append(f"  actions: {_ladder(policy.actions)}")
    rw = policy.rewind
    lines.append(
        f"  rewind: mode={rw.mode} strategy={rw.strategy} regeneration={rw.regeneration} "
        f"max_rewinds={rw.max_rewinds} max_extra_tokens={rw.max_extra_tokens} "
        f"max_added_latency={rw.max_added_latency_s:g}s"
    )
    judges = ", ".join(f"{name} ({spec.kind})" for name, spec in policy.judges.items()) or "none declared"
    lines.append(
        f"  judge: default={policy.judge.default} scoring={policy.judge.scoring} "
        f"on_undecided={policy.judge.on_undecided} encoder={policy.judge.encoder}; named judges: {judges}"
    )
    return "\n".join(lines)


def _expand(paths: Sequence[str]) -> list[str]:
    expanded: list[str] = []
    for spec in paths:
        folder = Path(spec)
        if folder.is_dir():
            found = sorted(str(p) for p in folder.iterdir() if p.suffix in {".yaml", ".yml"})
            expanded.extend(found or [spec])  # an empty folder reports itself as an error
        else:
            expanded.append(spec)
    return expanded


def run_check(args: argparse.Namespace) -> int:
    failed = 0
    specs = _expand(args.policies) if args.policies else builtin_policy_names()
    for spec in specs:
        try:
            policy = load_policy(spec)
        except PolicyError as err:
            failed += 1
            for issue in err.issues:
                print(issue, file=sys.stderr)
            continue
        if args.quiet:
            print(f"{spec}: ok ({policy.name} v{policy.version}, {len(policy.rules)} rules)")
        else:
            print(f"{spec}: ok")
            print(policy_summary(policy))
            print()
    if failed:
        print(f"{failed} of {len(specs)} policies invalid", file=sys.stderr)
    return 1 if failed else 0


def run_policies(args: argparse.Namespace) -> int:
    if args.taxonomy:
        for category, subs in CATEGORIES.items():
            print(category)
            for sub in subs:
                note = "  (evaluation-only)" if f"{category}.{sub}" in EVALUATION_ONLY else ""
                print(f"  {category}.{sub}{note}")
        return 0
    for name in builtin_policy_names():
        policy = load_policy(name)
        print(f"{name:<16} {len(policy.rules):>3} rules  {policy.description.strip()[:90]}")
    return 0


def add_parsers(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    check = sub.add_parser("check", help="validate policy files and print a summary of each")
    check.add_argument(
        "policies", nargs="*", help="policy files, folders of them, or built-in names (default: all built-ins)"
    )
    check.add_argument("-q", "--quiet", action="store_true", help="one line per valid policy")
    check.set_defaults(run=run_check)
    policies = sub.add_parser("policies", help="list the built-in policies")
    policies.add_argument("--taxonomy", action="store_true", help="list the TrustLLM categories instead")
    policies.set_defaults(run=run_policies)
