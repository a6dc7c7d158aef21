"""Real servers for tests: llama.cpp's OpenAI-compatible server (see tests.llama_server)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from tests.llama_server import LlamaServer


@contextmanager
def llama_cpp_server(log_dir: Path) -> Iterator[str]:
    """Start llama.cpp's server with the embedded model's GGUF; yield its base URL (…/v1); stop it after."""
    with LlamaServer(log_dir=log_dir) as url:
        yield url


@contextmanager
def serving(app: object) -> Iterator[str]:
    """Run an ASGI app with uvicorn in a thread on 127.0.0.1 and a free port; yield its /v1 base URL."""
    import threading

    import uvicorn

    from tests.llama_server import free_port, wait_ready

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_ready(f"http://127.0.0.1:{port}/health", None, timeout=30)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        server.should_exit = True
        thread.join(10)
