"""The pattern judge on long texts: time per judged text, 1k to 1M characters, linear-time RE2 vs Python's re.

    .venv/bin/python benchmarks/pattern_judge.py

Policies: the built-in ``no_pii`` (its four pattern rules) and a rule with the catastrophic pattern
``^(a+)+$``. Texts: prose with a few e-mail addresses and numbers, and adversarial texts (one long run of
'a' with no '@', which made the old e-mail pattern quadratic and ``^(a+)+$`` exponential). Python's ``re``
is timed on the same built-in patterns in their old look-around form, with a time cap per text, to show what
the change fixes. Median of 5 runs on one core.
"""

from __future__ import annotations

import random
import re
import statistics
import sys
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from guardrail.judges.pattern import PatternJudge  # noqa: E402
from guardrail.policy import load_policy, parse_policy  # noqa: E402

SIZES = (1_000, 10_000, 100_000, 1_000_000)
OLD_PII = [
    r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}",
    r"(?<!\w)(?:\+?\d{1,3}[ .-]?)?(?:\(\d{2,4}\)|\d{2,4})[ .-]?\d{3,4}[ .-]?\d{3,4}(?!\w)",
    r"(?<!\d)(?:\d[ -]?){13,19}(?!\d)",
    r"(?<!\d)\d{3}-\d{2}-\d{4}(?!\d)",
]
CAP_S = 10.0


def prose(size: int) -> str:
    rng = random.Random(size)
    words = [
        "the",
        "guard",
        "judges",
        "every",
        "answer",
        "before",
        "a",
        "user",
        "sees",
        "it",
        "and",
        "rewinds",
        "what",
        "breaks",
        "a",
        "rule",
    ]
    parts: list[str] = []
    length = 0
    while length < size:
        parts.append(rng.choice(words))
        if rng.random() < 0.01:
            parts.append(rng.choice(["ann@example.com", "555-123-4567", "123-45-6789"]))
        length += len(parts[-1]) + 1
    return " ".join(parts)[:size]


def median_ms(call: object, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        call()  # type: ignore[operator]
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def capped_ms(call: object) -> str:
    """Python's re, run once in a thread; '> 10 s' when it has not finished (the thread is left behind; its
    matching holds the GIL, so the caller skips the next size once one took over a second)."""
    done: list[float] = []

    def work() -> None:
        start = time.perf_counter()
        call()  # type: ignore[operator]
        done.append((time.perf_counter() - start) * 1000)

    thread = threading.Thread(target=work, daemon=True)
    thread.start()
    thread.join(CAP_S)
    return f"{done[0]:.1f}" if done else f"> {CAP_S:g} s (stopped waiting)"


def main() -> None:
    pii = PatternJudge(load_policy("no_pii"))
    redos = PatternJudge(
        parse_policy("name: r\nrules:\n  - {id: r, criterion: c, judge: pattern, patterns: ['^(a+)+$']}")
    )
    old = [re.compile(p) for p in OLD_PII]
    print("| text | characters | no_pii, RE2 (ms) | ^(a+)+$, RE2 (ms) | no_pii, Python re, old patterns (ms) |")
    print("|---|---:|---:|---:|---:|")
    slow_old = False
    for kind in ("prose", "adversarial"):
        for size in SIZES:
            text = prose(size) if kind == "prose" else "a" * (size - 1) + "!"
            a = median_ms(lambda text=text: pii.judge("q", text))
            b = median_ms(lambda text=text: redos.judge("q", text))
            if slow_old:
                c = "not run (over 1 s at a tenth of the size)"
            else:
                c = capped_ms(lambda text=text: [list(p.finditer(text)) for p in old])
                slow_old = c.startswith(">") or float(c) > 1000  # 10x the text would hold the GIL for minutes
            print(f"| {kind} | {size:,} | {a:.2f} | {b:.2f} | {c} |")
        slow_old = False


if __name__ == "__main__":
    main()
