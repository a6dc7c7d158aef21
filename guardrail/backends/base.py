"""What a backend offers the Guard: a stream of text chunks for chat messages (sentence-level rewind), and
optionally token ids and a KV cache (token-level rewind, local transformers models)."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from guardrail.judges.self_eval import OptionScorer

__all__ = ["Chunk", "GenerationParams", "Message", "StreamingBackend", "estimate_tokens"]

Message = Mapping[str, Any]


@dataclass(frozen=True)
class GenerationParams:
    """Decoding settings for one generation request."""

    temperature: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    stop: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)

    def sampling(self, accepted: Collection[str]) -> dict[str, Any]:
        """The sampling settings that are set (``temperature``, ``seed``) among the names a model accepts: a
        regeneration's new temperature and seed, for framework models that take them per call."""
        chosen = {"temperature": self.temperature, "seed": self.seed}
        return {name: value for name, value in chosen.items() if value is not None and name in accepted}


@dataclass(frozen=True)
class Chunk:
    """A streamed piece of text; ``tokens`` is how many tokens it carries (1 per delta when unknown)."""

    text: str
    tokens: int = 1
    finish_reason: str | None = None
    usage: Mapping[str, int] | None = None  # the backend's own count (input_tokens, output_tokens), when known
    tool_calls: tuple[Mapping[str, Any], ...] = ()  # tool-call pieces, merged and judged by the guard


def estimate_tokens(messages: Sequence[Message]) -> int:
    """A tokenizer-free estimate of a prompt's tokens: UTF-8 bytes / 4, plus 4 per message."""
    return sum(len(str(m.get("content") or "").encode("utf-8", "replace")) // 4 + 4 for m in messages)


class StreamingBackend(ABC):
    """A chat model that streams text.

    ``supports_prefill`` is True when the model can continue a final assistant message (so a regeneration
    continues the accepted prefix directly); otherwise the Guard asks it to continue with an instruction.
    """

    name = "backend"
    supports_prefill = False
    supports_tokens = False  # token ids and a KV cache: token-level rewind
    #: whether the model's self-evaluation is worth asking (False: the policy's self-judged rules go to the
    #: trained judge where it can score them; see ``guardrail.presets``)
    can_self_judge = True

    @abstractmethod
    def astream(self, messages: Sequence[Message], params: GenerationParams) -> AsyncIterator[Chunk]:
        """Stream the reply to ``messages``; closing the iterator must cancel the upstream request."""

    #: the model's context window in tokens, where known (``guardrail serve`` bounds prompts by it)
    context_tokens: int | None = None

    def count_tokens(self, messages: Sequence[Message]) -> int:
        """Tokens the prompt takes; by default an estimate (``estimate_tokens``)."""
        return estimate_tokens(messages)

    def self_scorer(self) -> OptionScorer | None:
        """The scorer with which this model judges itself (None: it cannot)."""
        return None

    async def aready(self) -> str | None:
        """None when the backend can answer now (a server's readiness probe), else the reason it cannot."""
        return None

    async def aclose(self) -> None:  # noqa: B027 - optional hook, nothing to release by default
        """Release connections."""
