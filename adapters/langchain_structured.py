"""``with_structured_output`` for the guarded LangChain chat model: the answer is judged, then parsed.

Three methods, as in LangChain's OpenAI model: ``function_calling`` forces a call to the schema's tool (its
arguments are the answer, judged by the output rules and the ``tool_arguments`` rules), ``json_schema`` and
``json_mode`` bind ``response_format`` on the inner model (the JSON text is judged like any answer). The
parsed value is a pydantic object for a pydantic schema, else a dict. An answer that is not the structure asked
for raises ``OutputParserException``; it is never a silent None.
"""

from __future__ import annotations

from operator import itemgetter
from typing import Any

from langchain_core.exceptions import OutputParserException
from langchain_core.language_models import BaseChatModel, LanguageModelInput
from langchain_core.messages import AIMessage
from langchain_core.output_parsers import JsonOutputParser, PydanticOutputParser
from langchain_core.output_parsers.openai_tools import JsonOutputKeyToolsParser, PydanticToolsParser
from langchain_core.runnables import Runnable, RunnableLambda, RunnableMap, RunnablePassthrough
from langchain_core.utils.function_calling import convert_to_openai_tool
from langchain_core.utils.pydantic import is_basemodel_subclass

__all__ = ["METHODS", "structured_output"]

METHODS = ("function_calling", "json_schema", "json_mode")


def _required(what: str) -> RunnableLambda[Any, Any]:
    def check(value: Any) -> Any:
        if value is None:
            raise OutputParserException(f"the model gave no {what}; the answer cannot be parsed")
        return value

    return RunnableLambda(check)


def _parser(schema: Any, method: str, name: str) -> Runnable[AIMessage, Any]:
    pydantic = isinstance(schema, type) and is_basemodel_subclass(schema)
    if method == "function_calling":
        tools: Runnable[AIMessage, Any] = (
            PydanticToolsParser(tools=[schema], first_tool_only=True)
            if pydantic
            else JsonOutputKeyToolsParser(key_name=name, first_tool_only=True)
        )
        return tools | _required(f"call to {name!r}")
    if pydantic:
        return PydanticOutputParser(pydantic_object=schema)
    return JsonOutputParser() | _required("JSON answer")


def structured_output(
    model: BaseChatModel, schema: Any, *, method: str = "function_calling", include_raw: bool = False, **kwargs: Any
) -> Runnable[LanguageModelInput, Any]:
    """``model.with_structured_output(schema, method=..., include_raw=...)`` for a guarded model."""
    kwargs.pop("strict", None)
    if kwargs:
        raise ValueError(f"with_structured_output got unsupported arguments: {sorted(kwargs)}")
    if method not in METHODS:
        raise ValueError(f"unknown method {method!r}; choose one of {', '.join(METHODS)}")
    if schema is None and method != "json_mode":
        raise ValueError(f"method {method!r} needs a schema (or use method='json_mode')")
    tool = convert_to_openai_tool(schema) if schema is not None else None
    name = tool["function"]["name"] if tool else "answer"
    traced = {"kwargs": {"method": method}, "schema": schema}
    if method == "function_calling":
        llm = model.bind_tools([schema], tool_choice=name, structured_output=True, ls_structured_output_format=traced)
    elif method == "json_schema":
        assert tool is not None
        function = tool["function"]
        response_format = {
            "type": "json_schema",
            "json_schema": {"name": name, "schema": function.get("parameters", {}), "strict": False},
        }
        llm = model.bind(response_format=response_format, ls_structured_output_format=traced)
    else:
        llm = model.bind(response_format={"type": "json_object"}, ls_structured_output_format=traced)
    parser = _parser(schema, method, name)
    if not include_raw:
        return llm | parser
    parsed = RunnablePassthrough.assign(parsed=itemgetter("raw") | parser, parsing_error=lambda _: None)
    unparsed = RunnablePassthrough.assign(parsed=lambda _: None)
    return RunnableMap(raw=llm) | parsed.with_fallbacks([unparsed], exception_key="parsing_error")
