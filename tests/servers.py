"""Real servers for tests, on 127.0.0.1 and a free port: llama.cpp's OpenAI-compatible server."""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes] | None, timeout: float, log: Path | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log else ""
            raise RuntimeError(f"server exited with {process.returncode} before it was ready:\n{tail}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"server at {url} not ready after {timeout}s")


@contextmanager
def llama_cpp_server(log_dir: Path) -> Iterator[str]:
    """Start llama.cpp's server with the embedded model's GGUF; yield its base URL (…/v1); stop it after."""
    if importlib.util.find_spec("llama_cpp") is None:
        raise RuntimeError("llama-cpp-python[server] is not installed: run `make setup-test` (scripts/setup.sh --test)")
    from guardrail.backends.embedded import embedded_gguf_path

    port = free_port()
    log = log_dir / f"llama-server-{port}.log"
    command = [
        sys.executable, "-m", "llama_cpp.server",
        "--model", str(embedded_gguf_path()),
        "--host", "127.0.0.1", "--port", str(port),
        "--n_ctx", "2048", "--model_alias", "smollm2", "--n_threads", "2",
    ]  # fmt: skip
    with log.open("wb") as handle:
        process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
    try:
        wait_ready(f"http://127.0.0.1:{port}/v1/models", process, timeout=120, log=log)
        yield f"http://127.0.0.1:{port}/v1"
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
