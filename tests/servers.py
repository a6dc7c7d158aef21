"""Real servers for tests: llama.cpp's OpenAI-compatible server (see guardrail.backends.llama_server)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from guardrail.backends.llama_server import LlamaServer


@contextmanager
def llama_cpp_server(log_dir: Path) -> Iterator[str]:
    """Start llama.cpp's server with the embedded model's GGUF; yield its base URL (…/v1); stop it after."""
    with LlamaServer(log_dir=log_dir) as url:
        yield url
