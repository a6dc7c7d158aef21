"""A local transformers model: loading it (the embedded default, a folder, a GGUF file; offline) and the
backend that gives the Guard its token ids and KV cache."""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator, Sequence
from pathlib import Path
from typing import Any, TypeVar

from guardrail import _sync
from guardrail.backends.base import Chunk, GenerationParams, Message, StreamingBackend
from guardrail.embedded import load_embedded_model
from guardrail.errors import BackendError
from guardrail.judges.self_eval import OptionScorer

__all__ = ["DEFAULT_MODEL_NAMES", "SELF_JUDGE_MIN_PARAMETERS", "LocalBackend", "is_remote", "load_local_model"]

T = TypeVar("T")

#: Local models smaller than this are not asked to judge themselves by default.
SELF_JUDGE_MIN_PARAMETERS = 1_000_000_000

#: Names that mean "the embedded default model".
DEFAULT_MODEL_NAMES = frozenset({"", "default", "embedded", "smollm2", "smollm2-135m-instruct"})


def is_remote(spec: str | None) -> bool:
    """True when ``spec`` is an OpenAI-compatible base URL rather than a local model."""
    return bool(spec) and str(spec).startswith(("http://", "https://"))


def load_local_model(spec: str | Path | None = None, *, progress: bool = True) -> tuple[Any, Any]:
    """(model, tokenizer) for the embedded default (``None`` / ``"default"``), a folder, or a ``.gguf`` file."""
    if spec is None or str(spec) in DEFAULT_MODEL_NAMES:
        return load_embedded_model(progress=progress)
    path = Path(spec)
    if not path.exists():
        raise BackendError(
            f"no model at {str(path)!r}: give a local model folder, a .gguf file, 'default' for the embedded "
            "model, or an http(s):// OpenAI-compatible base URL"
        )
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer
    except ImportError as err:
        raise BackendError(f"a local model needs torch and transformers ({err.name} is missing)") from None
    model: Any
    tokenizer: Any
    try:
        if path.is_file() and path.suffix == ".gguf":
            tokenizer = AutoTokenizer.from_pretrained(path.parent, gguf_file=path.name)
            model = AutoModelForCausalLM.from_pretrained(path.parent, gguf_file=path.name, dtype=torch.float32)
        else:
            tokenizer = AutoTokenizer.from_pretrained(path, local_files_only=True)
            model = AutoModelForCausalLM.from_pretrained(path, local_files_only=True, dtype="auto")
    except (OSError, ValueError) as err:
        raise BackendError(f"cannot load a causal language model from {str(path)!r}: {err}") from None
    return model.eval(), tokenizer


class LocalBackend(StreamingBackend):
    """A local transformers causal LM: token ids and a KV cache, so the Guard rewinds token by token.

    Example::

        backend = LocalBackend()                        # the embedded SmolLM2-135M-Instruct
        backend = LocalBackend(model=m, tokenizer=t)    # a model you loaded
        guard = Guard("harmless", backend)

    The model is shared by every request; a lock lets one request compute at a time (each request's state
    lives in its own ``Decoder``), so concurrent requests interleave step by step.
    """

    name = "local"
    supports_tokens = True

    def __init__(self, model: Any = None, tokenizer: Any = None, *, path: str | Path | None = None) -> None:
        from guardrail.judges.local_scorer import LocalScorer

        if model is None or tokenizer is None:
            model, tokenizer = load_local_model(path)
        self.model = model
        self.tokenizer = tokenizer
        self.scorer = LocalScorer(model, tokenizer)
        self.lock = threading.RLock()
        # models under 1B parameters (the embedded 135M one) judge themselves near chance (docs/algorithms.md)
        self.can_self_judge = model.num_parameters() >= SELF_JUDGE_MIN_PARAMETERS
        context = getattr(getattr(model, "config", None), "max_position_embeddings", None)
        self.context_tokens = int(context) if isinstance(context, int) else None

    def __repr__(self) -> str:
        return f"LocalBackend({type(self.model).__name__}, {self.model.num_parameters() / 1e6:.1f}M parameters)"

    def self_scorer(self) -> OptionScorer:
        return self.scorer

    def count_tokens(self, messages: Sequence[Message]) -> int:
        """The prompt's tokens under the model's chat template (exact)."""
        return len(self.scorer.template_ids(list(messages)))  # type: ignore[arg-type]

    async def iterate(self, steps: Iterator[T]) -> AsyncIterator[T]:
        """Run a sync generator step by step in a worker thread, holding the model lock for each step."""
        async for item in _sync.thread_iterate(lambda: steps, self.lock):
            yield item

    def _plain(self, messages: Sequence[Message], params: GenerationParams) -> Iterator[Chunk]:
        from guardrail.rewind.decoder import Decoder, Sampling, TextEmitter

        decoder = Decoder(self.model, self.tokenizer, seed=params.seed or 0)
        decoder.start(self.scorer.template_ids(list(messages)))  # type: ignore[arg-type]
        emitter = TextEmitter(decoder)
        sampling = Sampling(params.temperature)
        for _ in range(params.max_tokens or 512):
            if decoder.finished():
                break
            decoder.step(sampling)
            text = emitter.delta(decoder.generated)
            if text:
                yield Chunk(text)
        rest = emitter.delta(decoder.generated, final=True)
        yield Chunk(rest, tokens=0, finish_reason="stop")

    async def astream(self, messages: Sequence[Message], params: GenerationParams) -> AsyncIterator[Chunk]:
        """Plain streaming generation (what sentence-level rewind uses when a policy forces it)."""
        async for chunk in self.iterate(self._plain(messages, params)):
            yield chunk
