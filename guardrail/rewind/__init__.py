"""Rewind strategies: sentence-level (any streaming backend) and token-level (local transformers models)."""
