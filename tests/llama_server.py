"""Run llama.cpp's OpenAI-compatible server (llama-cpp-python) on 127.0.0.1 for the embedded model's GGUF.

Used by the tests and benchmarks, and handy for trying the remote path locally::

    with LlamaServer() as base_url:
        backend = OpenAIBackend(base_url, model="smollm2")

Requests are queued, not interrupted (llama-cpp-python interrupts a running stream when a new request
arrives unless told otherwise), so concurrent guarded streams each get their whole answer.
"""

from __future__ import annotations

import importlib.util
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import TracebackType

import httpx

from guardrail.embedded import embedded_gguf_path
from guardrail.errors import BackendError

__all__ = ["LlamaServer", "free_port", "wait_ready"]


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now."""
    with socket.socket() as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def wait_ready(url: str, process: subprocess.Popen[bytes] | None, timeout: float, log: Path | None = None) -> None:
    """Poll ``url`` until it answers 200; fail early (with the log's tail) if ``process`` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            tail = log.read_text(errors="replace")[-2000:] if log and log.exists() else ""
            raise BackendError(f"server exited with {process.returncode} before it was ready:\n{tail}")
        try:
            if httpx.get(url, timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise BackendError(f"server at {url} not ready after {timeout:g}s")


class LlamaServer:
    """Context manager: start the server, yield its base URL (``http://127.0.0.1:PORT/v1``), stop it after."""

    def __init__(
        self,
        model: Path | None = None,
        *,
        host: str = "127.0.0.1",
        port: int | None = None,
        alias: str = "smollm2",
        n_ctx: int = 2048,
        threads: int = 2,
        log_dir: Path | None = None,
    ) -> None:
        if importlib.util.find_spec("llama_cpp") is None:
            raise BackendError(
                "llama-cpp-python[server] is not installed: run `make setup-test` (see scripts/setup.sh for the "
                "CMAKE_ARGS these CPUs need)"
            )
        self.model = model or embedded_gguf_path()
        self.host = host
        self.port = port or free_port(host)
        self.alias = alias
        self.n_ctx = n_ctx
        self.threads = threads
        self.log = Path(log_dir or tempfile.mkdtemp(prefix="llama-server-")) / f"llama-server-{self.port}.log"
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def __enter__(self) -> str:
        command = [
            sys.executable, "-m", "llama_cpp.server",
            "--model", str(self.model), "--host", self.host, "--port", str(self.port),
            "--n_ctx", str(self.n_ctx), "--model_alias", self.alias, "--n_threads", str(self.threads),
            "--interrupt_requests", "False",
        ]  # fmt: skip
        with self.log.open("wb") as handle:
            self.process = subprocess.Popen(command, stdout=handle, stderr=subprocess.STDOUT)
        try:
            wait_ready(f"{self.base_url}/models", self.process, timeout=120, log=self.log)
        except BaseException:
            self.stop()
            raise
        return self.base_url

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()
