"""Generates the policy-format reference of docs/policies.md from the schema, so the two cannot drift.

``python -m guardrail.policy.docs docs/policies.md`` rewrites the generated section in place;
``--check`` exits 1 when the file is out of date (a test runs it).
"""

from __future__ import annotations

import sys
import typing
from pathlib import Path

from pydantic import BaseModel
from pydantic.fields import FieldInfo
from pydantic_core import PydanticUndefined

from guardrail.policy.schema import (
    AuditSettings,
    Examples,
    FlagAction,
    JudgeSettings,
    NamedJudge,
    Policy,
    RainSettings,
    RaiseAction,
    RedactAction,
    RefuseAction,
    RewindAction,
    RewindSettings,
    Rule,
)
from guardrail.taxonomy import CATEGORIES, EVALUATION_ONLY

__all__ = ["BEGIN", "END", "render_reference", "update_file"]

BEGIN = "<!-- BEGIN GENERATED REFERENCE (python -m guardrail.policy.docs docs/policies.md) -->"
END = "<!-- END GENERATED REFERENCE -->"

_SECTIONS: list[tuple[str, type[BaseModel]]] = [
    ("Policy (top level)", Policy),
    ("rules[]", Rule),
    ("rules[].examples", Examples),
    ("actions[] / rules[].actions[]: rewind", RewindAction),
    ("actions[]: refuse", RefuseAction),
    ("actions[]: redact", RedactAction),
    ("actions[]: flag", FlagAction),
    ("actions[]: raise", RaiseAction),
    ("rewind", RewindSettings),
    ("rewind.rain", RainSettings),
    ("judge", JudgeSettings),
    ("judges.<name>", NamedJudge),
    ("audit", AuditSettings),
]


def _type_name(annotation: object) -> str:
    text = str(annotation).replace("typing.", "").replace("guardrail.policy.schema.", "")
    text = text.replace("<class '", "").replace("'>", "")
    if "RewindAction" in text:
        return "list of actions"
    origin = typing.get_origin(annotation)
    if origin is typing.Literal:
        return " \\| ".join(repr(arg) for arg in typing.get_args(annotation))
    return text.replace("|", "\\|")


def _default(info: FieldInfo) -> str:
    if info.is_required():
        return "**required**"
    if info.default_factory is not None:
        value = info.default_factory()  # type: ignore[call-arg]
        if isinstance(value, BaseModel):
            return "(see below)"
        if isinstance(value, list) and value and isinstance(value[0], BaseModel):
            return "; ".join(str(item.model_dump()) for item in value)
        return f"`{value!r}`"
    if info.default is PydanticUndefined:
        return ""
    return f"`{info.default!r}`"


def render_reference() -> str:
    """The generated Markdown: one table per schema section, then the taxonomy."""
    out: list[str] = [BEGIN, ""]
    for title, model in _SECTIONS:
        out += [f"### {title}", "", (model.__doc__ or "").strip().splitlines()[0], ""]
        out += ["| key | type | default | meaning |", "|---|---|---|---|"]
        for name, info in model.model_fields.items():
            out.append(
                f"| `{name}` | {_type_name(info.annotation)} | {_default(info)} | {(info.description or '').strip()} |"
            )
        out.append("")
    out += ["### Categories (TrustLLM taxonomy)", ""]
    for category, subs in CATEGORIES.items():
        items = ", ".join(
            f"`{category}.{sub}`" + (" (evaluation-only)" if f"{category}.{sub}" in EVALUATION_ONLY else "")
            for sub in subs
        )
        out.append(f"- `{category}`: {items}")
    out += ["", END]
    return "\n".join(out)


def update_file(path: Path, *, check: bool = False) -> bool:
    """Rewrite the generated section of ``path``; with ``check``, only report whether it is current."""
    text = path.read_text(encoding="utf-8")
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{path}: markers {BEGIN!r} and {END!r} not found")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    new = head + render_reference() + tail
    if check:
        return new == text
    path.write_text(new, encoding="utf-8")
    return True


if __name__ == "__main__":
    args = sys.argv[1:]
    check = "--check" in args
    target = Path(next((arg for arg in args if not arg.startswith("--")), "docs/policies.md"))
    current = update_file(target, check=check)
    if check and not current:
        print(f"{target} is out of date: run python -m guardrail.policy.docs {target}", file=sys.stderr)
        sys.exit(1)
