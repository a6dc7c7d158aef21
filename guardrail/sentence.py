"""Incremental sentence segmentation for sentence-level rewind: text in as it streams, whole units out.

A unit ends after ``.``, ``!``, ``?`` (or ``…``) followed by whitespace; after the sentence enders of scripts
written without spaces or with their own marks (the ideographic and full-width full stop, exclamation and
question marks, the Devanagari danda, the Arabic question mark), space or not;
at a blank line; and before a list item on a new line ("- ", "* ", "• ", "1. ", "2) "), so a list without
periods is one unit per item. Not after an abbreviation ("e.g.", "Dr."), an initial ("J. R."), a decimal
("3.14") or inside a URL; a numbered list item ("1. ") is not split from its text; a fenced code block (```)
is one unit (a block longer than four windows is cut, and the text after its closing fence is prose again);
an unbroken run longer than ``max_chars`` is cut at the last space before the limit (or at the limit).
"""

from __future__ import annotations

import re

__all__ = ["SentenceBuffer", "ends_sentence", "split_sentences"]

_ABBREVIATIONS = frozenset(
    [
        "mr",
        "mrs",
        "ms",
        "dr",
        "prof",
        "sr",
        "jr",
        "st",
        "vs",
        "etc",
        "e.g",
        "i.e",
        "cf",
        "al",
        "approx",
        "dept",
        "est",
        "fig",
        "inc",
        "ltd",
        "co",
        "corp",
        "no",
        "nos",
        "vol",
        "pp",
        "p",
        "jan",
        "feb",
        "mar",
        "apr",
        "jun",
        "jul",
        "aug",
        "sep",
        "sept",
        "oct",
        "nov",
        "dec",
        "mon",
        "tue",
        "wed",
        "thu",
        "fri",
        "sat",
        "sun",
        "u.s",
        "u.k",
        "a.m",
        "p.m",
        "ph.d",
    ]
)
#: sentence enders of scripts written without spaces or with their own marks (CJK full stop, exclamation and
#: question marks, full-width full stop, Devanagari danda, Arabic question mark): no whitespace needed after
_SPACELESS = "\u3002\uff01\uff1f\uff0e\u0964\u061f"
#: what may close a sentence after its ender: quotes and brackets (ASCII; also CJK corner and full-width ones)
_ASCII_CLOSERS = "\"')\\]"
_CLOSERS = _ASCII_CLOSERS + "\u300d\u300f\uff09"
_END = re.compile(
    rf"[.!?…]+[{_ASCII_CLOSERS}]*(?=\s)"  # Latin-script enders, before whitespace
    rf"|[{_SPACELESS}]+[{_CLOSERS}]*\s*"  # CJK, Devanagari, Arabic enders
    r"|\n\s*\n"  # a blank line
    r"|\n"  # a line break: a line is a unit (list items, table rows, headings, a sign-off appended to an answer)
)
#: text that ends where a sentence can end: a stop (or a colon / semicolon), then closing quotes or brackets
_ENDING = re.compile(rf"[.!?…:;{_SPACELESS}][{_CLOSERS}]*$")
_FENCE = "```"


class SentenceBuffer:
    """Feed streamed text; get back complete units, then ``flush()`` the rest at the end.

    Example::

        buffer = SentenceBuffer()
        buffer.feed("Hello there. How ")   # -> ["Hello there. "]
        buffer.feed("are you?")             # -> []
        buffer.flush()                      # -> "How are you?"
    """

    def __init__(self, max_chars: int = 400) -> None:
        self.max_chars = max_chars
        self._text = ""
        self._in_code = False  # a long code block was cut before its closing fence

    @property
    def pending(self) -> str:
        return self._text

    def feed(self, text: str) -> list[str]:
        self._text += text
        units: list[str] = []
        while True:
            cut = self._boundary()
            if cut is None:
                break
            units.append(self._text[:cut])
            self._text = self._text[cut:]
        return units

    def flush(self) -> str:
        rest, self._text, self._in_code = self._text, "", False
        return rest

    def _boundary(self) -> int | None:
        text = self._text
        if self._in_code:  # inside a cut code block: the next fence closes it
            closing = text.find(_FENCE)
            if closing == -1:
                return None if len(text) < self.max_chars * 4 else self._window_cut(text, self.max_chars * 4)
            end = text.find("\n", closing + 3)
            if end == -1:
                return None
            self._in_code = False
            return end + 1
        fence = text.find(_FENCE)
        if fence != -1:
            closing = text.find(_FENCE, fence + 3)
            if fence > 0 and text[:fence].strip():
                cut = self._sentence_end(text[:fence], final=True)
                return cut if cut is not None else fence
            if closing == -1:
                if len(text) < self.max_chars * 4:
                    return None
                self._in_code = True
                return self._window_cut(text, self.max_chars * 4)
            end = text.find("\n", closing + 3)
            return None if end == -1 else end + 1
        cut = self._sentence_end(text, final=False)
        if cut is not None:
            return cut
        if len(text) > self.max_chars:
            return self._window_cut(text, self.max_chars)
        return None

    def _sentence_end(self, text: str, *, final: bool) -> int | None:
        for match in _END.finditer(text):
            end = match.end()
            if match.group(0).startswith("\n"):
                if not text[:end].strip():
                    continue  # a blank line at the start ends nothing
                return end
            if self._is_false_stop(text, match.start()):
                continue
            if end == len(text) and not final and match.group(0)[0] in _SPACELESS:
                return None  # a space that belongs to this unit may still arrive
            while end < len(text) and text[end] in " \t\n":
                end += 1  # the whitespace after a stop belongs to the unit it ends
            return end
        return len(text) if final and text.strip() else None

    @staticmethod
    def _is_false_stop(text: str, dot: int) -> bool:
        if text[dot] != ".":
            return False
        start = dot
        while start > 0 and not text[start - 1].isspace():
            start -= 1
        word = text[start:dot].lower().strip("(\"'[")
        if word in _ABBREVIATIONS or word.rstrip(".") in _ABBREVIATIONS:
            return True
        if len(word) == 1 and word.isalpha():  # an initial: "J. R. Tolkien"
            return True
        line_start = text.rfind("\n", 0, dot) + 1
        if text[line_start:dot].strip().isdigit() and dot - line_start <= 4:  # "1. item"
            return True
        return "://" in word or word.startswith("www.")

    @staticmethod
    def _window_cut(text: str, limit: int) -> int:
        space = text.rfind(" ", limit // 2, limit)
        return space + 1 if space != -1 else limit


def split_sentences(text: str, max_chars: int = 400) -> list[str]:
    """All units of a complete text (what streaming ``text`` piece by piece would give)."""
    buffer = SentenceBuffer(max_chars)
    units = buffer.feed(text)
    rest = buffer.flush()
    return [*units, rest] if rest else units


def ends_sentence(text: str) -> bool:
    """Whether ``text`` (trailing whitespace aside) ends where a sentence can end."""
    return bool(_ENDING.search(text.rstrip()))
