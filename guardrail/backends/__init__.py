"""Model backends: a local transformers model, and OpenAI-compatible HTTP APIs."""
