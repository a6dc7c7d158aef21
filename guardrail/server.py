"""An OpenAI-compatible HTTP server that guards every answer: ``guardrail serve``.

Apps in any language use the guard by changing a base URL. ``POST /v1/chat/completions`` (streaming and
not) and ``GET /v1/models``; the verdict and rewind summary rides in a ``guardrail`` extension field (of the
response, and of the last streamed chunk); only verified text is streamed. Optional API keys for clients
(``Authorization: Bearer``). Every request is validated (``guardrail.chat_request``) and bounded (body size,
message count, prompt tokens, ``max_tokens``) before any work starts; errors use OpenAI's error shape, and
upstream details (which may carry keys, URLs, paths) go to the server's log, never to the client. A client
that disconnects, streaming or not, cancels its work. Needs the ``serve`` extra (starlette, uvicorn).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import json
import logging
import time
from collections.abc import AsyncIterator, Coroutine, Iterable
from typing import Any, TypeVar

from guardrail.audit import AuditError, mask_secrets
from guardrail.backends.base import estimate_tokens
from guardrail.chat_request import ChatRequest, RequestRejected, ServerLimits, parse_request
from guardrail.errors import BackendError, GuardrailError, GuardrailViolation
from guardrail.events import FinalEvent, GuardResult, TextEvent
from guardrail.guard import Guard

__all__ = ["ServerLimits", "create_app"]

T = TypeVar("T")


_log = logging.getLogger("guardrail.server")
_AUTH = "missing or wrong API key (Authorization: Bearer ...)"
_AUDIT = "the audit record of this answer could not be written, so the answer is withheld; tell the operator"


def _error(status: int, message: str, kind: str, param: str | None = None, **extra: Any) -> Any:
    """An error in OpenAI's shape: ``{"error": {"message", "type", "param", "code"}}``."""
    from starlette.responses import JSONResponse

    body = {"message": message, "type": kind, "param": param, "code": None, **extra}
    return JSONResponse({"error": body}, status_code=status)


def _error_of(err: GuardrailError) -> tuple[int, dict[str, Any]]:
    """Status and OpenAI-shaped error body for a guard error; upstream details stay in the server's log."""
    if isinstance(err, GuardrailViolation):
        return 400, {"message": str(err), "type": "guardrail_violation", "rules": list(err.rules)}
    if isinstance(err, BackendError):
        _log.warning("upstream error: %s", mask_secrets(str(err)))
        return 502, {"message": err.public, "type": "upstream_error"}
    if isinstance(err, AuditError):
        _log.error("%s", err)
        return 503, {"message": _AUDIT, "type": "audit_error"}
    _log.warning("request failed: %s", mask_secrets(str(err)))
    return 500, {"message": "the guard failed on this request; see the server's log", "type": "guardrail_error"}


def _finish(result: GuardResult) -> str:
    if result.fallback is not None and result.fallback.action in {"refuse", "raise"}:
        return "content_filter"
    return "tool_calls" if result.tool_calls else "stop"


def _message(result: GuardResult) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": result.text}
    if result.tool_calls:  # merged, arguments judged
        message["tool_calls"] = [call.to_openai() for call in result.tool_calls]
    return message


class _ClientGone(Exception):
    """The client disconnected before the answer was ready."""


class _Handler:
    def __init__(self, guard: Guard, model_name: str, api_keys: Iterable[str], limits: ServerLimits) -> None:
        self.guard = guard
        self.model_name = model_name
        self.api_keys = [key.encode() for key in api_keys if key]
        context = getattr(guard.backend, "context_tokens", None)
        self.count_tokens = getattr(guard.backend, "count_tokens", estimate_tokens)
        self.limits = limits
        self.max_prompt_tokens = limits.max_prompt_tokens or (context if context else 32768)

    def authorized(self, request: Any) -> bool:
        if not self.api_keys:
            return True
        header = request.headers.get("authorization", "")
        token = header[7:].strip().encode() if header.lower().startswith("bearer ") else b""
        return any(hmac.compare_digest(token, key) for key in self.api_keys)

    async def models(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        if not self.authorized(request):
            return _error(401, _AUTH, "authentication_error")
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": self.model_name, "object": "model", "created": 0, "owned_by": "guardrail"}],
            }
        )

    async def _body(self, request: Any) -> bytes:
        """The request body, read up to the size limit (413 past it, before the rest is read)."""
        limit = self.limits.max_body_bytes
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            raise RequestRejected(413, f"the request body is larger than {limit} bytes")
        body = bytearray()
        async for chunk in request.stream():
            body += chunk
            if len(body) > limit:
                raise RequestRejected(413, f"the request body is larger than {limit} bytes")
        return bytes(body)

    async def _parse(self, request: Any) -> tuple[ChatRequest, list[dict[str, Any]]]:
        body = await self._body(request)
        try:
            data = json.loads(body)
        except (ValueError, RecursionError):
            raise RequestRejected(400, "the request body is not JSON") from None
        parsed = parse_request(data, self.limits)
        chat = parsed.chat()
        size = sum(len(m["content"]) for m in chat)
        if size > self.max_prompt_tokens * 16:  # no tokenizer yields fewer than 1 token per 16 characters
            tokens = size // 16
        else:  # tokenizing is CPU work: off the event loop
            tokens = await asyncio.to_thread(self.count_tokens, chat)
        if tokens > self.max_prompt_tokens:
            raise RequestRejected(
                400, f"the prompt has about {tokens} tokens; this server allows {self.max_prompt_tokens}", "messages"
            )
        return parsed, chat

    async def completions(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        if not self.authorized(request):
            return _error(401, _AUTH, "authentication_error")
        try:
            parsed, chat = await self._parse(request)
        except RequestRejected as err:
            kind = "invalid_request_error" if err.status == 400 else "request_too_large"
            return _error(err.status, str(err), kind, err.param)
        params = parsed.params()
        created = int(time.time())
        if parsed.stream:
            usage = bool(parsed.stream_options and parsed.stream_options.include_usage)
            return _stream_response()(
                self._stream(chat, params, created, usage), media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )  # fmt: skip
        try:
            result = await _unless_client_leaves(request, self.guard.ainvoke(chat, **params))
        except _ClientGone:
            return _error(499, "client closed the request", "client_closed")  # nobody reads it; the work stopped
        except GuardrailError as err:
            status, body = _error_of(err)
            return _error(status, body.pop("message"), body.pop("type"), **body)
        return JSONResponse(
            {
                "id": f"chatcmpl-{result.request_id}",
                "object": "chat.completion",
                "created": created,
                "model": self.model_name,
                "choices": [
                    {
                        "index": 0,
                        "message": _message(result),
                        "finish_reason": _finish(result),
                    }
                ],
                "usage": {
                    "prompt_tokens": 0,
                    "completion_tokens": result.completion_tokens,
                    "total_tokens": result.completion_tokens,
                },
                "guardrail": result.summary(),
            }
        )

    def _chunk(self, ident: str, created: int, delta: dict[str, Any], finish: str | None = None, **extra: Any) -> str:
        data = {
            "id": ident, "object": "chat.completion.chunk", "created": created, "model": self.model_name,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra,
        }  # fmt: skip
        return f"data: {json.dumps(data, ensure_ascii=False)}\n\n"

    async def _stream(
        self, chat: list[dict[str, Any]], params: dict[str, Any], created: int, usage: bool
    ) -> AsyncIterator[str]:
        ident = f"chatcmpl-{time.time_ns():x}"
        yield self._chunk(ident, created, {"role": "assistant", "content": ""})
        events = self.guard.astream(chat, **params)
        try:
            async for event in events:
                if isinstance(event, TextEvent) and event.text:
                    yield self._chunk(ident, created, {"content": event.text})
                elif isinstance(event, FinalEvent):
                    result = event.result
                    if result.tool_calls:  # released only now: judged once whole
                        calls = [{"index": n, **call.to_openai()} for n, call in enumerate(result.tool_calls)]
                        yield self._chunk(ident, created, {"tool_calls": calls})
                    extra: dict[str, Any] = {"guardrail": result.summary()}
                    if usage:
                        extra["usage"] = {"prompt_tokens": 0, "completion_tokens": result.completion_tokens,
                                          "total_tokens": result.completion_tokens}  # fmt: skip
                    yield self._chunk(ident, created, {}, _finish(result), **extra)
        except GuardrailError as err:
            _, body = _error_of(err)
            yield f"data: {json.dumps({'error': {**body, 'param': None, 'code': None}})}\n\n"
        finally:
            await events.aclose()  # type: ignore[attr-defined]  # a disconnect lands here: upstream work stops
        yield "data: [DONE]\n\n"


async def _unless_client_leaves(request: Any, work: Coroutine[Any, Any, T]) -> T:
    """Await ``work``, cancelling it (and so the guard, the upstream request, the local generation) when the
    client disconnects first."""
    task = asyncio.ensure_future(work)

    async def client_left() -> None:
        while (await request.receive())["type"] != "http.disconnect":
            pass

    watcher = asyncio.ensure_future(client_left())
    try:
        await asyncio.wait({task, watcher}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for pending in (task, watcher):
            if not pending.done():
                pending.cancel()
        await asyncio.gather(task, watcher, return_exceptions=True)
    if task.cancelled():
        raise _ClientGone
    return task.result()


def _stream_response() -> Any:
    """A StreamingResponse that notices a client leaving while nothing is being sent, and always closes its
    body iterator, so the guard (and through it the upstream request) stops at once."""
    from starlette.responses import StreamingResponse

    class DisconnectAwareStream(StreamingResponse):
        async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
            streaming = asyncio.ensure_future(self.stream_response(send))
            listening = asyncio.ensure_future(self.listen_for_disconnect(receive))
            try:
                await asyncio.wait({streaming, listening}, return_when=asyncio.FIRST_COMPLETED)
            finally:
                for task in (streaming, listening):
                    task.cancel()
                await asyncio.gather(streaming, listening, return_exceptions=True)
                close = getattr(self.body_iterator, "aclose", None)
                if close is not None:
                    await close()

    return DisconnectAwareStream


def create_app(
    guard: Guard, *, model_name: str = "guarded", api_keys: Iterable[str] = (), limits: ServerLimits | None = None
) -> Any:
    """The ASGI app (Starlette) serving ``guard`` under ``/v1``; ``limits`` bound each request.

    Example::

        app = create_app(Guard("harmless", OpenAIBackend(upstream)), api_keys=["secret"])
        uvicorn.run(app, host="127.0.0.1", port=8000)
    """
    try:
        from starlette.applications import Starlette
        from starlette.responses import JSONResponse
        from starlette.routing import Route
    except ImportError:
        raise GuardrailError("guardrail serve needs the serve extra: pip install 'guardrail-rewind[serve]'") from None
    handler = _Handler(guard, model_name, api_keys, limits or ServerLimits())

    draining = asyncio.Event()

    async def health(_: Any) -> Any:
        """Liveness: the process answers (nothing else is checked)."""
        return JSONResponse({"status": "ok", "policy": guard.policy.name})

    async def ready(_: Any) -> Any:
        """Readiness: the guard is built (policy, judges loaded), the upstream answers, and the server is not
        shutting down; a load balancer sends traffic only while this is 200."""
        reason = "shutting down" if draining.is_set() else await guard.backend.aready()
        if reason is not None:
            return JSONResponse({"status": "not ready", "reason": reason}, status_code=503)
        return JSONResponse({"status": "ready", "policy": guard.policy.name})

    @contextlib.asynccontextmanager
    async def lifespan(_: Any) -> AsyncIterator[None]:
        yield
        draining.set()

    app = Starlette(
        routes=[
            Route("/v1/models", handler.models, methods=["GET"]),
            Route("/v1/chat/completions", handler.completions, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
            Route("/ready", ready, methods=["GET"]),
        ],
        lifespan=lifespan,
    )
    app.state.draining = draining  # set by ``guardrail serve`` when a shutdown signal arrives
    return app
