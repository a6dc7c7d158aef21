"""guardrail-rewind: a guardrail that rewinds and regenerates instead of only blocking.

Example::

    from guardrail import Guard, OpenAIBackend
    guard = Guard("harmless", OpenAIBackend("http://127.0.0.1:8080/v1", model="smollm2"))
    print(guard.invoke("How do I bake bread?").text)

Importing this package loads no ML framework: torch, transformers, LangChain and LlamaIndex are imported
only by the pieces that need them.
"""

from guardrail.audit import AuditSink
from guardrail.backends.base import Chunk, GenerationParams, Message, StreamingBackend
from guardrail.backends.local import LocalBackend
from guardrail.backends.remote import OpenAIBackend
from guardrail.errors import (
    AuditError,
    BackendError,
    GuardrailError,
    GuardrailViolation,
    JudgeError,
    PolicyError,
    PolicyIssue,
)
from guardrail.events import (
    FallbackEvent,
    FinalEvent,
    GuardResult,
    RewindEvent,
    TerminatedEvent,
    TextEvent,
    VerdictEvent,
)
from guardrail.guard import Guard
from guardrail.judges import Judge, Verdict, build_judge
from guardrail.policy import Policy, Rule, builtin_policy_names, load_policy, parse_policy
from guardrail.taxonomy import CATEGORIES
from guardrail.tool_calls import ToolCall

__version__ = "0.1.0"

__all__ = [
    "CATEGORIES",
    "AuditError",
    "AuditSink",
    "BackendError",
    "Chunk",
    "FallbackEvent",
    "FinalEvent",
    "GenerationParams",
    "Guard",
    "GuardResult",
    "GuardrailError",
    "GuardrailViolation",
    "Judge",
    "JudgeError",
    "LocalBackend",
    "Message",
    "OpenAIBackend",
    "Policy",
    "PolicyError",
    "PolicyIssue",
    "RewindEvent",
    "Rule",
    "StreamingBackend",
    "TerminatedEvent",
    "TextEvent",
    "ToolCall",
    "Verdict",
    "VerdictEvent",
    "__version__",
    "build_judge",
    "builtin_policy_names",
    "load_policy",
    "parse_policy",
]
