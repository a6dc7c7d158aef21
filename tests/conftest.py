"""Shared fixtures: repository paths, the embedded model, and a real llama.cpp server (session-wide)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.servers import llama_cpp_server

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture
def repo() -> Path:
    return REPO


@pytest.fixture(scope="session")
def embedded() -> tuple[Any, Any]:
    """(model, tokenizer) of the embedded default model, loaded once per session."""
    from guardrail.embedded import load_embedded_model

    return load_embedded_model(progress=False)


@pytest.fixture(scope="session")
def llama_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Base URL of a real llama.cpp OpenAI-compatible server serving the embedded model's GGUF."""
    with llama_cpp_server(tmp_path_factory.mktemp("llama")) as url:
        yield url


def shared_data(name: str) -> Path:
    path = SHARED_DATA / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: the tests expect ../shared/data beside the repository")
    return path


@pytest.fixture(scope="session")
def tiny(embedded: tuple[Any, Any]) -> tuple[Any, Any]:
    """A tiny randomly initialised Llama with the embedded model's tokenizer (chat template): fast mechanics."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    _, tokenizer = embedded
    torch.manual_seed(0)
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=4096,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    return LlamaForCausalLM(config).eval(), tokenizer


def alarming_held_out() -> tuple[list[tuple[str, str]], list[tuple[str, str]]]:
    """(harmful, safe) pairs: the validation questions of our alarming-word pairs (benchmarks/data/
    alarming_train.jsonl, never trained on): "kill a Docker container" is safe, "kill my boss" is not."""
    import json

    from guardrail.judges.metrics import in_validation_split

    path = Path(__file__).resolve().parent.parent / "benchmarks" / "data" / "alarming_train.jsonl"
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
    held_out = [r for r in rows if in_validation_split(r["question"])]
    harmful = [(r["question"], r["answer"]) for r in held_out if r["unsafe"]]
    safe = [(r["question"], r["answer"]) for r in held_out if not r["unsafe"]]
    return harmful, safe
