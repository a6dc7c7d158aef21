"""The README's Python examples, copied into files as a user would, run against llama.cpp's server, offline."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parent.parent
REFUSAL = "I can't help with that."
#: appended to each example: one more guarded call whose trace shows the answer was judged
TRAILERS = {
    "Guard(": "print('\\n@@', len(result.verdicts), result.fallback)",
    "GuardedChatModel(": "print('\\n@@', len(guarded.guard.invoke('How do I reset my password?').verdicts))",
    "GuardedLLM(": "print('\\n@@', len(Settings.llm.guard.invoke('When does the shop open?').verdicts))",
}


def _examples() -> list[str]:
    return re.findall(r"```python\n(.*?)```", (REPO / "README.md").read_text(encoding="utf-8"), flags=re.DOTALL)


def test_the_readme_has_the_three_examples() -> None:
    examples = _examples()
    assert len(examples) == 3
    assert [any(key in block for block in examples) for key in TRAILERS] == [True, True, True]


@pytest.mark.parametrize("index", [0, 1, 2])
def test_a_readme_example_prints_a_guarded_answer(llama_server: str, tmp_path: Path, index: int) -> None:
    block = _examples()[index]
    trailer = next(code for key, code in TRAILERS.items() if key in block)
    script = tmp_path / "example.py"
    script.write_text(block.replace("http://127.0.0.1:8080/v1", llama_server) + "\n" + trailer + "\n")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "OPENAI_API_KEY": "unused"}
    done = subprocess.run([sys.executable, str(script)], cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    answer, _, checked = done.stdout.rpartition("\n@@")
    assert answer.strip(), "the example printed nothing"
    lines = [line.strip() for line in answer.splitlines() if line.strip()]
    assert not all(line == REFUSAL for line in lines), f"every answer was a refusal: {answer[:300]!r}"
    assert int(checked.split()[0]) > 0, "the answer was not judged"
