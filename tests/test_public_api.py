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
