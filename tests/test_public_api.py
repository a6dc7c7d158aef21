"""Pins the public API (as httpx does): a change to what we export is a deliberate, reviewed change."""

from __future__ import annotations

import subprocess
import sys

import guardrail
import guardrail.policy


def test_top_level_exports() -> None:
    assert sorted(guardrail.__all__) == sorted(
        [
            "CATEGORIES",
            "AuditError",
            "AuditSink",
            "BackendError",
            "Chunk",
            "GenerationParams",
            "Message",
            "ToolCall",
            "FallbackEvent",
            "FinalEvent",
            "Guard",
            "GuardResult",
            "Judge",
            "LocalBackend",
            "OpenAIBackend",
            "RewindEvent",
            "StreamingBackend",
            "TerminatedEvent",
            "TextEvent",
            "Verdict",
            "VerdictEvent",
            "GuardrailError",
            "GuardrailViolation",
            "JudgeError",
            "Policy",
            "PolicyError",
            "PolicyIssue",
            "Rule",
            "__version__",
            "build_judge",
            "builtin_policy_names",
            "load_policy",
            "parse_policy",
        ]
    )
    for name in guardrail.__all__:
        assert hasattr(guardrail, name), name


def test_policy_exports() -> None:
    for name in guardrail.policy.__all__:
        assert hasattr(guardrail.policy, name), name
    assert "load_policy" in guardrail.policy.__all__


def test_import_loads_no_framework() -> None:
    code = (
        "import guardrail, guardrail.cli, guardrail.policy, guardrail.guard, guardrail.judges, sys; "
        "heavy = {'torch', 'transformers', 'langchain_core', 'llama_index'} & set(sys.modules); "
        "assert not heavy, heavy"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_adapters_and_policies_are_subpackages() -> None:
    import guardrail.adapters
    import guardrail.policies

    assert guardrail.adapters.__name__ == "guardrail.adapters"
    assert guardrail.policies.__name__ == "guardrail.policies"


def _package_imports() -> dict[str, set[str]]:
    """guardrail's first-level packages and modules -> those they import at module level (lazy imports in
    functions are allowed)."""
    import ast
    from pathlib import Path

    root = Path(guardrail.__file__).parent
    graph: dict[str, set[str]] = {}
    for path in root.rglob("*.py"):
        parts = path.relative_to(root).with_suffix("").parts
        unit = parts[0]
        edges = graph.setdefault(unit, set())
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
                continue  # ast.walk still enters them; lazy imports are filtered below by col_offset
            if isinstance(node, ast.ImportFrom) and node.module and node.col_offset == 0:
                names = [node.module]
            elif isinstance(node, ast.Import) and node.col_offset == 0:
                names = [alias.name for alias in node.names]
            else:
                continue
            for name in names:
                pieces = name.split(".")
                if pieces[0] == "guardrail" and len(pieces) > 1 and pieces[1] != unit:
                    edges.add(pieces[1])
    return graph


def test_packages_form_no_import_cycle() -> None:
    graph = _package_imports()
    assert {"backends", "judges", "rewind", "policy"} <= set(graph)
    state: dict[str, int] = {}

    def visit(unit: str, path: list[str]) -> None:
        state[unit] = 1
        for other in sorted(graph.get(unit, ())):
            if other == "__init__":
                continue
            assert state.get(other) != 1, f"import cycle: {' -> '.join([*path, other])}"
            if other not in state:
                visit(other, [*path, other])
        state[unit] = 2

    for unit in sorted(graph):
        if unit not in state and unit != "__init__":
            visit(unit, [unit])
