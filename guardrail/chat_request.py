"""The OpenAI chat-completions request that ``guardrail serve`` accepts, validated field by field, and the
server's bounds on it.

Every field the guard uses is typed strictly (``stream: "false"`` is an error, not a truthy string; a
``max_tokens`` of ``1e400`` or ``"abc"`` is an error, not a 500); fields the guard does not use are accepted
and ignored, as OpenAI-compatible servers do. Strings must be valid Unicode (a lone surrogate is a 400).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictFloat, StrictInt, StrictStr, ValidationError

__all__ = ["ChatMessage", "ChatRequest", "RequestRejected", "ServerLimits", "parse_request"]


@dataclass(frozen=True)
class ServerLimits:
    """What one request may ask of ``guardrail serve``. ``max_prompt_tokens=None``: the backend's context."""

    max_body_bytes: int = 4 << 20
    max_messages: int = 256
    max_prompt_tokens: int | None = None
    max_tokens: int = 4096


class RequestRejected(ValueError):
    """A request the server refuses: HTTP status, message, and the parameter at fault (OpenAI error shape)."""

    def __init__(self, status: int, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.param = param


#: request fields handed upstream as they are (tools and structured output); the guard judges what comes back
_FORWARDED = ("tools", "tool_choice", "parallel_tool_calls", "response_format")
_MESSAGE_FIELDS = ("tool_calls", "tool_call_id", "name")


class _Open(BaseModel):
    model_config = ConfigDict(extra="allow", frozen=True)


class ContentPart(_Open):
    type: StrictStr
    text: StrictStr | None = None


class ChatMessage(_Open):
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: StrictStr | list[ContentPart] | None = None

    def text(self) -> str:
        """The message's text: a string, or its text parts joined."""
        if isinstance(self.content, str):
            return self.content
        if self.content is None:
            return ""
        return "".join(part.text or "" for part in self.content if part.type == "text")


class StreamOptions(_Open):
    include_usage: StrictBool = False


Number = Annotated[StrictFloat | StrictInt, Field(allow_inf_nan=False)]


class ChatRequest(_Open):
    messages: list[ChatMessage] = Field(min_length=1)
    model: StrictStr | None = None
    stream: StrictBool = False
    stream_options: StreamOptions | None = None
    max_tokens: StrictInt | None = Field(None, ge=1)
    max_completion_tokens: StrictInt | None = Field(None, ge=1)
    temperature: Number | None = Field(None, ge=0, le=2)
    seed: StrictInt | None = None
    stop: StrictStr | list[StrictStr] | None = None
    n: StrictInt | None = Field(None, ge=1, le=1)

    def params(self) -> dict[str, Any]:
        """The generation parameters the guard takes (keyword arguments of ``Guard.ainvoke``)."""
        params: dict[str, Any] = {}
        if self.temperature is not None:
            params["temperature"] = float(self.temperature)
        if self.seed is not None:
            params["seed"] = self.seed
        if self.stop:
            params["stop"] = [self.stop] if isinstance(self.stop, str) else list(self.stop)
        limit = self.max_tokens or self.max_completion_tokens
        if limit is not None:
            params["max_tokens"] = limit
        extra = self.model_extra or {}
        params.update({key: extra[key] for key in _FORWARDED if extra.get(key) is not None})
        return params

    def chat(self) -> list[dict[str, Any]]:
        """The messages for the guard: role and text, and a tool conversation's ids and calls as they came."""
        out: list[dict[str, Any]] = []
        for message in self.messages:
            entry: dict[str, Any] = {"role": message.role, "content": message.text()}
            extra = message.model_extra or {}
            entry.update({key: extra[key] for key in _MESSAGE_FIELDS if extra.get(key) is not None})
            out.append(entry)
        return out


def parse_request(data: Any, limits: ServerLimits) -> ChatRequest:
    """``data`` (decoded JSON) as a ``ChatRequest`` within ``limits``; ``RequestRejected`` says what is wrong."""
    if not isinstance(data, dict):
        raise RequestRejected(400, "the request body must be a JSON object")
    messages = data.get("messages")
    if isinstance(messages, list) and len(messages) > limits.max_messages:
        raise RequestRejected(
            400, f"{len(messages)} messages; this server accepts at most {limits.max_messages}", "messages"
        )
    bad = _invalid_string(data)
    if bad is not None:
        raise RequestRejected(400, "a string in the request is not valid Unicode (a lone surrogate)", bad or None)
    try:
        request = ChatRequest.model_validate(data)
    except ValidationError as err:
        first = err.errors()[0]
        where = ".".join(str(part) for part in first["loc"])
        raise RequestRejected(400, f"{where}: {first['msg']}", where) from None
    limit = request.max_tokens or request.max_completion_tokens
    if limit is not None and limit > limits.max_tokens:
        raise RequestRejected(
            400, f"max_tokens is {limit}; this server allows at most {limits.max_tokens}", "max_tokens"
        )
    return request


def _invalid_string(value: Any, where: str = "") -> str | None:
    """The location of the first string that cannot be encoded as UTF-8 (a lone surrogate), or None."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return where
        return None
    if isinstance(value, dict):
        items: Any = value.items()
    elif isinstance(value, list):
        items = enumerate(value)
    else:
        return None
    for key, item in items:
        if isinstance(key, str) and _invalid_string(key) is not None:
            return where
        found = _invalid_string(item, f"{where}.{key}" if where else str(key))
        if found is not None:
            return found
    return None
