"""LangChain's own standard tests for the guarded chat model: unit (a fake inner model) and integration (the
guarded model around ChatOpenAI pointed at the real llama.cpp server). Capabilities the inner model lacks are
declared, not faked; no standard test is overridden."""

from __future__ import annotations

from typing import Any

import pytest
from guardrail.adapters.langchain import GuardedChatModel
from langchain_core.language_models import GenericFakeChatModel
from langchain_core.messages import AIMessage
from langchain_tests.integration_tests import ChatModelIntegrationTests
from langchain_tests.unit_tests import ChatModelUnitTests

from guardrail.judges import build_judge
from guardrail.policy import load_policy, parse_policy

NO_PII = "no_pii"
LLAMA: dict[str, str] = {}


def fake_inner() -> GenericFakeChatModel:
    return GenericFakeChatModel(messages=iter([AIMessage(content="Hello! How can I help?")] * 1000))


class TestGuardedChatModelUnit(ChatModelUnitTests):
    @property
    def chat_model_class(self) -> type[GuardedChatModel]:
        return GuardedChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        return {"model": fake_inner(), "policy": parse_policy("name: unit\nrules: []\n")}

    @property
    def has_tool_calling(self) -> bool:
        return True  # bound on the guarded model, handed to the inner model at call time

    @property
    def has_structured_output(self) -> bool:
        return True


@pytest.fixture(scope="class")
def llama_url(llama_server: str) -> str:
    LLAMA["url"] = llama_server
    return llama_server


@pytest.mark.slow
@pytest.mark.usefixtures("llama_url")
class TestGuardedChatModelIntegration(ChatModelIntegrationTests):
    @property
    def chat_model_class(self) -> type[GuardedChatModel]:
        return GuardedChatModel

    @property
    def chat_model_params(self) -> dict[str, Any]:
        from langchain_openai import ChatOpenAI

        inner = ChatOpenAI(
            base_url=LLAMA["url"], api_key="unused", model="smollm2", temperature=0, max_tokens=40,  # type: ignore[arg-type]
            stream_usage=True,
        )  # fmt: skip
        # the policy's exact (pattern) rules: its self-evaluated rule would have the 135M model refuse everything
        return {"model": inner, "policy": NO_PII, "judge": build_judge(load_policy(NO_PII), override="pattern")}

    @property
    def has_tool_calling(self) -> bool:
        return False  # SmolLM2-135M behind llama.cpp does not call tools reliably

    @property
    def has_structured_output(self) -> bool:
        return False

    @property
    def supports_json_mode(self) -> bool:
        return False

    @property
    def returns_usage_metadata(self) -> bool:
        # the guard streams its inner model, and llama-cpp-python's server sends no usage in streams
        # (stream_options.include_usage is ignored): usage is passed through when the inner model reports it
        return False
