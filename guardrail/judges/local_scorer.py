"""Self-evaluation scored from a local transformers model's option-token logits, reusing the KV cache.

The evaluation question is a suffix appended after the response's tokens: end of the assistant turn, a user
turn with the question, the start of the judge's answer ("The answer is: ("). ``score_cached`` runs only the
tokens not yet in a cache plus each suffix, then crops the cache back, so a check on a conversation that is
already cached (token-level rewind) costs the suffix tokens and nothing else. Option token ids come from the
tokenizer; the response is tokenized with ``split_special_tokens`` so text can never become a control token.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from guardrail.errors import JudgeError
from guardrail.judges.question import ANSWER_PREFIX, LABELS, Question
from guardrail.judges.self_eval import OptionProbs
from guardrail.judges.verdict import Cost

__all__ = ["LocalScorer"]

_SENTINEL = "\ue000GUARDRAIL-RESPONSE-END\ue000"


class LocalScorer:
    """Option probabilities from a causal LM with a chat template (``model``, ``tokenizer`` from transformers).

    Example::

        model, tokenizer = load_embedded_model()
        judge = SelfEvalJudge(load_policy("harmless"), LocalScorer(model, tokenizer))
    """

    name = "local-logits"

    def __init__(self, model: Any, tokenizer: Any) -> None:
        if not getattr(tokenizer, "chat_template", None):
            raise JudgeError("self-evaluation needs a model with a chat template (an instruct/chat model)")
        self.model = model
        self.tokenizer = tokenizer
        self.option_ids = {label: self._option_id(label) for label in LABELS}
        self._suffixes: dict[str, list[int]] = {}
        self._lock = threading.RLock()

    def _option_id(self, label: str) -> int:
        prefix = self.tokenizer.encode(ANSWER_PREFIX, add_special_tokens=False)
        full = self.tokenizer.encode(ANSWER_PREFIX + label, add_special_tokens=False)
        if full[: len(prefix)] != prefix or len(full) != len(prefix) + 1:
            raise JudgeError(
                f"this tokenizer does not give option {label!r} a token of its own after {ANSWER_PREFIX!r}"
            )
        return int(full[-1])

    # ------------------------------------------------------------------------------------------ token ids

    def template_ids(self, messages: Sequence[dict[str, str]]) -> list[int]:
        """The chat template over ``messages`` up to the start of the assistant's turn, control tokens inert."""
        try:
            encoded = self.tokenizer.apply_chat_template(
                list(messages), add_generation_prompt=True, sanitize_control_tokens=True
            )
        except TypeError:  # transformers < 5.20: the text was neutralised with word joiners already
            encoded = self.tokenizer.apply_chat_template(list(messages), add_generation_prompt=True)
        ids = encoded["input_ids"] if hasattr(encoded, "keys") else encoded
        return [int(i) for i in ids]

    def text_ids(self, text: str) -> list[int]:
        """Token ids of untrusted text, with any special-token strings kept as plain text."""
        return [int(i) for i in self.tokenizer.encode(text, add_special_tokens=False, split_special_tokens=True)]

    def suffix_ids(self, question: Question) -> list[int]:
        """End of the assistant turn + the question as a user turn + the judge's answer prefix (cached)."""
        cached = self._suffixes.get(question.text)
        if cached is None:
            rendered = self.tokenizer.apply_chat_template(
                [
                    {"role": "user", "content": "?"},
                    {"role": "assistant", "content": _SENTINEL},
                    {"role": "user", "content": question.text},
                ],
                tokenize=False,
                add_generation_prompt=True,
            )
            tail = rendered[rendered.index(_SENTINEL) + len(_SENTINEL) :] + ANSWER_PREFIX
            cached = [int(i) for i in self.tokenizer.encode(tail, add_special_tokens=False)]
            self._suffixes[question.text] = cached
        return cached

    # ------------------------------------------------------------------------------------------ scoring

    def score(self, conversation: list[dict[str, str]], questions: Sequence[Question]) -> list[OptionProbs]:
        """Score a conversation whose last message is the assistant's response (nothing cached yet)."""
        from transformers import DynamicCache

        ids = self.template_ids(conversation[:-1]) + self.text_ids(conversation[-1]["content"])
        return self.score_cached(DynamicCache(), ids, questions)

    def score_cached(self, cache: Any, pending: Sequence[int], questions: Sequence[Question]) -> list[OptionProbs]:
        """Score with ``cache`` holding the conversation but ``pending`` ids; the cache is left as it was."""
        return [row[0] for row in self.score_batch(cache, [pending], questions)]

    def score_batch(
        self, cache: Any, pending: Sequence[Sequence[int]], questions: Sequence[Question]
    ) -> list[list[OptionProbs]]:
        """Score every row of a batched ``cache`` (row i still missing ``pending[i]``, all of equal length).

        Returns ``[question][row]``. The questions' suffixes share most of their tokens (they differ in the
        order of the options), so the shared part is forwarded once per row and only each question's tail
        after it; the cache is cropped back afterwards.
        """
        import torch

        width = len(pending[0]) if pending else 0
        if any(len(row) != width for row in pending):
            raise ValueError("every row must have the same number of pending ids")
        rows = len(pending)
        suffixes = [self.suffix_ids(question) for question in questions]
        shared = _common_prefix(suffixes)
        results: list[list[OptionProbs]] = []
        with self._lock, torch.inference_mode():
            device = self.model.device
            head = [list(row) + shared for row in pending]
            if head and head[0]:
                self.model(input_ids=torch.tensor(head, device=device), past_key_values=cache)
            for position, suffix in enumerate(suffixes):
                tail = suffix[len(shared) :]
                out = self.model(
                    input_ids=torch.tensor([tail] * rows, device=device), past_key_values=cache, logits_to_keep=1
                )
                cache.crop(-len(tail))
                probs = torch.softmax(out.logits[:, -1].float(), dim=-1)
                first = position == 0 and bool(head and head[0])
                cost = Cost(forward_passes=1 + first, forward_tokens=len(tail) + (width + len(shared) if first else 0))
                per_row = []
                for row in range(rows):
                    by_label = {label: float(probs[row, token]) for label, token in self.option_ids.items()}
                    per_row.append(OptionProbs(by_label, mass=sum(by_label.values()), cost=cost))
                results.append(per_row)
            if width + len(shared):
                cache.crop(-(width + len(shared)))
        return results


def _common_prefix(sequences: Sequence[Sequence[int]]) -> list[int]:
    """The longest common prefix that leaves every sequence at least one token of its own."""
    if not sequences:
        return []
    shortest = min(len(s) for s in sequences)
    length = 0
    while length < shortest - 1 and all(s[length] == sequences[0][length] for s in sequences):
        length += 1
    return list(sequences[0][:length])
