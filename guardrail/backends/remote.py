"""The OpenAI-compatible backend: any server that speaks chat completions (OpenAI, vLLM, llama.cpp, ...)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from guardrail.backends.base import Chunk, GenerationParams, Message, StreamingBackend
from guardrail.judges.scorers import LogprobScorer
from guardrail.judges.self_eval import OptionScorer
from guardrail.openai_client import OpenAIClient

__all__ = ["OpenAIBackend"]


class OpenAIBackend(StreamingBackend):
    """Streams from ``base_url``; self-evaluation reads the same server's logprobs.

    Example::

        backend = OpenAIBackend("http://127.0.0.1:8080/v1", model="smollm2")
        guard = Guard("harmless", backend)

    ``prefill=True`` declares that the server continues a final assistant message (vLLM's
    ``continue_final_message``); leave it False for servers that do not (OpenAI, llama.cpp).
    """

    name = "openai"

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        prefill: bool = False,
        client: OpenAIClient | None = None,
        **client_options: Any,
    ) -> None:
        self.client = client or OpenAIClient(
            base_url, model=model, api_key=api_key, api_key_env=api_key_env, **client_options
        )
        self.supports_prefill = prefill

    def __repr__(self) -> str:
        return f"OpenAIBackend({self.client!r})"

    def _params(self, messages: Sequence[Message], params: GenerationParams) -> dict[str, Any]:
        out: dict[str, Any] = dict(params.extra)
        if params.temperature is not None:
            out["temperature"] = params.temperature
        if params.max_tokens is not None:
            out["max_tokens"] = params.max_tokens  # llama.cpp ignores max_completion_tokens
        if params.seed is not None:
            out["seed"] = params.seed
        if params.stop:
            out["stop"] = list(params.stop)
        if self.supports_prefill and messages and messages[-1].get("role") == "assistant":
            out.update(continue_final_message=True, add_generation_prompt=False)
        return out

    async def astream(self, messages: Sequence[Message], params: GenerationParams) -> AsyncIterator[Chunk]:
        stream = self.client.astream_chat(messages, **self._params(messages, params))
        try:
            async for delta in stream:
                usage = None
                if delta.usage:
                    usage = {
                        "input_tokens": int(delta.usage.get("prompt_tokens") or 0),
                        "output_tokens": int(delta.usage.get("completion_tokens") or 0),
                    }
                if delta.text or delta.finish_reason or usage or delta.tool_calls:
                    yield Chunk(
                        delta.text,
                        tokens=1 if delta.text or delta.tool_calls else 0,
                        finish_reason=delta.finish_reason,
                        usage=usage,
                        tool_calls=delta.tool_calls,
                    )
        finally:
            await stream.aclose()  # type: ignore[attr-defined]  # closes the HTTP response: the server stops

    def self_scorer(self) -> OptionScorer:
        return LogprobScorer(self.client)

    async def aready(self) -> str | None:
        return await self.client.aready()

    async def aclose(self) -> None:
        await self.client.aclose()
        self.client.close()
