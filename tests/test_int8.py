"""The judge's int8 encoder: close to float32, and a window's features in a padded batch are bit for bit those it
gets alone and those torch's quantized model gives it (so the judge batches windows of concurrent requests
without a verdict depending on them, and the heads trained on torch's numerics stay valid)."""

from __future__ import annotations

from typing import Any

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from guardrail.judges import int8  # noqa: E402
from guardrail.judges.int8 import Int8Context  # noqa: E402


def tiny_bert() -> Any:
    torch.manual_seed(0)
    config = transformers.BertConfig(
        vocab_size=200, hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=256,
        max_position_embeddings=128,
    )  # fmt: skip
    return transformers.BertModel(config).eval()


def encode(model: Any, context: Int8Context, rows: list[list[int]]) -> Any:
    """Mean-pooled last hidden states of ``rows`` in one padded batch (padding at the end, as the judge pads)."""
    width = max(len(r) for r in rows)
    ids = torch.zeros(len(rows), width, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    with torch.inference_mode(), context.batch(mask):
        hidden = model(input_ids=ids, attention_mask=mask).last_hidden_state
    weights = mask.unsqueeze(-1).float()
    return (hidden * weights).sum(1) / weights.sum(1)


def quantized_bert() -> tuple[Any, Int8Context]:
    context = Int8Context()
    return int8.quantize(tiny_bert(), context), context


def test_the_encoder_is_int8_and_close_to_float() -> None:
    model, context = quantized_bert()
    assert not any(type(m) is torch.nn.Linear for m in model.modules())
    assert sum(hasattr(m, "row_context") for m in model.modules()) == 3 * 6 + 1  # q k v o up down, pooler
    rows = [[2, 5, 9, 11, 3], list(range(4, 60))]
    quantized = encode(model, context, rows)
    reference = encode(tiny_bert(), Int8Context(), rows)
    similarity = torch.nn.functional.cosine_similarity(quantized, reference)
    assert bool((similarity > 0.98).all()) and not torch.equal(quantized, reference)


def test_padding_cannot_widen_a_sequences_activation_range() -> None:
    torch.manual_seed(0)
    context = Int8Context()
    layer = int8.quantize(torch.nn.Sequential(torch.nn.Linear(32, 16)), context)
    small, large = torch.randn(1, 5, 32), torch.randn(1, 9, 32) * 50
    padded = torch.zeros(2, 9, 32)
    padded[0, :5], padded[1] = small[0], large[0]
    padded[0, 5:] = 1e4  # padding far outside the small sequence's range
    mask = torch.tensor([[1] * 5 + [0] * 4, [1] * 9])
    with torch.inference_mode():
        alone = [layer(small), layer(large)]
        with context.batch(mask):
            together = layer(padded)
    assert torch.equal(together[0, :5], alone[0][0])
    assert torch.equal(together[1], alone[1][0])


@pytest.mark.filterwarnings("ignore::DeprecationWarning", "ignore::UserWarning")
def test_a_sequence_gets_the_same_bits_alone_in_a_padded_batch_and_from_torchs_quantized_model() -> None:
    model, context = quantized_bert()
    rows = [[2, 5, 9, 11, 3], list(range(4, 60)), [7] * 17, list(range(100, 131)), [9] * 17, [3] * 17]
    alone = torch.cat([encode(model, context, [r]) for r in rows])
    assert torch.equal(alone[[2, 4, 5]], encode(model, context, [rows[2], rows[4], rows[5]]))  # no padding at all
    assert torch.equal(alone, encode(model, context, rows))
    assert torch.equal(alone, encode(model, context, rows[::-1]).flip(0))
    # torch's own dynamic quantization, one sequence a call: what the shipped heads were trained on
    reference = torch.ao.quantization.quantize_dynamic(tiny_bert(), {torch.nn.Linear}, dtype=torch.qint8)
    assert torch.equal(alone, torch.cat([encode(reference, Int8Context(), [r]) for r in rows]))


def test_without_a_quantized_engine_the_encoder_stays_float(monkeypatch: Any) -> None:
    def missing(*_: Any, **__: Any) -> Any:
        raise RuntimeError("Didn't find engine for operation quantized::linear_prepack NoQEngine")

    monkeypatch.setattr(torch.ao.quantization, "quantize_dynamic", missing)
    model, context = quantized_bert()
    rows = [[2, 5, 9, 11, 3]]
    assert torch.equal(encode(model, context, rows), encode(tiny_bert(), Int8Context(), rows))


def test_windows_are_batched_with_similar_lengths() -> None:
    from guardrail.judges.embedding import _similar_lengths

    lengths = [200, 30, 31, 250, 32, 33, 34, 35]
    batches = _similar_lengths(lengths, batch_size=3)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))  # every window once
    assert batches == [[1, 2, 4], [5, 6, 7], [0, 3]]  # shortest first, at most 3, no 30 padded to 200
    for batch in batches:
        widest = max(lengths[i] for i in batch)
        assert widest * len(batch) <= 1.25 * sum(lengths[i] for i in batch)


def test_a_padded_batch_encoded_outside_the_context_still_masks_its_padding() -> None:
    model, context = quantized_bert()
    rows = [[2, 5, 9, 11, 3], list(range(4, 60))]
    ids = torch.zeros(2, 56, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for i, r in enumerate(rows):
        ids[i, : len(r)], mask[i, : len(r)] = torch.tensor(r), 1
    with torch.inference_mode():  # no ``context.batch``: one activation scale for the call, the mask still holds
        masked = model(input_ids=ids, attention_mask=mask).last_hidden_state[0, :5].mean(0)
        unmasked = model(input_ids=ids, attention_mask=torch.ones_like(ids)).last_hidden_state[0, :5].mean(0)
    alone = encode(model, context, [rows[0]])[0]
    assert (masked - alone).norm() < 0.3 * (unmasked - alone).norm()  # quantization noise, not padding
