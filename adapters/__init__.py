"""Framework adapters, importable as ``guardrail.adapters.langchain`` and ``guardrail.adapters.llama_index``.

Each adapter imports its framework; the core package (``guardrail``) never does.
"""
