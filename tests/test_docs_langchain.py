"""Every example in docs/langchain.md, run against the real llama.cpp server."""

from __future__ import annotations

import pytest

from tests.docs_runner import python_blocks, run_document

pytestmark = pytest.mark.slow


def test_every_example_runs(llama_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LLM_BASE_URL", llama_server)
    assert len(python_blocks("langchain.md")) >= 7
    namespace = run_document("langchain.md")
    assert isinstance(namespace["answer"], str) and namespace["answer"].strip()
    last = namespace["state"]["messages"][-1]
    assert last.type == "ai" and str(last.content).strip()  # the agent answered
    assert last.response_metadata["guardrail"]["verdicts"] >= 1  # and the answer was judged
