"""Reading files a user names (policies, prompt sets, judge input): checked for type and size before a byte is
read, decoded line by line, and never echoed in an error.

``extends: /dev/zero`` once read 23.7 GB before a size check, and ``extends: /etc/shadow`` printed its first
line in the error. Here a path must be a regular file under a size limit (devices, FIFOs and directories are
refused from ``stat``), at most ``limit + 1`` bytes are ever read (a ``/proc`` file reports size 0), and error
messages name the file and the line, not what is in it.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from guardrail.errors import GuardrailError

__all__ = ["MAX_LINE_BYTES", "FileRejected", "Line", "checked", "decoded_lines", "read_bounded"]

#: One input line (a prompt or a judged answer) is at most this long.
MAX_LINE_BYTES = 16 << 20
_BOM = b"\xef\xbb\xbf"


class FileRejected(GuardrailError):
    """A named file is not a regular file, is too large, or cannot be read; the message says which."""


def checked(path: str | os.PathLike[str], what: str = "file", *, pipe: bool = False) -> os.stat_result:
    """``stat`` of ``path`` if it is a regular file (or, with ``pipe``, a FIFO that streams lines), before any
    byte is read; ``FileRejected`` for a missing file, a directory, a device or a socket."""
    shown = os.fspath(path)
    try:
        info = os.stat(path)
    except OSError as err:
        raise FileRejected(f"cannot read {what} {shown!r}: {err.strerror or err}") from None
    if stat.S_ISDIR(info.st_mode):
        raise FileRejected(f"{what} {shown!r} is a directory; give a file")
    if not (stat.S_ISREG(info.st_mode) or (pipe and stat.S_ISFIFO(info.st_mode))):
        raise FileRejected(f"{what} {shown!r} is not a regular file (a device, pipe or socket); give a file")
    return info


def read_bounded(path: str | os.PathLike[str], limit: int, what: str = "file") -> bytes:
    """The bytes of ``path``, a regular file of at most ``limit`` bytes; ``FileRejected`` otherwise."""
    shown = os.fspath(path)
    info = checked(path, what)
    too_big = f"{what} {shown!r} is larger than {_size(limit)} (is this the right file?)"
    if info.st_size > limit:
        raise FileRejected(too_big)
    try:
        with Path(path).open("rb") as handle:
            data = handle.read(limit + 1)
    except OSError as err:
        raise FileRejected(f"cannot read {what} {shown!r}: {err.strerror or err}") from None
    if len(data) > limit:
        raise FileRejected(too_big)
    return data


@dataclass(frozen=True)
class Line:
    """One line of a text stream: its number and text, or why it could not be decoded."""

    number: int
    text: str | None
    error: str | None = None


def decoded_lines(stream: IO[bytes], *, max_bytes: int = MAX_LINE_BYTES) -> Iterator[Line]:
    """The lines of a binary stream, each decoded as UTF-8 on its own (a BOM at the start is dropped), so one
    bad line is reported and the next ones are still read. A line over ``max_bytes`` is skipped, never held."""
    number = 0
    while True:
        raw = stream.readline(max_bytes + 1)
        if not raw:
            return
        number += 1
        if number == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        if len(raw) > max_bytes and not raw.endswith(b"\n"):
            while (rest := stream.readline(1 << 20)) and not rest.endswith(b"\n"):
                pass  # drop the rest of the oversized line in bounded pieces
            yield Line(number, None, f"line longer than {_size(max_bytes)}; skipped")
            continue
        try:
            yield Line(number, raw.decode("utf-8").rstrip("\r\n"))
        except UnicodeDecodeError as err:
            yield Line(number, None, f"not UTF-8 (byte 0x{raw[err.start]:02x} at column {err.start + 1}); skipped")


def _size(limit: int) -> str:
    return f"{limit / (1 << 20):g} MiB" if limit >= 1 << 20 else f"{limit / 1024:g} KiB"
