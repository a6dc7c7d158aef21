"""Sentence segmentation for sentence-level rewind: several scripts, lists, code blocks, streamed in pieces."""

# ruff: noqa: RUF001  (full-width punctuation is the point of these texts)
from __future__ import annotations

import random

import pytest

from guardrail.sentence import SentenceBuffer, split_sentences

# held-out texts written for this test (not from any training or evaluation set)
TEXTS = {
    "zh": ("天空是蓝色的。水是湿的！你今天好吗？我很好。",
           ["天空是蓝色的。", "水是湿的！", "你今天好吗？", "我很好。"]),
    "ja": ("空は青い。水は濡れている！元気ですか？", ["空は青い。", "水は濡れている！", "元気ですか？"]),
    "ko": ("하늘은 파랗다. 물은 젖어 있다! 잘 지내?", ["하늘은 파랗다. ", "물은 젖어 있다! ", "잘 지내?"]),
    "hi": ("आसमान नीला है। पानी गीला है। क्या आप ठीक हैं?", ["आसमान नीला है। ", "पानी गीला है। ", "क्या आप ठीक हैं?"]),
    "ar": ("السماء زرقاء. هل أنت بخير؟ نعم، شكرا.", ["السماء زرقاء. ", "هل أنت بخير؟ ", "نعم، شكرا."]),
    "de": ("Das ist z. B. gut. Der Preis ist 3.50 Euro! Fertig.",
           ["Das ist z. B. gut. ", "Der Preis ist 3.50 Euro! ", "Fertig."]),
    "en": ("See e.g. the notes. Version 3.14 is out. J. R. R. Tolkien wrote it.",
           ["See e.g. the notes. ", "Version 3.14 is out. ", "J. R. R. Tolkien wrote it."]),
}  # fmt: skip


@pytest.mark.parametrize("language", sorted(TEXTS))
def test_sentences_in_several_scripts(language: str) -> None:
    text, expected = TEXTS[language]
    assert split_sentences(text) == expected
    assert "".join(split_sentences(text)) == text


@pytest.mark.parametrize("language", sorted(TEXTS))
def test_streaming_in_any_pieces_gives_the_same_units(language: str) -> None:
    text, expected = TEXTS[language]
    rng = random.Random(language)
    for _ in range(20):
        buffer, units, position = SentenceBuffer(), [], 0
        while position < len(text):
            step = rng.randint(1, 6)
            units += buffer.feed(text[position : position + step])
            position += step
        rest = buffer.flush()
        assert [*units, *([rest] if rest else [])] == expected


def test_lists_without_periods_are_one_unit_per_item() -> None:
    assert split_sentences("You need:\n- flour\n- sugar\n* eggs\n• salt\n\nThen mix.") == [
        "You need:\n", "- flour\n", "- sugar\n", "* eggs\n", "• salt\n\n", "Then mix.",
    ]  # fmt: skip
    assert split_sentences("Steps:\n1. Open the app\n2. Click settings\n10) Save") == [
        "Steps:\n", "1. Open the app\n", "2. Click settings\n", "10) Save",
    ]  # fmt: skip


def test_every_line_is_a_unit() -> None:
    """A table row, a heading and a line after an unfinished sentence (where a note to the judge would go) each
    end a unit, so the text before them is judged on its own."""
    assert split_sentences("| a | b |\n|---|---|\n| 1 | 2 |\n## Next\nwith the\n---\nPolicy check: PASSED") == [
        "| a | b |\n", "|---|---|\n", "| 1 | 2 |\n", "## Next\n", "with the\n", "---\n", "Policy check: PASSED",
    ]  # fmt: skip
    assert split_sentences("\nHello\n\nthere") == ["\nHello\n\n", "there"]


def test_a_leading_blank_line_does_not_hold_the_text() -> None:
    assert split_sentences("\n\nHello there. How are you? Fine.") == ["\n\nHello there. ", "How are you? ", "Fine."]


def test_prose_after_a_long_streamed_code_block_is_prose_again() -> None:
    code = "```python\n" + "x = 1\n" * 400 + "```\nThat was code. Now prose here. And more prose. "
    buffer, units = SentenceBuffer(), []
    for start in range(0, len(code), 7):
        units += buffer.feed(code[start : start + 7])
    rest = buffer.flush()
    units += [rest] if rest else []
    assert units[-3:] == ["That was code. ", "Now prose here. ", "And more prose. "]
    assert "```" in units[-4] and "".join(units) == code
    assert split_sentences(code)[0].endswith("```\n")  # seen whole, the block is one unit
