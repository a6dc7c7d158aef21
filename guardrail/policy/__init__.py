"""Policies: the schema, YAML loading with located errors, and the built-in policies."""

from guardrail.policy.loader import builtin_policy_names, load_policy, parse_policy
from guardrail.policy.schema import (
    Action,
    AuditSettings,
    Examples,
    FlagAction,
    JudgeSettings,
    NamedJudge,
    Policy,
    RainSettings,
    RaiseAction,
    RedactAction,
    RefuseAction,
    RewindAction,
    RewindSettings,
    Rule,
)

__all__ = [
    "Action",
    "AuditSettings",
    "Examples",
    "FlagAction",
    "JudgeSettings",
    "NamedJudge",
    "Policy",
    "RainSettings",
    "RaiseAction",
    "RedactAction",
    "RefuseAction",
    "RewindAction",
    "RewindSettings",
    "Rule",
    "builtin_policy_names",
    "load_policy",
    "parse_policy",
]
