"""Built-in policy files (package data of ``guardrail.policies``); load them with ``load_policy(name)``."""
