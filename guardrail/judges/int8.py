"""The judge's int8 encoder, batched exactly: a window's features in a padded batch are bit for bit its own.

torch's dynamic int8 quantization (``quantize_dynamic``: int8 weights, activations quantized on the fly with one
scale per call, fbgemm on x86) is what the shipped heads were trained and thresholded on. One scale per call
means that in a padded batch a window's activations are scaled by its neighbours' and padding's range too, so
its score moved with them (by up to 0.24 measured), and the judge used to run one window a forward pass.

``quantize`` keeps torch's quantized layers and their arithmetic but runs each sequence of a batch through
them on its own real tokens (``Int8Context``: padding at the end of each row), and swaps the attention for
``row_attention``, which attends one sequence at a time over its real tokens. Every other operation of the
encoder works token by token, so a batch gives each window exactly the features it gets alone, which are
exactly what torch's quantized model gives it (tests/test_int8.py): batches are exact, the heads need no
retraining, and a verdict stays a function of its own text whatever the judge scores beside it.
"""

from __future__ import annotations

import contextlib
import functools
import warnings
from collections.abc import Iterator
from typing import Any

__all__ = ["ATTENTION", "ROW_ATTENTION_MODELS", "Int8Context", "quantize", "row_attention"]

#: the name ``row_attention`` is registered under with transformers' ``AttentionInterface``
ATTENTION = "guardrail_int8_rows"
#: model types whose attention goes through ``AttentionInterface`` (so ``row_attention`` runs); others (MPNet,
#: with its own attention and relative position bias) attend over the padded batch, whose rounding int8 amplifies:
#: their windows are encoded one a forward pass (measured: up to 0.31 feature difference batched, 0 alone)
ROW_ATTENTION_MODELS = frozenset({"bert"})


class Int8Context:
    """The real length of each row of the padded batch being encoded, shared by an encoder's layers."""

    def __init__(self) -> None:
        self.lengths: list[int] | None = None

    @contextlib.contextmanager
    def batch(self, mask: Any) -> Iterator[None]:
        """Encode one padded batch with attention ``mask`` ([batch, tokens], 1 for real tokens, padding last)."""
        self.lengths = [int(n) for n in mask.sum(dim=1).tolist()]
        try:
            yield
        finally:
            self.lengths = None

    def rows(self, batch: int, tokens: int) -> list[int] | None:
        """Each row's real length (None: not encoding a batch of this shape through ``batch``)."""
        lengths = self.lengths
        if lengths is None and batch == 1:
            return [tokens]
        return lengths if lengths is not None and len(lengths) == batch else None


def _rows_forward(forward: Any, context: Int8Context, x: Any) -> Any:
    """A quantized linear layer's ``forward`` run on each sequence's real tokens on its own."""
    lengths = context.rows(x.shape[0], x.shape[1]) if x.dim() == 3 else None
    if lengths is None or lengths == [x.shape[1]]:  # one whole sequence, or a batch the caller did not describe
        return forward(x)
    out = None
    for row, length in enumerate(lengths):
        piece = forward(x[row, :length])
        if out is None:
            out = x.new_empty(x.shape[0], x.shape[1], piece.shape[-1])
        out[row, :length] = piece
        out[row, length:] = 0  # padding: finite, never read by a real token
    return out


def row_attention(
    module: Any, query: Any, key: Any, value: Any, attention_mask: Any, *, scaling: float | None = None, **_: Any
) -> tuple[Any, None]:
    """Attention one sequence at a time over its real tokens (the lengths in the ``Int8Context`` of ``module``'s
    projections): the same computation as that sequence alone, so padding cannot move its result by a rounding
    (which int8 would amplify). Returns ``[batch, tokens, heads, head size]`` as transformers' attention
    functions do."""
    import torch

    batch, tokens = query.shape[0], query.shape[2]
    contexts = [child.row_context for child in module.children() if hasattr(child, "row_context")]
    lengths = contexts[0].rows(batch, tokens) if contexts else None
    if lengths is None:  # a batch encoded outside ``Int8Context.batch``: transformers' mask, as sdpa does
        out = torch.nn.functional.scaled_dot_product_attention(
            query, key, value, attn_mask=attention_mask, scale=scaling
        )
        return out.transpose(1, 2).contiguous(), None
    out = query.new_empty(batch, tokens, query.shape[1], value.shape[-1])
    for row, length in enumerate(lengths):
        out[row, length:] = 0
        piece = torch.nn.functional.scaled_dot_product_attention(
            query[row : row + 1, :, :length], key[row : row + 1, :, :length], value[row : row + 1, :, :length],
            scale=scaling,
        )  # fmt: skip
        out[row, :length] = piece[0].transpose(0, 1)
    return out, None


def quantize(model: Any, context: Int8Context) -> Any:
    """``model`` with its ``nn.Linear`` layers dynamically quantized to int8 and run row by row (each has a
    ``row_context``), and its attention ``row_attention`` where it takes transformers' attention functions.
    Where torch has no quantized engine (or no eager quantization any more) the model stays float32, as it was."""
    import torch

    quantization = getattr(getattr(torch, "ao", None), "quantization", None)
    if quantization is None or not hasattr(quantization, "quantize_dynamic"):
        return model
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch deprecates the eager API; the layers it builds are what we need
        try:
            quantized = quantization.quantize_dynamic(model, {torch.nn.Linear}, dtype=torch.qint8)
        except (RuntimeError, NotImplementedError):  # no quantized engine on this CPU
            return model
    for layer in quantized.modules():
        if isinstance(layer, torch.ao.nn.quantized.dynamic.Linear):
            setattr(layer, "forward", functools.partial(_rows_forward, layer.forward, context))  # noqa: B010
            setattr(layer, "row_context", context)  # noqa: B010
    config = getattr(quantized, "config", None)
    if config is not None and hasattr(config, "_attn_implementation"):
        from transformers import AttentionInterface, AttentionMaskInterface
        from transformers.masking_utils import sdpa_mask

        AttentionInterface.register(ATTENTION, row_attention)
        AttentionMaskInterface.register(ATTENTION, sdpa_mask)  # masks as sdpa takes them (used outside ``batch``)
        config._attn_implementation = ATTENTION
    return quantized
