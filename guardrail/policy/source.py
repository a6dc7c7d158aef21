"""YAML text to plain data, remembering where every key and value came from (line and column).

Safe loading only: no Python tags, no code. Duplicate keys, recursive aliases, alias bombs, binary input and
oversized files are ``PolicyError`` with a location, never a traceback.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import yaml

from guardrail.errors import PolicyError, PolicyIssue

__all__ = ["MAX_POLICY_BYTES", "DataPath", "YamlDocument", "decode_policy_bytes", "format_path", "parse_yaml"]

MAX_POLICY_BYTES = 1 << 20  # 1 MiB: a policy is a few kB; anything near this is a mistake.
_MAX_NODES = 100_000
_MAX_DEPTH = 64

_PLAIN_TAGS = frozenset({"tag:yaml.org,2002:seq", "tag:yaml.org,2002:map"})

DataPath = tuple[str | int, ...]


@dataclass
class YamlDocument:
    """Parsed YAML plus a map from a data path (keys and list indices) to its 1-based (line, column)."""

    data: Any
    source: str
    values: dict[DataPath, tuple[int, int]] = field(default_factory=dict)
    keys: dict[DataPath, tuple[int, int]] = field(default_factory=dict)

    def locate(self, path: DataPath, *, key: bool = False) -> tuple[int, int] | None:
        """Line and column of the value (or key) at ``path``, else of its nearest located ancestor."""
        table = self.keys if key else self.values
        if path in table:
            return table[path]
        for cut in range(len(path) - 1, -1, -1):
            if path[:cut] in self.values:
                return self.values[path[:cut]]
        return None

    def issue(self, path: DataPath, message: str, *, key: bool = False) -> PolicyIssue:
        """A ``PolicyIssue`` at ``path`` in this document."""
        where = self.locate(path, key=key)
        return PolicyIssue(
            source=self.source,
            message=message,
            line=where[0] if where else None,
            column=where[1] if where else None,
            path=format_path(path),
        )


def format_path(path: DataPath) -> str:
    """``('rules', 2, 'threshold')`` as ``rules[2].threshold``."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def decode_policy_bytes(raw: bytes, source: str) -> str:
    """Bytes of a policy file as text, or a ``PolicyError`` for oversized, binary or non-UTF-8 input."""
    if len(raw) > MAX_POLICY_BYTES:
        raise PolicyError(
            PolicyIssue(
                source,
                f"file is {len(raw) / 1e6:.1f} MB; policy files are limited to {MAX_POLICY_BYTES // 1024} KiB "
                f"(is this the right file?)",
            )
        )
    if b"\x00" in raw:
        line = raw[: raw.index(b"\x00")].count(b"\n") + 1
        raise PolicyError(PolicyIssue(source, "binary data (NUL byte); a policy is a UTF-8 YAML text file", line))
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        before = raw[: err.start]
        line = before.count(b"\n") + 1
        column = err.start - (before.rfind(b"\n") + 1) + 1
        raise PolicyError(
            PolicyIssue(source, f"not UTF-8 text (byte 0x{raw[err.start]:02x}); save the file as UTF-8", line, column)
        ) from None


def _mark(node: yaml.Node) -> tuple[int, int]:
    return node.start_mark.line + 1, node.start_mark.column + 1


class _Builder:
    """Walks a composed YAML node tree into plain data, recording marks and enforcing limits."""

    def __init__(self, loader: yaml.SafeLoader, doc: YamlDocument) -> None:
        self.loader = loader
        self.doc = doc
        self.nodes = 0
        self.stack: set[int] = set()

    def fail(self, node: yaml.Node, message: str, path: DataPath) -> PolicyError:
        line, column = _mark(node)
        return PolicyError(PolicyIssue(self.doc.source, message, line, column, format_path(path)))

    def build(self, node: yaml.Node, path: DataPath) -> Any:
        self.nodes += 1
        if self.nodes > _MAX_NODES:
            raise self.fail(node, f"more than {_MAX_NODES} YAML nodes (an alias bomb?)", path)
        if len(path) > _MAX_DEPTH:
            raise self.fail(node, f"nested deeper than {_MAX_DEPTH} levels", path)
        if id(node) in self.stack:
            raise self.fail(node, "recursive alias (a node that contains itself)", path)
        self.doc.values.setdefault(path, _mark(node))
        if isinstance(node, yaml.ScalarNode):
            try:
                return self.loader.construct_object(node, deep=True)
            except yaml.YAMLError as err:
                raise self.fail(node, _yaml_message(err), path) from None
        if node.tag not in _PLAIN_TAGS:
            raise self.fail(
                node, f"unsupported YAML tag {node.tag!r}; policies are plain data and never run code", path
            )
        self.stack.add(id(node))
        try:
            if isinstance(node, yaml.SequenceNode):
                return [self.build(item, (*path, index)) for index, item in enumerate(node.value)]
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, path)
            raise self.fail(node, f"unsupported YAML node {type(node).__name__}", path)
        finally:
            self.stack.discard(id(node))

    def _mapping(self, node: yaml.MappingNode, path: DataPath) -> dict[Any, Any]:
        seen: dict[Any, yaml.Node] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self._key(key_node, path)
            if key in seen:
                first = _mark(seen[key])[0]
                raise self.fail(key_node, f"duplicate key {key!r} (first defined on line {first})", (*path, key))
            seen[key] = key_node
        try:
            self.loader.flatten_mapping(node)
        except yaml.YAMLError as err:
            raise self.fail(node, _yaml_message(err), path) from None
        result: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            key = self._key(key_node, path)
            self.doc.keys[(*path, key)] = _mark(key_node)
            self.doc.values.pop((*path, key), None)  # a later (explicit) value wins over a merged one
            result[key] = self.build(value_node, (*path, key))
        return result

    def _key(self, key_node: yaml.Node, path: DataPath) -> str | int:
        if not isinstance(key_node, yaml.ScalarNode):
            raise self.fail(key_node, "a mapping key must be a plain value, not a list or mapping", path)
        try:
            key = self.loader.construct_object(key_node)
        except yaml.YAMLError as err:
            raise self.fail(key_node, _yaml_message(err), path) from None
        if isinstance(key, bool) or not isinstance(key, (str, int)):
            return str(key_node.value)
        return key if isinstance(key, int) else str(key)


def _yaml_message(err: yaml.YAMLError) -> str:
    problem = getattr(err, "problem", None) or str(err).splitlines()[0]
    context = getattr(err, "context", None)
    return f"invalid YAML: {context + ', ' if context else ''}{problem}"


def parse_yaml(text: str, source: str) -> YamlDocument:
    """Parse one YAML document with a safe loader; every failure is a located ``PolicyError``."""
    doc = YamlDocument(data=None, source=source)
    try:
        loader = yaml.SafeLoader(text)  # the reader rejects control characters right here
    except yaml.reader.ReaderError as err:
        before = text[: err.position]
        line, column = before.count("\n") + 1, err.position - (before.rfind("\n") + 1) + 1
        raise PolicyError(
            PolicyIssue(source, f"invalid YAML: control character {err.character!r} is not allowed", line, column)
        ) from None
    try:
        try:
            node = loader.get_single_node()
        except yaml.MarkedYAMLError as err:
            mark = err.problem_mark or err.context_mark
            where = (mark.line + 1, mark.column + 1) if mark else (None, None)
            raise PolicyError(PolicyIssue(source, _yaml_message(err), *where)) from None
        except yaml.YAMLError as err:
            raise PolicyError(PolicyIssue(source, _yaml_message(err))) from None
        if node is None:
            raise PolicyError(
                PolicyIssue(source, "empty policy file; a policy needs at least 'name:' and 'rules:'", 1, 1)
            )
        doc.data = _Builder(loader, doc).build(node, ())
    except RecursionError:
        raise PolicyError(PolicyIssue(source, f"nested deeper than {_MAX_DEPTH} levels")) from None
    finally:
        loader.dispose()
    return doc
