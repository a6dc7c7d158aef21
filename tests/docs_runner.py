"""Runs the Python examples of a Markdown document, in order, in one namespace (docs that cannot rot)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent


def python_blocks(document: str) -> list[str]:
    text = (REPO / "docs" / document).read_text(encoding="utf-8")
    return re.findall(r"```python\n(.*?)```", text, flags=re.DOTALL)


def run_document(document: str) -> dict[str, Any]:
    namespace: dict[str, Any] = {"__name__": f"docs.{document}"}
    for index, block in enumerate(python_blocks(document)):
        code = compile(block, f"docs/{document} (example {index + 1})", "exec")
        exec(code, namespace)  # our own documentation
    return namespace
