"""``load_policy``: a built-in name or a YAML file to a validated ``Policy``, with ``extends`` resolved.

Every failure is a ``PolicyError`` whose issues read ``file:line:column: field.path: what was expected``.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from guardrail.errors import PolicyError, PolicyIssue
from guardrail.files import FileRejected, read_bounded
from guardrail.policy.schema import Policy, suggest
from guardrail.policy.source import MAX_POLICY_BYTES, DataPath, YamlDocument, decode_policy_bytes, parse_yaml

__all__ = ["builtin_policy_names", "load_policy", "parse_policy"]

_BUILTIN_PACKAGE = "guardrail.policies"
_SETTINGS_MERGED_DEEP = ("rewind", "judge", "judges", "audit")
_POLICY_KEYS = frozenset(Policy.model_fields)
_KEY_LIST = ", ".join(sorted(_POLICY_KEYS))


def builtin_policy_names() -> list[str]:
    """Names of the policies shipped in the package (``policies/*.yaml``)."""
    folder = resources.files(_BUILTIN_PACKAGE)
    return sorted(entry.name[: -len(".yaml")] for entry in folder.iterdir() if entry.name.endswith(".yaml"))


def load_policy(spec: str | os.PathLike[str] | Policy) -> Policy:
    """Load a policy from a built-in name (``"harmless"``) or a YAML file path.

    Example::

        policy = load_policy("policies/app.yaml")
    """
    if isinstance(spec, Policy):
        return spec
    return _Resolver().load(spec, origin=None)


def parse_policy(text: str, source: str = "<string>", base_dir: str | os.PathLike[str] | None = None) -> Policy:
    """Validate policy YAML given as text; ``extends`` paths resolve against ``base_dir`` (default: cwd)."""
    return _Resolver().from_text(text, source, Path(base_dir or "."), key=f"text:{source}")


class _Resolver:
    """Loads one policy and its ``extends`` chain, detecting cycles."""

    def __init__(self) -> None:
        self.chain: list[str] = []

    def load(self, spec: str | os.PathLike[str], origin: tuple[YamlDocument, Path] | None) -> Policy:
        text, source, base_dir, key = self._read(spec, origin)
        return self.from_text(text, source, base_dir, key, origin)

    def from_text(
        self, text: str, source: str, base_dir: Path, key: str, origin: tuple[YamlDocument, Path] | None = None
    ) -> Policy:
        if key in self.chain:
            cycle = " -> ".join(_display(Path(k)) for k in [*self.chain[self.chain.index(key) :], key])
            raise _at(origin, f"cycle: {cycle}")
        self.chain.append(key)
        try:
            doc = parse_yaml(text, source)
            if not isinstance(doc.data, dict):
                raise PolicyError(
                    doc.issue((), f"a policy must be a mapping with 'name:' and 'rules:', got {_kind(doc.data)}")
                )
            if not set(map(str, doc.data)) & _POLICY_KEYS:
                # say nothing of what the file holds: `extends` may point at any file (/etc/shadow)
                raise PolicyError(doc.issue((), f"not a policy: none of its top-level keys is one of {_KEY_LIST}"))
            return self._validate(doc, base_dir)
        finally:
            self.chain.pop()

    def _read(
        self, spec: str | os.PathLike[str], origin: tuple[YamlDocument, Path] | None
    ) -> tuple[str, str, Path, str]:
        name = os.fspath(spec)
        builtins = builtin_policy_names()
        looks_like_path = isinstance(spec, os.PathLike) or name.endswith((".yaml", ".yml")) or os.sep in name
        path = Path(name) if origin is None or Path(name).is_absolute() else origin[1] / name
        if not looks_like_path and name in builtins and not path.is_file():
            text = resources.files(_BUILTIN_PACKAGE).joinpath(f"{name}.yaml").read_text(encoding="utf-8")
            return text, f"builtin:{name}", Path("."), f"builtin:{name}"
        if path.is_dir():
            raise _at(origin, f"{name!r} is a directory; give a policy file inside it (e.g. {name}/app.yaml)")
        if not path.exists():
            hint = "" if looks_like_path else suggest(name, builtins)
            raise _at(
                origin,
                f"no policy file {name!r} and no built-in policy of that name{hint}; built-ins: {', '.join(builtins)}",
            )
        try:
            raw = read_bounded(path, MAX_POLICY_BYTES, "policy file")
        except FileRejected as err:
            raise _at(origin, str(err)) from None
        shown = name if origin is None else _display(path)  # what the user typed, or the path extends reached
        return decode_policy_bytes(raw, shown), shown, path.resolve().parent, str(path.resolve())

    def _validate(self, doc: YamlDocument, base_dir: Path) -> Policy:
        data: dict[Any, Any] = doc.data
        _check_rule_ids(doc)
        translate: Callable[[DataPath], DataPath] = lambda path: path  # noqa: E731
        parent_spec = data.get("extends")
        if isinstance(parent_spec, str) and parent_spec:
            parent = self.load(parent_spec, origin=(doc, base_dir))
            data, translate = _merge(parent, data)
        try:
            return Policy.model_validate(data)
        except ValidationError as err:
            raise PolicyError([_issue(doc, data, error, translate) for error in err.errors()]) from None


def _display(path: Path) -> str:
    """A path as the user would write it: relative to the working directory when inside it."""
    try:
        return str(path.resolve().relative_to(Path.cwd().resolve())) if path.is_absolute() else str(path)
    except ValueError:
        return str(path)


def _at(origin: tuple[YamlDocument, Path] | None, message: str) -> PolicyError:
    if origin is None:
        return PolicyError(PolicyIssue("<policy>", message))
    return PolicyError(origin[0].issue(("extends",), message))


def _check_rule_ids(doc: YamlDocument) -> None:
    rules = doc.data.get("rules")
    if not isinstance(rules, list):
        return
    seen: dict[str, int] = {}
    for index, rule in enumerate(rules):
        rule_id = rule.get("id") if isinstance(rule, dict) else None
        if isinstance(rule_id, str):
            if rule_id in seen:
                first = doc.locate(("rules", seen[rule_id], "id"))
                line = f" (first on line {first[0]})" if first else ""
                raise PolicyError(doc.issue(("rules", index, "id"), f"duplicate rule id {rule_id!r}{line}"))
            seen[rule_id] = index


def _deep_merge(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _merge(parent: Policy, child: dict[Any, Any]) -> tuple[dict[Any, Any], Callable[[DataPath], DataPath]]:
    """The child's data over the parent's: rules merge by id (child wins), settings merge deep."""
    merged: dict[Any, Any] = parent.model_dump(exclude={"extends"})
    for key, value in child.items():
        if key in _SETTINGS_MERGED_DEEP and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        elif key != "rules":
            merged[key] = value
    child_rules = child.get("rules", [])
    index_map: dict[int, int] = {}
    if isinstance(child_rules, list):
        rules: list[Any] = list(merged["rules"])
        positions = {rule["id"]: index for index, rule in enumerate(rules)}
        for child_index, rule in enumerate(child_rules):
            rule_id = rule.get("id") if isinstance(rule, dict) else None
            if isinstance(rule_id, str) and rule_id in positions:
                rules[positions[rule_id]] = rule
                index_map[positions[rule_id]] = child_index
            else:
                index_map[len(rules)] = child_index
                rules.append(rule)
        merged["rules"] = rules
    else:
        merged["rules"] = child_rules

    def translate(path: DataPath) -> DataPath:
        if len(path) >= 2 and path[0] == "rules" and isinstance(path[1], int):
            return ("rules", index_map.get(path[1], path[1]), *path[2:])
        return path

    return merged, translate


# ----------------------------------------------------------------------------------------------- messages

_YAML_KINDS = {
    dict: "a mapping",
    list: "a list",
    str: "a string",
    bool: "true/false",
    int: "an integer",
    float: "a number",
    type(None): "null",
}


def _kind(value: Any) -> str:
    return _YAML_KINDS.get(type(value), type(value).__name__)


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _data_path(data: Any, loc: tuple[Any, ...]) -> DataPath:
    """The part of a pydantic error location that indexes real data (drops union tags and the like)."""
    path: list[str | int] = []
    node = data
    for position, part in enumerate(loc):
        if (isinstance(node, dict) and part in node) or (
            isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        ):
            node = node[part]
        elif isinstance(node, dict) and position == len(loc) - 1:
            pass  # a missing key: the last element names it
        else:
            continue  # a union tag or validator name, not data
        path.append(part)
    return tuple(path)


def _message(error: Any) -> str:
    kind: str = error["type"]
    ctx: dict[str, Any] = error.get("ctx") or {}
    given = error.get("input")
    if kind == "missing":
        return "required key is missing"
    if kind == "value_error":
        return str(error["msg"]).removeprefix("Value error, ")
    if kind == "literal_error":
        expected = str(ctx.get("expected", ""))
        choices = [part.strip(" '") for part in expected.replace(" or ", ",").split(",") if part.strip()]
        return f"must be {expected}, got {_shown(given)}{suggest(str(given), choices)}"
    if kind == "union_tag_invalid":
        tags = [tag.strip(" '") for tag in str(ctx.get("expected_tags", "")).split(",")]
        return (
            f"unknown action {ctx.get('tag')!r}{suggest(str(ctx.get('tag')), tags)}; expected one of {', '.join(tags)}"
        )
    if kind == "union_tag_not_found":
        return "each action needs an 'action:' key (rewind, refuse, redact, flag or raise)"
    if kind in {"greater_than_equal", "greater_than", "less_than_equal", "less_than"}:
        op = {"greater_than_equal": ">=", "greater_than": ">", "less_than_equal": "<=", "less_than": "<"}[kind]
        bound = next(iter(ctx.values()))
        return f"must be {op} {bound}, got {_shown(given)}"
    if kind == "string_too_short":
        return "must not be empty"
    if kind in {"int_type", "int_parsing", "int_from_float"}:
        return f"expected an integer, got {_kind(given)} {_shown(given)}"
    if kind in {"float_type", "float_parsing"}:
        return f"expected a number, got {_kind(given)} {_shown(given)}"
    if kind in {"string_type"}:
        return f"expected a string, got {_kind(given)} {_shown(given)}"
    if kind in {"bool_type", "bool_parsing"}:
        return f"expected true or false, got {_kind(given)} {_shown(given)}"
    if kind in {"list_type"}:
        return f"expected a list, got {_kind(given)} {_shown(given)}"
    if kind in {"dict_type", "model_type", "model_attributes_type"}:
        return f"expected a mapping, got {_kind(given)} {_shown(given)}"
    return str(error["msg"])


def _issue(doc: YamlDocument, data: Any, error: Any, translate: Callable[[DataPath], DataPath]) -> PolicyIssue:
    """One pydantic error as a located issue; ``data`` is what was validated (merged when ``extends``)."""
    ctx: dict[str, Any] = error.get("ctx") or {}
    path = _data_path(data, tuple(error["loc"]))
    key = False
    message = _message(error)
    if error["type"] == "unknown_key":
        path, key = (*path, ctx["key"]), True
    elif error["type"] == "duplicate_rule":
        path = ("rules", ctx["index"], "id")
    elif error["type"] == "unknown_judge":
        path = ("rules", ctx["index"], "judge") if "index" in ctx else ("judge", "default")
    issue = doc.issue(translate(path), message, key=key)
    return issue
