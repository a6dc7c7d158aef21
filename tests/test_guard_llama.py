"""The Guard against the real llama.cpp OpenAI-compatible server (embedded model's GGUF, 127.0.0.1)."""

from __future__ import annotations

import asyncio
import threading

import pytest

from guardrail import parse_policy
from guardrail.backends.remote import OpenAIBackend
from guardrail.evaluation import is_refusal
from guardrail.events import FinalEvent, RewindEvent, TextEvent, VerdictEvent
from guardrail.guard import Guard
from guardrail.judges import Judge
from guardrail.judges.base import Prompt
from guardrail.judges.verdict import Verdict
from guardrail.openai_client import OpenAIClient
from guardrail.policy import load_policy
from guardrail.sentence import split_sentences

pytestmark = pytest.mark.slow

POLICY = parse_policy("name: chosen\nrules:\n  - {id: chosen, criterion: repeats the chosen sentence}\n")


class RejectChosenSentence(Judge):
    """Rejects any response containing the first complete sentence it is shown (chosen at run time)."""

    name = "reject-chosen"

    def __init__(self) -> None:
        super().__init__(POLICY)
        self.chosen: str | None = None
        self.seen: list[str] = []
        self._lock = threading.Lock()

    def _judge(self, prompt: Prompt, response: str, *, partial: bool, explain: bool, judged: int) -> Verdict:
        with self._lock:
            self.seen.append(response)
            if self.chosen is None:
                self.chosen = response.strip()
            hit = self.chosen in response
        return Verdict(1.0 if hit else 0.0, hit, ("chosen",) if hit else (), judge=self.name)


def test_stream_releases_only_judged_text_and_regenerates_the_rejected_sentence(llama_server: str) -> None:
    judge = RejectChosenSentence()
    guard = Guard(POLICY, OpenAIBackend(llama_server, model="smollm2"), judge=judge)
    events = list(guard.stream("Write three short sentences about the sea.", max_tokens=60, temperature=0))
    released = "".join(e.text for e in events if isinstance(e, TextEvent))
    final = events[-1]
    assert isinstance(final, FinalEvent)
    assert judge.chosen and judge.chosen not in released  # the rejected sentence never reached the user
    assert any(isinstance(e, RewindEvent) for e in events) and final.result.rewinds[0].rules == ("chosen",)
    assert released == final.result.text and released.strip()
    # every released unit was judged first, and the final answer passes the judge
    verdict_texts = [e for e in events if isinstance(e, VerdictEvent)]
    assert len(verdict_texts) >= len(split_sentences(released.strip())) > 0
    assert not judge.judge("q", released).violated


def test_embedding_judged_answer_end_to_end(llama_server: str) -> None:
    guard = Guard(load_policy("harmless"), OpenAIBackend(llama_server, model="smollm2"), judge=_embedding_judge())
    result = guard.invoke("How do I bake bread?", max_tokens=48, temperature=0)
    assert result.verdicts and all(v.verdict.judge == "embedding" for v in result.verdicts)
    # a benign question gets an answer, not the fallback (a blanket refusal fails here)
    assert result.fallback is None and not is_refusal(result.text) and len(result.text.split()) >= 8, result.text


def _embedding_judge() -> Judge:
    from guardrail.judges import EmbeddingJudge

    return EmbeddingJudge(load_policy("harmless"))


def test_self_evaluation_guard_over_llama_cpp(llama_server: str) -> None:
    # judge="self" insists: the 135M model fails the calibration probe, which would hand the rule to the trained judge
    guard = Guard("harmless", OpenAIBackend(llama_server, model="smollm2"), judge="self")
    result = guard.invoke("Name a fruit.", max_tokens=24, temperature=0)
    # every verdict is the model's own (or the guard's echo check on a critique regeneration)
    assert result.verdicts and {v.verdict.judge for v in result.verdicts} <= {"self", "echo"}
    assert any(v.verdict.judge == "self" for v in result.verdicts)
    asked = sum(1 for v in result.verdicts if v.verdict.judge == "self")
    assert result.judge_cost.api_calls >= 2 * asked  # both option orders asked of the server
    # what the 135M judge decided is its own business (it is near chance); the guard must still end properly:
    # the answer passed every verdict, or the ladder's refusal is what the user got
    if result.fallback is None:
        assert result.passed and not is_refusal(result.text) and result.text.strip()
    else:
        assert result.fallback.action == "refuse" and result.text == result.fallback.message


async def test_load_hundred_concurrent_guarded_streams(llama_server: str) -> None:
    prompts = [f"Say the number {n} in words." for n in range(10)]
    client = OpenAIClient(llama_server, model="smollm2", read_timeout=300)
    reference = {}
    for prompt in prompts:  # the unguarded answers, one by one (greedy decoding is deterministic)
        reply = await client.achat([{"role": "user", "content": prompt}], max_tokens=12, temperature=0)
        reference[prompt] = reply["choices"][0]["message"]["content"]
    guard = Guard(
        parse_policy("name: none\nrules:\n  - {id: n, judge: pattern, keywords: [zzzz-never], criterion: never}\n"),
        OpenAIBackend(llama_server, client=client),
    )

    async def one(prompt: str) -> tuple[str, str]:
        pieces = [p async for p in guard.astream_text(prompt, max_tokens=12, temperature=0)]
        return prompt, "".join(pieces)

    results = await asyncio.gather(*(one(prompts[i % 10]) for i in range(100)))
    assert len(results) == 100
    for prompt, answer in results:
        assert answer == reference[prompt], (prompt, answer, reference[prompt])
    await client.aclose()


FIRST = parse_policy(
    "name: first\nrules:\n  - {id: first, criterion: The response opens with the sentence that the reviewer chose to "
    "reject}\nactions: [{action: rewind, max_attempts: 4}, {action: refuse, message: Nope.}]\n"
    "rewind: {max_failures_per_position: 9}\n"
)


class RejectFirst(Judge):
    """Rejects any response containing the first text it is shown."""

    name = "reject-first"

    def __init__(self) -> None:
        super().__init__(FIRST)
        self.chosen: str | None = None

    def _judge(self, prompt: Prompt, response: str, *, partial: bool, explain: bool, judged: int) -> Verdict:
        if self.chosen is None:
            self.chosen = response.strip()
        hit = self.chosen in response
        return Verdict(1.0 if hit else 0.0, hit, ("first",) if hit else (), judge=self.name)


def test_critique_regeneration_never_releases_the_instruction(llama_server: str) -> None:
    # told "do not do this: <criterion>", the embedded model answers "Do not do that: The response opens with the
    # sentence that the reviewer chose to reject. ..." for this prompt at temperature 0 (seeded regenerations)
    from guardrail.rewind.sentence import _words

    guard = Guard(FIRST, OpenAIBackend(llama_server, model="smollm2"), judge=RejectFirst())
    events = list(guard.stream("How do I bake bread?", max_tokens=60, temperature=0))
    released = "".join(e.text for e in events if isinstance(e, TextEvent))
    instruction = _words(guard.strategy._critique(("first",)))  # type: ignore[union-attr]
    shingles = {tuple(instruction[i : i + 5]) for i in range(len(instruction) - 4)}
    words = _words(released)
    assert released.strip() and len(shingles) > 10
    assert not [words[i : i + 5] for i in range(len(words) - 4) if tuple(words[i : i + 5]) in shingles], released
    assert any(isinstance(e, VerdictEvent) and e.verdict.judge == "echo" for e in events)  # the echo was caught
    assert "reviewer" not in released
