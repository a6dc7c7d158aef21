"""An OpenAI-compatible chat-completions client over httpx (sync and async): OpenAI, vLLM, llama.cpp, ...

Retries follow the OpenAI SDK's rules (408/409/429/5xx and connection failures, ``retry-after`` honoured,
backoff ``min(0.5 * 2**n, 8)`` seconds with jitter, 2 retries by default) and never happen once streamed
bytes have been handed to the caller: regenerating is the rewind's job. The API key comes from a parameter
or an environment variable and never appears in an error, a log line or ``repr``.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import random
import time
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from typing import Any

import httpx

from guardrail.errors import BackendError

__all__ = ["ChatDelta", "OpenAIClient", "RetryPolicy"]

Message = Mapping[str, Any]


@dataclass(frozen=True)
class ChatDelta:
    """One streamed piece of a chat completion."""

    text: str
    finish_reason: str | None = None
    logprobs: list[dict[str, Any]] = field(default_factory=list)
    usage: dict[str, Any] | None = None
    tool_calls: tuple[dict[str, Any], ...] = ()  # tool-call pieces (OpenAI's delta shape)

    @property
    def answers(self) -> bool:
        """Whether this piece carries any of the answer (text, a tool-call piece or the finish reason)."""
        return bool(self.text or self.finish_reason or self.tool_calls)


@dataclass(frozen=True)
class RetryPolicy:
    """When to retry, and how long to wait: the OpenAI SDK's rules."""

    max_retries: int = 2
    initial_delay: float = 0.5
    max_delay: float = 8.0
    max_retry_after: float = 60.0

    def delay(self, attempt: int, response: httpx.Response | None) -> float | None:
        """Seconds to wait before retry number ``attempt + 1``, or None when no retry is due."""
        if attempt >= self.max_retries:
            return None
        if response is not None:
            if not (response.status_code in (408, 409, 429) or response.status_code >= 500):
                return None
            if response.headers.get("x-should-retry") == "false":
                return None
            hinted = _retry_after(response.headers)
            if hinted is not None and 0 <= hinted <= self.max_retry_after:
                return hinted
        base: float = min(self.initial_delay * 2**attempt, self.max_delay)
        return base * (1 - 0.25 * random.random())


def _retry_after(headers: httpx.Headers) -> float | None:
    if "retry-after-ms" in headers:
        try:
            return float(headers["retry-after-ms"]) / 1000
        except ValueError:
            return None
    value = headers.get("retry-after")
    if value is None:
        return None
    try:
        return float(value)
    except ValueError:
        try:
            return float(parsedate_to_datetime(value).timestamp() - time.time())
        except (TypeError, ValueError):
            return None


class OpenAIClient:
    """Chat completions against ``base_url`` (e.g. ``http://127.0.0.1:8080/v1``).

    Example::

        client = OpenAIClient("http://127.0.0.1:8080/v1", model="smollm2")
        reply = client.chat([{"role": "user", "content": "Hi"}], max_tokens=20)
        for delta in client.stream_chat([{"role": "user", "content": "Hi"}]):
            print(delta.text, end="")
    """

    def __init__(
        self,
        base_url: str,
        *,
        model: str | None = None,
        api_key: str | None = None,
        api_key_env: str = "OPENAI_API_KEY",
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        headers: Mapping[str, str] | None = None,
        max_connections: int = 100,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.retry = retry or RetryPolicy()
        key = api_key if api_key is not None else os.environ.get(api_key_env)
        self._headers = {"Content-Type": "application/json", **(headers or {})}
        if key:
            self._headers["Authorization"] = f"Bearer {key}"
        self._timeout = httpx.Timeout(read_timeout, connect=connect_timeout)
        self._limits = httpx.Limits(max_connections=max_connections, max_keepalive_connections=20)
        self._sync: httpx.Client | None = None
        self._async: dict[int, httpx.AsyncClient] = {}

    def __repr__(self) -> str:  # the key stays out of reprs and logs
        return f"OpenAIClient(base_url={self.base_url!r}, model={self.model!r})"

    # ------------------------------------------------------------------------------------------ plumbing

    def _client(self) -> httpx.Client:
        if self._sync is None:
            self._sync = httpx.Client(headers=self._headers, timeout=self._timeout, limits=self._limits)
        return self._sync

    def _aclient(self) -> httpx.AsyncClient:
        # One pool per event loop: an httpx.AsyncClient must not cross loops.
        loop = id(asyncio.get_running_loop())
        client = self._async.get(loop)
        if client is None or client.is_closed:
            client = httpx.AsyncClient(headers=self._headers, timeout=self._timeout, limits=self._limits)
            self._async[loop] = client
        return client

    def close(self) -> None:
        if self._sync is not None:
            self._sync.close()
            self._sync = None

    async def aclose(self) -> None:
        for client in self._async.values():
            await client.aclose()
        self._async.clear()

    async def aready(self, timeout: float = 2.0) -> str | None:
        """None when the server can take requests: it answers ``GET /models`` with 200, or accepts the connection
        but is too busy to answer within ``timeout`` seconds (a saturated server is still up; marking every replica
        unready then would take the whole service down). Else why not: no connection, or an error status."""
        try:
            response = await self._aclient().get(self._url("models"), timeout=timeout)
        except (httpx.ReadTimeout, httpx.PoolTimeout):
            return None
        except httpx.HTTPError as err:
            return f"upstream unreachable ({type(err).__name__})"
        return None if response.status_code == 200 else f"upstream answered {response.status_code}"

    def _payload(self, messages: Sequence[Message], stream: bool, params: Mapping[str, Any]) -> dict[str, Any]:
        payload: dict[str, Any] = {"messages": list(messages), "stream": stream, **params}
        if self.model and "model" not in payload:
            payload["model"] = self.model
        payload.setdefault("model", "default")
        if stream:
            payload.setdefault("stream_options", {"include_usage": True})
        return payload

    def _url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def _fail(self, what: str, err: BaseException | httpx.Response) -> BackendError:
        if isinstance(err, httpx.Response):
            body = err.text[:300] if not err.is_stream_consumed or err.is_closed else ""
            hint = {401: " (check the API key)", 404: " (check base_url and the model name)"}.get(err.status_code, "")
            reason = err.reason_phrase or "error"
            return self._error(
                f"{what}: HTTP {err.status_code} from {self.base_url}{hint}: {body}".rstrip(": "),
                f"upstream returned HTTP {err.status_code} ({reason})",
            )
        if isinstance(err, httpx.TimeoutException):
            return self._error(f"{what}: timed out talking to {self.base_url} ({type(err).__name__})",
                               "upstream timed out")  # fmt: skip
        return self._error(f"{what}: cannot reach {self.base_url}: {type(err).__name__}: {err}",
                           "upstream unreachable")  # fmt: skip

    def _error(self, message: str, public: str) -> BackendError:
        """A BackendError whose text never carries our key (an upstream may echo it) or anything key-shaped."""
        from guardrail.audit import mask_secrets

        key = self._headers.get("Authorization", "")[len("Bearer ") :]
        if key:
            message = message.replace(key, "[key masked]")
        return BackendError(mask_secrets(message), public=public)

    def _empty(self, response: httpx.Response) -> BackendError:
        kind = response.headers.get("content-type", "no content type")
        return self._error(
            f"streamed chat completion from {self.base_url} ended without an answer (HTTP 200, {kind}, no "
            "choices): the server may not support streaming, or it dropped the request (e.g. context overflow)",
            "upstream sent no answer",
        )

    # ------------------------------------------------------------------------------------------ requests

    def _retry_in(self, what: str, attempt: int, outcome: httpx.Response | httpx.TransportError) -> float:
        """Seconds to wait before retrying after ``outcome`` (a bad response or a transport error), or the
        typed error that ends the request. Shared by the four request methods; only their I/O differs."""
        delay = self.retry.delay(attempt, outcome if isinstance(outcome, httpx.Response) else None)
        if delay is None:
            raise self._fail(what, outcome)
        return delay

    def chat(self, messages: Sequence[Message], **params: Any) -> dict[str, Any]:
        """One non-streamed chat completion (the response JSON), retried per ``RetryPolicy``."""
        payload = self._payload(messages, False, params)
        for attempt in itertools.count():
            try:
                response = self._client().post(self._url("chat/completions"), json=payload)
            except httpx.TransportError as err:
                time.sleep(self._retry_in("chat completion failed", attempt, err))
                continue
            if response.status_code == 200:
                return self._json(response.content)
            time.sleep(self._retry_in("chat completion failed", attempt, response))
        raise AssertionError("unreachable")  # pragma: no cover

    async def achat(self, messages: Sequence[Message], **params: Any) -> dict[str, Any]:
        """``chat`` for asyncio."""
        payload = self._payload(messages, False, params)
        for attempt in itertools.count():
            try:
                response = await self._aclient().post(self._url("chat/completions"), json=payload)
            except httpx.TransportError as err:
                await asyncio.sleep(self._retry_in("chat completion failed", attempt, err))
                continue
            if response.status_code == 200:
                return self._json(response.content)
            await asyncio.sleep(self._retry_in("chat completion failed", attempt, response))
        raise AssertionError("unreachable")  # pragma: no cover

    def stream_chat(self, messages: Sequence[Message], **params: Any) -> Iterator[ChatDelta]:
        """Stream a chat completion; retried only until the first delta has been yielded."""
        payload = self._payload(messages, True, params)
        attempt = 0
        while True:
            started = False
            try:
                with self._client().stream("POST", self._url("chat/completions"), json=payload) as response:
                    if response.status_code == 200:
                        answered = False
                        for line in response.iter_lines():
                            for delta in self._deltas(line):
                                started = True
                                answered = answered or delta.answers
                                yield delta
                        if not answered:
                            raise self._empty(response)
                        return
                    response.read()
                    delay = self._retry_in("streamed chat completion failed", attempt, response)
            except httpx.TransportError as err:
                if started:
                    raise self._fail("stream broke off", err) from None
                delay = self._retry_in("streamed chat completion failed", attempt, err)
            time.sleep(delay)
            attempt += 1

    async def astream_chat(self, messages: Sequence[Message], **params: Any) -> AsyncIterator[ChatDelta]:
        """``stream_chat`` for asyncio; closing the iterator cancels the upstream request."""
        payload = self._payload(messages, True, params)
        attempt = 0
        while True:
            started = False
            try:
                async with self._aclient().stream("POST", self._url("chat/completions"), json=payload) as response:
                    if response.status_code == 200:
                        answered = False
                        async for line in response.aiter_lines():
                            for delta in self._deltas(line):
                                started = True
                                answered = answered or delta.answers
                                yield delta
                        if not answered:
                            raise self._empty(response)
                        return
                    await response.aread()
                    delay = self._retry_in("streamed chat completion failed", attempt, response)
            except httpx.TransportError as err:
                if started:
                    raise self._fail("stream broke off", err) from None
                delay = self._retry_in("streamed chat completion failed", attempt, err)
            await asyncio.sleep(delay)
            attempt += 1

    def _json(self, raw: bytes) -> dict[str, Any]:
        try:
            data = json.loads(raw)
        except ValueError:
            raise self._error(
                f"malformed JSON from {self.base_url}: {raw[:120]!r}", "upstream sent malformed JSON"
            ) from None
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list) or not data["choices"]:
            raise self._error(
                f"unexpected response from {self.base_url} (no 'choices'): {str(data)[:200]}", "upstream sent no answer"
            )
        return data

    def _deltas(self, line: str) -> list[ChatDelta]:
        try:
            return _sse_deltas(line, self.base_url)
        except BackendError as err:
            raise self._error(str(err), err.public) from None


_MALFORMED = "upstream sent a malformed stream"


def _sse_deltas(line: str, base_url: str) -> list[ChatDelta]:
    """The deltas carried by one SSE line (none for comments, blank lines, ``[DONE]``)."""
    if not line.startswith("data:"):
        return []
    data = line[5:].strip()
    if not data or data == "[DONE]":
        return []
    try:
        chunk = json.loads(data)
    except ValueError:
        raise BackendError(f"malformed stream chunk from {base_url}: {data[:120]!r}", public=_MALFORMED) from None
    if not isinstance(chunk, dict):
        raise BackendError(f"malformed stream chunk from {base_url}: {data[:120]!r}", public=_MALFORMED)
    if "error" in chunk:
        raise BackendError(
            f"the server reported an error mid-stream: {str(chunk['error'])[:200]}", public="upstream reported an error"
        )
    usage = chunk.get("usage") if isinstance(chunk.get("usage"), dict) else None
    choices = chunk.get("choices") or []
    if not choices:
        return [ChatDelta("", usage=usage)] if usage else []
    choice = choices[0]
    if not isinstance(choice, dict):
        raise BackendError(f"malformed stream chunk from {base_url}: {data[:120]!r}", public=_MALFORMED)
    delta = choice.get("delta") or {}
    text = delta.get("content") or ""
    logprobs = (choice.get("logprobs") or {}).get("content") or []
    calls = tuple(call for call in delta.get("tool_calls") or () if isinstance(call, dict))
    return [ChatDelta(str(text), choice.get("finish_reason"), list(logprobs), usage, calls)]
