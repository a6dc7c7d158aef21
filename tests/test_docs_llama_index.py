"""Every example in docs/llama_index.md, run against the real llama.cpp server."""

from __future__ import annotations

import pytest

from tests.docs_runner import python_blocks, run_document

pytestmark = pytest.mark.slow


def test_every_example_runs(llama_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from guardrail.adapters.llama_index import GuardedLLM
    from llama_index.core import Settings
    from llama_index.core.instrumentation import get_dispatcher
    from llama_index.core.llms import MockLLM

    monkeypatch.setenv("LLM_BASE_URL", llama_server)
    handlers = list(get_dispatcher().event_handlers)
    assert len(python_blocks("llama_index.md")) >= 4
    try:
        namespace = run_document("llama_index.md")
        import asyncio

        answer = asyncio.run(namespace["ask"]())  # the document's own async query, run once more
        assert answer.strip() and answer.strip() != "I can't help with that."
        assert isinstance(Settings.llm, GuardedLLM)  # answered by the guarded model the document set
    finally:
        get_dispatcher().event_handlers[:] = handlers
        Settings.llm = MockLLM()
