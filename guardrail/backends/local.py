"""Loading a local transformers model: the embedded default, a model folder, or a GGUF file. Offline."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from guardrail.backends.embedded import load_embedded_model
from guardrail.errors import BackendError

__all__ = ["DEFAULT_MODEL_NAMES", "is_remote", "load_local_model"]

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
