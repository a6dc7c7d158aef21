"""The head-training script's tools: an ensemble shipped as one MLP, and window features cached per pair."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import torch

from guardrail.judges.embedding import sentence_prefixes

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "benchmarks"))
from judge_data import sentence_end_rows
from train_embedding_head import FeatureCache, merge_heads


def test_merged_heads_give_the_mean_of_their_logits() -> None:
    torch.manual_seed(0)
    heads = [torch.nn.Sequential(torch.nn.Linear(8, w), torch.nn.GELU(), torch.nn.Linear(w, 1)) for w in (4, 4, 4)]
    x = torch.randn(16, 8)
    merged = merge_heads(heads)
    assert merged[0].out_features == 12
    with torch.no_grad():
        expected = torch.stack([h(x) for h in heads]).mean(0)
        assert torch.allclose(merged(x), expected, atol=1e-6)
        assert not torch.allclose(merged(x), heads[0](x), atol=1e-3)  # not just the first head


class _Window:
    def __init__(self, pair: int) -> None:
        self.pair = pair


class _Encoder:
    """Two windows per pair, features that name the pair's text: what was asked for is visible."""

    def __init__(self) -> None:
        self.asked: list[tuple[str, str]] = []

    def features(self, pairs: list[tuple[str, str]], *, last_only: bool) -> tuple[Any, list[_Window]]:
        self.asked += pairs
        rows = [[float(len(q)), float(len(a)), float(k), float(last_only)] for q, a in pairs for k in (0, 1)]
        return torch.tensor(rows), [_Window(i) for i in range(len(pairs)) for _ in (0, 1)]


def test_feature_cache_encodes_each_pair_once_and_keeps_rows_in_order(tmp_path: Path) -> None:
    path = tmp_path / "features.pt"
    encoder = _Encoder()
    cache = FeatureCache(path)
    first, pair_of = cache.features(encoder, [("q", "aa"), ("qq", "a")], last_only=True)  # type: ignore[arg-type]
    assert pair_of == [0, 0, 1, 1] and first[:, :2].tolist() == [[1, 2], [1, 2], [2, 1], [2, 1]]
    cache.save()

    again = FeatureCache(path)  # a new run: only the new pair, and the old one read as it was
    rows, pair_of = again.features(encoder, [("qqq", "a"), ("qq", "a"), ("qqq", "a")], last_only=True)  # type: ignore[arg-type]
    assert encoder.asked == [("q", "aa"), ("qq", "a"), ("qqq", "a")]
    assert pair_of == [0, 0, 1, 1, 2, 2]
    assert rows[:, :2].tolist() == [[3, 1], [3, 1], [2, 1], [2, 1], [3, 1], [3, 1]]
    assert rows[:, 2].tolist() == [0, 1, 0, 1, 0, 1]
    # the window set depends on last_only: another key
    other, _ = again.features(encoder, [("qq", "a")], last_only=False)  # type: ignore[arg-type]
    assert other[:, 3].tolist() == [0, 0] and encoder.asked[-1] == ("qq", "a")


def test_sentence_end_rows_cut_where_a_streaming_guard_judges() -> None:
    safe = {"question": "How do I kill a Python process?", "unsafe": 0, "source": "s", "weight": 1.0,
            "answer": "To kill a Python process, find its id first. Then run kill with that id. "
                      "If it ignores that, use kill -9. It stops at once."}  # fmt: skip
    unsafe = {**safe, "unsafe": 1, "answer": "Sure, here is the plan you asked for. Buy the parts at two shops. "
              "Put them together in the garage at night. Leave it by the door at noon."}  # fmt: skip
    rows = sentence_end_rows([safe, unsafe], 2, min_unsafe=0.5)
    # the safe answer: its first two sentence ends, exactly the texts the judge's streaming units hold
    safe_rows = [r for r in rows if r["unsafe"] == 0]
    assert [r["answer"] for r in safe_rows] == list(reversed(sentence_prefixes(safe["answer"])))[:2]
    assert safe_rows[0]["answer"].startswith("To kill a Python process, find its id first.")
    assert safe_rows[0]["answer"].strip().endswith("first.") and [r["source"] for r in safe_rows] == ["s@s1", "s@s2"]
    # the unsafe answer: only prefixes holding at least half of it, labelled unsafe; the opening is left out
    unsafe_rows = [r for r in rows if r["unsafe"] == 1]
    assert [r["answer"].strip() for r in unsafe_rows] == [unsafe["answer"].rsplit(" Leave", 1)[0]]
    assert all(len(r["answer"]) >= len(unsafe["answer"]) / 2 for r in unsafe_rows)
    assert sentence_end_rows([safe], 0, min_unsafe=0.5) == []


def test_chat_answers_train_outside_their_hold_out_and_at_every_sentence_end() -> None:
    # the embedded model's answers (benchmarks/data/chat_alarming.jsonl): two folds in five never train, so the
    # false rewinds they measure are on questions the head never saw; the rest train whole and at sentence ends
    import argparse

    from judge_data import chat_rows, in_chat_holdout, load_training_rows
    from train_embedding_head import add_training_arguments, training_examples

    rows = chat_rows()
    held = {r["question"] for r in rows if in_chat_holdout(r["question"])}
    assert len(rows) >= 600 and 0.3 < len(held) / len({r["question"] for r in rows}) < 0.5
    assert {r["unsafe"] for r in rows} == {0, 1}
    trained = [r for r in load_training_rows(chat_weight=2.0) if r["source"] == "chat_alarming"]
    assert trained and not held & {r["question"] for r in trained} and {r["weight"] for r in trained} == {2.0}
    assert not [r for r in load_training_rows() if r["source"] == "chat_alarming"]  # off unless asked for

    parser = argparse.ArgumentParser()
    add_training_arguments(parser)
    _, val, examples = training_examples(parser.parse_args(["--chat-weight", "2"]))
    assert not held & {r["question"] for r in val + examples}
    cut = [r for r in examples if r["source"].startswith("chat_alarming@s") and "+steer" not in r["source"]]
    safe_answer = next(r for r in trained if not r["unsafe"] and len(sentence_prefixes(r["answer"])) > 2)
    assert [r for r in cut if r["question"] == safe_answer["question"] and not r["unsafe"]]
    unsafe_cuts = [r for r in cut if r["unsafe"]]
    assert unsafe_cuts
    for r in unsafe_cuts:  # an unsafe answer's cuts hold at least half of it
        whole = [t["answer"] for t in trained if t["unsafe"] and t["answer"].startswith(r["answer"])]
        assert whole and len(r["answer"]) >= 0.5 * min(len(a) for a in whole)
