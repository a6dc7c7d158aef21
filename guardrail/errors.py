"""Typed errors. Each one says what went wrong and what to do about it."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "AuditError",
    "BackendError",
    "GuardrailError",
    "GuardrailViolation",
    "JudgeError",
    "PolicyError",
    "PolicyIssue",
]


class GuardrailError(Exception):
    """Base class of every error this package raises on purpose."""


@dataclass(frozen=True)
class PolicyIssue:
    """One problem in a policy file, located as precisely as the source allows."""

    source: str
    message: str
    line: int | None = None
    column: int | None = None
    path: str = ""

    def __str__(self) -> str:
        where = self.source
        if self.line is not None:
            where += f":{self.line}"
            if self.column is not None:
                where += f":{self.column}"
        field = f" {self.path}:" if self.path else ""
        return f"{where}:{field} {self.message}"


class PolicyError(GuardrailError):
    """A policy file or policy object is invalid; every issue names file, line, column and field.

    Example::

        try:
            load_policy("app.yaml")
        except PolicyError as err:
            for issue in err.issues:
                print(issue)   # app.yaml:12:5: rules[2].threshold: must be between 0 and 1, got 1.5
    """

    def __init__(self, issues: list[PolicyIssue] | PolicyIssue) -> None:
        self.issues: list[PolicyIssue] = issues if isinstance(issues, list) else [issues]
        super().__init__("\n".join(str(issue) for issue in self.issues))


class BackendError(GuardrailError):
    """The model backend failed (connection, HTTP status, malformed stream, missing package).

    ``str(err)`` is the whole story, for the operator's log (credentials masked); ``public`` is a short summary
    safe to show a client of ``guardrail serve`` (a status and a reason, never upstream text, URLs or paths).
    """

    def __init__(self, message: str, *, public: str = "the upstream model failed") -> None:
        self.public = public
        super().__init__(message)


class AuditError(GuardrailError):
    """An audit record could not be written, or the audit file cannot be opened; the message says where."""


class JudgeError(GuardrailError):
    """A judge could not produce a verdict (missing model, malformed answer the policy cannot handle)."""


class GuardrailViolation(GuardrailError):
    """The policy's action ladder ended in ``raise``: the answer violated the policy and was not repaired."""

    def __init__(self, message: str, *, rules: tuple[str, ...] = (), score: float | None = None) -> None:
        self.rules = rules
        self.score = score
        super().__init__(message)
