"""The commands of the ``guardrail`` CLI, one module each."""
