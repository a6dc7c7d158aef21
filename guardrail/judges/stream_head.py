"""The stream head: a classifier on the generating model's own hidden states (``judge: stream``).

As Qwen3Guard-Stream classifies every token with heads on its final layers, a linear head reads one layer's
hidden state at the last token of a (partial) answer, in the chat the generating model decodes. The state has
seen the question and the whole answer so far (no window), and during token-level rewind it costs one
forwarded token on the decoding KV cache, cropped off again (``StreamScorer.score_batch``): no second model,
no re-encoding of the text. A head is trained per base model (scripts/train_stream_head.py); the one shipped
is for the embedded model and judges the built-in ``harmful`` rule. Text addressed to the judge is removed
first, as for every judge: where a decoded answer holds such text, that row is judged on the cleaned text
instead of on the cache.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from guardrail.errors import JudgeError
from guardrail.judges.base import Judge, Prompt
from guardrail.judges.embedding import head_path
from guardrail.judges.local_scorer import LocalScorer
from guardrail.judges.self_eval import conversation
from guardrail.judges.untrusted import remove_judge_steering
from guardrail.judges.verdict import Cost, Verdict
from guardrail.policy import Policy, Rule

__all__ = ["STREAM_HEADS", "StreamHead", "StreamHeadJudge", "StreamScorer"]

#: Rule id -> shipped stream head (per base model: the head's .json names the model it was trained on).
STREAM_HEADS = {"harmful": "stream_smollm2_135m"}


@dataclass(frozen=True)
class StreamHead:
    """A linear head on layer ``layer``'s hidden state: P(violation) = sigmoid(state . weight + bias)."""

    weight: Any
    bias: float
    layer: int
    base: dict[str, Any]  # the base model's architecture and sizes (its config's values)
    base_name: str

    @classmethod
    def load(cls, name: str) -> StreamHead:
        from safetensors.torch import load_file

        path = head_path(name)
        tensors = load_file(str(path))
        meta = json.loads(path.with_suffix(".json").read_text(encoding="utf-8"))
        return cls(
            tensors["weight"], float(tensors["bias"]), int(meta["layer"]), dict(meta["base_model"]),
            str(meta.get("base_model_name", "another model")),
        )  # fmt: skip

    def fits(self, model: Any) -> bool:
        """Whether ``model`` is the base model this head was trained on (architecture and sizes)."""
        config = model.config
        return all(getattr(config, key, None) == value for key, value in self.base.items())

    def probabilities(self, states: Any) -> list[float]:
        import torch

        return list(torch.sigmoid(states.float() @ self.weight + self.bias).tolist())


class StreamScorer:
    """P(violation) from the local model's hidden state at a text's last token, with the stream head."""

    def __init__(self, local: LocalScorer, head: StreamHead) -> None:
        if not head.fits(local.model):
            raise JudgeError(
                f"the stream head was trained on {head.base_name}, not on this model "
                f"({type(local.model).__name__}): judge: stream works with that model only; use judge: embedding"
            )
        self.local = local
        self.head = head

    def score(self, messages: Sequence[dict[str, str]], response: str) -> tuple[float, int]:
        """The head's probability for ``response`` (an answer to ``messages``) and the tokens forwarded for it:
        nothing cached, the whole chat in one forward (an answer longer than the model's context keeps its end)."""
        head, answer = self.local.template_ids(list(messages)), self.local.text_ids(response)
        context = getattr(self.local.model.config, "max_position_embeddings", None)
        if isinstance(context, int) and len(head) + len(answer) > context:
            answer = answer[-max(1, context - len(head)) :]
        ids = head + answer
        return self.score_batch(None, [ids])[0], len(ids)

    def score_batch(self, cache: Any, pending: Sequence[Sequence[int]]) -> list[float]:
        """One probability per row of a batched ``cache`` that still misses ``pending[i]`` (equal lengths): the
        pending ids are forwarded, their last state read, and the cache cropped back as it was (``cache``
        None: nothing cached, ``pending`` is the whole text)."""
        import torch

        width = len(pending[0])
        if any(len(row) != width for row in pending):
            raise ValueError("every row must have the same number of pending ids")
        with self.local._lock, torch.inference_mode():  # one lock per model: self-evaluation shares it
            model = self.local.model
            out = model(
                input_ids=torch.tensor([list(row) for row in pending], device=model.device),
                past_key_values=cache,
                use_cache=cache is not None,
                output_hidden_states=True,
                logits_to_keep=1,
            )
            if cache is not None and width:
                cache.crop(-width)
            return self.head.probabilities(out.hidden_states[self.head.layer][:, -1])


class StreamHeadJudge(Judge):
    """Judges the rules that have a stream head (``STREAM_HEADS``) from the generating model's own states.

    Example::

        model, tokenizer = load_embedded_model()
        scorer = StreamScorer(LocalScorer(model, tokenizer), StreamHead.load("stream_smollm2_135m"))
        judge = StreamHeadJudge(load_policy("harmless"), scorer)
    """

    name = "stream"

    def __init__(self, policy: Policy, scorer: StreamScorer, rules: Sequence[Rule] | None = None) -> None:
        super().__init__(policy, rules)
        _require_heads(self.rules)
        self.scorer = scorer

    @classmethod
    def over(cls, policy: Policy, scorer: object, rules: Sequence[Rule]) -> StreamHeadJudge:
        """The judge of ``rules`` over the generating model's scorer (a ``LocalScorer``: the model is local)."""
        if not isinstance(scorer, LocalScorer):
            raise JudgeError(
                "the stream judge reads the generating model's own hidden states: it needs the local embedded "
                "model (e.g. --model default), not a remote API; judge these rules with 'embedding' instead"
            )
        _require_heads(rules)
        name = STREAM_HEADS[rules[0].id] if rules else next(iter(STREAM_HEADS.values()))
        return cls(policy, StreamScorer(scorer, StreamHead.load(name)), rules)

    def verdict_from(self, probability: float, steering: bool, forwarded: int) -> Verdict:
        """The verdict for every rule of this judge from the head's probability."""
        rationale = "text addressed to the judge was removed before judging" if steering else ""
        return self.verdict_from_scores(
            {rule.id: probability for rule in self.rules},
            steering=steering,
            rationale=rationale,
            cost=Cost(forward_passes=1, forward_tokens=forwarded),
        )

    def _judge(self, prompt: Prompt, response: str, *, partial: bool, explain: bool, judged: int) -> Verdict:
        clean, steering = remove_judge_steering(response)
        probability, forwarded = self.scorer.score(conversation(prompt, clean)[:-1], clean)
        return self.verdict_from(probability, steering, forwarded)


def _require_heads(rules: Sequence[Rule]) -> None:
    missing = [rule.id for rule in rules if rule.id not in STREAM_HEADS]
    if missing:
        raise JudgeError(
            f"rule(s) {', '.join(missing)}: the stream judge has a trained head only for "
            f"{', '.join(STREAM_HEADS)}; judge these rules with 'embedding' or 'self'"
        )
