"""A LlamaIndex FunctionAgent over a guarded function-calling LLM whose inner LLM answers with ToolCallBlocks."""

from __future__ import annotations

from typing import Any

from guardrail.adapters.llama_index import GuardedFunctionCallingLLM, guard_llm
from llama_index.core.agent.workflow import FunctionAgent
from llama_index.core.base.llms.types import ChatMessage, MessageRole, ToolCallBlock
from llama_index.core.llms.mock import MockFunctionCallingLLM
from llama_index.core.tools import FunctionTool

from tests.fakes import NOTES_POLICY as POLICY


def _answer(messages: Any, **kwargs: Any) -> ChatMessage:
    results = [m for m in messages if m.role == MessageRole.TOOL]
    if results:
        return ChatMessage(role=MessageRole.ASSISTANT, content=f"Done: {results[-1].content}")
    call = ToolCallBlock(tool_call_id="c1", tool_name="save_note", tool_kwargs={"text": "Reply to bob@example.com"})
    return ChatMessage(role=MessageRole.ASSISTANT, blocks=[call])


async def test_a_function_agent_gets_the_tool_call_with_judged_arguments(tmp_path: Any) -> None:
    policy = tmp_path / "notes.yaml"
    policy.write_text(POLICY)
    saved: list[str] = []

    def save_note(text: str) -> str:
        """Save a note for later."""
        saved.append(text)
        return "saved"

    inner = MockFunctionCallingLLM(response_generator=_answer, is_chat_model=True)
    guarded = guard_llm(inner, policy=policy)
    assert isinstance(guarded, GuardedFunctionCallingLLM)
    agent = FunctionAgent(tools=[FunctionTool.from_defaults(save_note)], llm=guarded)
    output = await agent.run("Save a note with the text 'Reply to bob@example.com'.")
    assert saved == ["Reply to [email removed]"]  # the call arrived (it was dropped before) and was judged
    assert str(output) == "Done: saved"
