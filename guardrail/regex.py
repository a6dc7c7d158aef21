"""Linear-time regular expressions for everything a policy author writes (RE2, via ``google-re2``).

A policy's patterns run on untrusted text (model output, user input). A backtracking engine lets one
33-byte prompt stall a server for minutes with ``^(a+)+$``; RE2 matches in time linear in the text whatever
the pattern. The price: no look-around and no back-references. Where a rule needs a boundary, it writes the
boundary as characters and names the part to report ``match``::

    (?:^|[^0-9])(?P<match>\\d{3}-\\d{2}-\\d{4})(?:[^0-9]|$)

Only the group named ``match`` is reported (and redacted); the boundary characters are not, and a boundary
character after one match may begin the next. ``\\w``, ``\\d`` and ``\\b`` are ASCII in RE2; use ``\\p{L}``,
``\\p{N}`` for letters and digits of every script.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import re2

__all__ = [
    "MATCH_TIME_LIMIT_S",
    "Deadline",
    "LinearPattern",
    "PatternSyntaxError",
    "compile_pattern",
    "keyword_pattern",
]

#: A second line of defence: one judge call's matching that takes longer than this is an error, never a hang.
MATCH_TIME_LIMIT_S = 2.0
#: The group whose span a match reports, when the pattern has one.
MATCH_GROUP = "match"
_WORD = r"\p{L}\p{N}\p{M}_"  # what Python's \w means, in every script

_OPTIONS = re2.Options()
_OPTIONS.log_errors = False  # errors are raised to the caller, not printed by the C++ library


class PatternSyntaxError(ValueError):
    """A pattern that RE2 does not accept; the message says how to rewrite it."""


def _hint(pattern: str) -> str:
    if any(token in pattern for token in ("(?=", "(?!", "(?<=", "(?<!")):
        return (
            "; look-around is not available in linear-time matching: write the boundary as characters and name "
            "the part to report, e.g. (?:^|[^0-9])(?P<match>...)(?:[^0-9]|$)"
        )
    if any(f"\\{digit}" in pattern for digit in "123456789") or "(?P=" in pattern:
        return "; back-references are not available in linear-time matching"
    if "(?>" in pattern or "++" in pattern or "*+" in pattern:
        return "; atomic groups and possessive quantifiers are not needed (and not available): RE2 never backtracks"
    return ""


class LinearPattern:
    """A compiled RE2 pattern that reports the spans of its matches (of the ``match`` group when it has one)."""

    def __init__(self, source: str, compiled: Any) -> None:
        self.source = source
        self._compiled = compiled
        self._group = int(compiled.groupindex.get(MATCH_GROUP, 0))

    def __repr__(self) -> str:
        return f"LinearPattern({self.source!r})"

    def spans(self, text: str) -> Iterator[tuple[int, int]]:
        """(start, end) of every non-empty match, left to right; linear in ``len(text)``."""
        # RE2 works on UTF-8: encode once and search the bytes (searching a str re-encodes it on every call,
        # which is quadratic over many matches); offsets map back to characters in one forward pass
        data = text.encode("utf-8", "surrogatepass")
        chars = _CharOffsets(data, ascii_only=len(data) == len(text))
        position = 0
        while position <= len(data):
            found = self._compiled.search(data, position)
            if found is None:
                return
            start, end = found.span(self._group)
            if end > start:
                yield chars.at(start), chars.at(end)
            # the next search starts where the reported part ended, so a boundary character after it can
            # open the next match; always move forward
            position = max(end, found.start() + 1)
            while position < len(data) and 0x80 <= data[position] < 0xC0:  # never inside a character
                position += 1

    def search(self, text: str) -> bool:
        """True when the pattern occurs in ``text``."""
        return next(self.spans(text), None) is not None


class _CharOffsets:
    """Byte offsets of UTF-8 text to character offsets, for offsets that never decrease."""

    def __init__(self, data: bytes, *, ascii_only: bool) -> None:
        self.data = data
        self.ascii_only = ascii_only
        self.byte = 0
        self.char = 0

    def at(self, offset: int) -> int:
        if self.ascii_only:
            return offset
        self.char += len(self.data[self.byte : offset].decode("utf-8", "surrogatepass"))
        self.byte = offset
        return self.char


def compile_pattern(pattern: str, *, ignore_case: bool = False) -> LinearPattern:
    """Compile ``pattern`` for linear-time matching; ``PatternSyntaxError`` (with a rewrite hint) otherwise."""
    try:
        compiled = re2.compile(f"(?i:{pattern})" if ignore_case else pattern, _OPTIONS)
    except re2.error as err:
        reason = err.args[0].decode() if err.args and isinstance(err.args[0], bytes) else str(err)
        raise PatternSyntaxError(f"{reason}{_hint(pattern)}") from None
    return LinearPattern(pattern, compiled)


def keyword_pattern(word: str) -> LinearPattern:
    """A whole word or phrase, any case: not inside a longer word of any script."""
    before = f"(?:^|[^{_WORD}])" if _is_word(word[:1]) else ""
    after = f"(?:[^{_WORD}]|$)" if _is_word(word[-1:]) else ""
    return compile_pattern(f"{before}(?P<{MATCH_GROUP}>{re2.escape(word)}){after}", ignore_case=True)


def _is_word(char: str) -> bool:
    """A character that needs a word boundary next to it: letters and digits, except those of scripts written
    without spaces (Han, kana), where a keyword inside a run of text is still a whole word."""
    if not char or not (char.isalnum() or char == "_"):
        return False
    return not any(low <= ord(char) <= high for low, high in _UNSPACED)


_UNSPACED = ((0x3040, 0x30FF), (0x3400, 0x4DBF), (0x4E00, 0x9FFF), (0xF900, 0xFAFF), (0x20000, 0x3FFFF))


class Deadline:
    """Raises ``TimeoutError`` once ``limit_s`` has passed since it was made (checked between matches)."""

    def __init__(self, limit_s: float = MATCH_TIME_LIMIT_S) -> None:
        self.limit_s = limit_s
        self.ends = time.perf_counter() + limit_s

    def check(self) -> None:
        if time.perf_counter() > self.ends:
            raise TimeoutError(f"pattern matching took longer than {self.limit_s:g}s")
