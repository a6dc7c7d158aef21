"""An OpenAI-compatible HTTP server that guards every answer: ``guardrail serve``.

Apps in any language use the guard by changing a base URL. ``POST /v1/chat/completions`` (streaming and
not) and ``GET /v1/models``; the verdict and rewind summary rides in a ``guardrail`` extension field (of the
response, and of the last streamed chunk); only verified text is streamed. Optional API keys for clients
(``Authorization: Bearer``). A client that disconnects mid-stream cancels its upstream work. Needs the
``serve`` extra (starlette, uvicorn).
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
from collections.abc import AsyncIterator, Iterable
from typing import Any

from guardrail.errors import BackendError, GuardrailError, GuardrailViolation
from guardrail.events import FinalEvent, GuardResult, TextEvent
from guardrail.guard import Guard

__all__ = ["create_app"]


def _error(status: int, message: str, kind: str, **extra: Any) -> Any:
    from starlette.responses import JSONResponse

    return JSONResponse({"error": {"message": message, "type": kind, **extra}}, status_code=status)


def _text_of(content: Any) -> str:
    """OpenAI message content: a string, or a list of parts of which the text parts count."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(str(p.get("text", "")) for p in content if isinstance(p, dict) and p.get("type") == "text")
    return "" if content is None else str(content)


def _finish(result: GuardResult) -> str:
    return "content_filter" if result.fallback is not None and result.fallback.action in {"refuse", "raise"} else "stop"


class _Handler:
    def __init__(self, guard: Guard, model_name: str, api_keys: Iterable[str]) -> None:
        self.guard = guard
        self.model_name = model_name
        self.api_keys = [key.encode() for key in api_keys if key]

    def authorized(self, request: Any) -> bool:
        if not self.api_keys:
            return True
        header = request.headers.get("authorization", "")
        token = header[7:].strip().encode() if header.lower().startswith("bearer ") else b""
        return any(hmac.compare_digest(token, key) for key in self.api_keys)

    async def models(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        if not self.authorized(request):
            return _error(401, "missing or wrong API key (Authorization: Bearer ...)", "authentication_error")
        return JSONResponse(
            {
                "object": "list",
                "data": [{"id": self.model_name, "object": "model", "created": 0, "owned_by": "guardrail"}],
            }
        )

    async def completions(self, request: Any) -> Any:
        from starlette.responses import JSONResponse

        if not self.authorized(request):
            return _error(401, "missing or wrong API key (Authorization: Bearer ...)", "authentication_error")
        try:
            body = json.loads(await request.body())
        except ValueError:
            return _error(400, "the request body is not JSON", "invalid_request_error")
        messages = body.get("messages") if isinstance(body, dict) else None
        if not isinstance(messages, list) or not messages or not all(isinstance(m, dict) for m in messages):
            return _error(400, "'messages' must be a non-empty list of {role, content}", "invalid_request_error")
        chat = [{"role": str(m.get("role", "user")), "content": _text_of(m.get("content"))} for m in messages]
        params: dict[str, Any] = {}
        for key in ("temperature", "seed", "stop"):
            if body.get(key) is not None:
                params[key] = body[key]
        limit = body.get("max_tokens") or body.get("max_completion_tokens")
        if limit is not None:
            params["max_tokens"] = int(limit)
        created = int(time.time())
        if body.get("stream"):
            usage = bool((body.get("stream_options") or {}).get("include_usage"))
            return _stream_response()(
                self._stream(chat, params, created, usage), media_type="text/event-stream",
                headers={"Cache-Control": "no-cache"},
            )  # fmt: skip
        try:
            result = await self.guard.ainvoke(chat, **params)
        except GuardrailViolation as err:
            return _error(400, str(err), "guardrail_violation", rules=list(err.rules))
        except BackendError as err:
            return _error(502, str(err), "upstream_error")
        except GuardrailError as err:
            return _error(400, str(err), "invalid_request_error")
        return JSONResponse(
            {
                "id": f"chatcmpl-{result.request_id}",
                "object": "chat.completion",
                "created": created,
                "model": self.model_name,
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": result.text},
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
        self, chat: list[dict[str, str]], params: dict[str, Any], created: int, usage: bool
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
                    extra: dict[str, Any] = {"guardrail": result.summary()}
                    if usage:
                        extra["usage"] = {"prompt_tokens": 0, "completion_tokens": result.completion_tokens,
                                          "total_tokens": result.completion_tokens}  # fmt: skip
                    yield self._chunk(ident, created, {}, _finish(result), **extra)
        except GuardrailViolation as err:
            error = {"message": str(err), "type": "guardrail_violation", "rules": list(err.rules)}
            yield f"data: {json.dumps({'error': error})}\n\n"
        except BackendError as err:
            yield f"data: {json.dumps({'error': {'message': str(err), 'type': 'upstream_error'}})}\n\n"
        finally:
            await events.aclose()  # type: ignore[attr-defined]  # a disconnect lands here: upstream work stops
        yield "data: [DONE]\n\n"


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


def create_app(guard: Guard, *, model_name: str = "guarded", api_keys: Iterable[str] = ()) -> Any:
    """The ASGI app (Starlette) serving ``guard`` under ``/v1``.

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
    handler = _Handler(guard, model_name, api_keys)

    async def health(_: Any) -> Any:
        return JSONResponse({"status": "ok", "policy": guard.policy.name})

    return Starlette(
        routes=[
            Route("/v1/models", handler.models, methods=["GET"]),
            Route("/v1/chat/completions", handler.completions, methods=["POST"]),
            Route("/health", health, methods=["GET"]),
        ]
    )
