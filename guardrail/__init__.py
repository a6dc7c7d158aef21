"""guardrail-rewind: a guardrail that rewinds and regenerates instead of only blocking.

Example::

    from guardrail import load_policy
    policy = load_policy("harmless")

Importing this package loads no ML framework: torch, transformers, LangChain and LlamaIndex are imported
only by the pieces that need them.
"""

from guardrail.errors import (
    BackendError,
    GuardrailError,
    GuardrailViolation,
    JudgeError,
    PolicyError,
    PolicyIssue,
)
from guardrail.policy import Policy, Rule, builtin_policy_names, load_policy, parse_policy
from guardrail.taxonomy import CATEGORIES

__version__ = "0.1.0"

__all__ = [
    "CATEGORIES",
    "BackendError",
    "GuardrailError",
    "GuardrailViolation",
    "JudgeError",
    "Policy",
    "PolicyError",
    "PolicyIssue",
    "Rule",
    "__version__",
    "builtin_policy_names",
    "load_policy",
    "parse_policy",
]
