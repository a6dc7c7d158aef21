"""Token-level decoding with an explicit KV cache: the trunk (committed tokens) and batched branches.

Invariant (the one ``generate`` keeps): a cache covers every id but the last, which is pending. Extending by
one token forwards the pending id and samples the next. Rewinding crops the cache (``crop(-k)``, k > 0: the
only form transformers >= 5.15 accepts). Branches fork the trunk's cache into a batch
(``batch_repeat_interleave``), grow candidates in one batched forward per token, and one of them can be
adopted as the new trunk (``batch_select_indices``) without recomputing it. Every forward is counted: calls
and tokens (``ForwardStats``). Token ids are kept as generated; text is never re-tokenized.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

__all__ = ["Branches", "Decoder", "ForwardStats", "Sampling", "TextEmitter"]


@dataclass
class ForwardStats:
    """Model forwards done for generation (judging counts its own, in verdict costs)."""

    calls: int = 0
    tokens: int = 0


@dataclass(frozen=True)
class Sampling:
    """How to pick tokens: greedy when ``temperature`` is 0 (or None), else sampling from the top ``top_k``."""

    temperature: float | None = None
    top_k: int | None = None

    @property
    def greedy(self) -> bool:
        return not self.temperature


class Decoder:
    """One request's decoding state over a shared model (the model itself holds no request state)."""

    def __init__(self, model: Any, tokenizer: Any, *, seed: int = 0) -> None:
        import torch

        self.torch = torch
        self.model = model
        self.tokenizer = tokenizer
        self.generator = torch.Generator(device="cpu").manual_seed(seed)
        self.stats = ForwardStats()
        self.stop_ids = _stop_ids(model, tokenizer)
        self.ids: list[int] = []
        self.prompt_len = 0
        self.cache: Any = None

    # ------------------------------------------------------------------------------------------ forwards

    def forward(self, rows: Sequence[Sequence[int]], cache: Any) -> Any:
        """Forward ``rows`` (equal length) through ``cache``; the last position's logits, one row each."""
        torch = self.torch
        with torch.inference_mode():
            out = self.model(
                input_ids=torch.tensor([list(r) for r in rows], device=self.model.device),
                past_key_values=cache,
                use_cache=True,
                logits_to_keep=1,
            )
        self.stats.calls += 1
        self.stats.tokens += sum(len(r) for r in rows)
        return out.logits[:, -1].float()

    def sample(self, logits: Any, sampling: Sampling) -> list[int]:
        """One token per row of ``logits``."""
        torch = self.torch
        if sampling.greedy:
            return [int(t) for t in logits.argmax(dim=-1)]
        scaled = logits / float(sampling.temperature or 1.0)
        if sampling.top_k:
            kth = torch.topk(scaled, min(sampling.top_k, scaled.shape[-1]), dim=-1).values[:, -1:]
            scaled = scaled.masked_fill(scaled < kth, float("-inf"))
        probs = torch.softmax(scaled, dim=-1)
        return [int(t) for t in torch.multinomial(probs, 1, generator=self.generator).squeeze(-1)]

    # ------------------------------------------------------------------------------------------ the trunk

    def start(self, prompt_ids: Sequence[int]) -> None:
        """Prefill the prompt (all but its last id, which stays pending)."""
        from transformers import DynamicCache

        self.ids = list(prompt_ids)
        self.prompt_len = len(self.ids)
        self.cache = DynamicCache()
        if len(self.ids) > 1:
            self.forward([self.ids[:-1]], self.cache)

    @property
    def generated(self) -> list[int]:
        return self.ids[self.prompt_len :]

    def finished(self) -> bool:
        return bool(self.generated) and self.generated[-1] in self.stop_ids

    def step(self, sampling: Sampling) -> int:
        token = self.sample(self.forward([[self.ids[-1]]], self.cache), sampling)[0]
        self.ids.append(token)
        return token

    def generate(self, max_new: int, sampling: Sampling, stop: Callable[[list[int]], bool] | None = None) -> list[int]:
        """Extend the trunk by up to ``max_new`` tokens; stop after a stop id or when ``stop(new)`` holds."""
        new: list[int] = []
        while len(new) < max_new and not self.finished():
            new.append(self.step(sampling))
            if stop is not None and stop(new):
                break
        return new

    def feed(self, tokens: Sequence[int]) -> None:
        """Append known tokens to the trunk (teacher forcing: one forward of the pending id and all but the last)."""
        if tokens:
            self.forward([[self.ids[-1], *tokens[:-1]]], self.cache)
            self.ids.extend(tokens)

    def truncate(self, length: int) -> None:
        """Rewind the trunk to its first ``length`` ids (never into the prompt)."""
        length = max(length, self.prompt_len)
        drop = len(self.ids) - length
        if drop > 0:
            self.cache.crop(-drop)
            del self.ids[length:]

    def fork(self, rows: int) -> Branches:
        """``rows`` branches from the trunk's current end, each with its own copy of the cache rows."""
        cache = copy.deepcopy(self.cache)
        if rows > 1:
            cache.batch_repeat_interleave(rows)
        return Branches(self, cache, rows)

    def adopt(self, branches: Branches, row: int) -> list[int]:
        """Make branch ``row`` the trunk (its cache row selected, its surplus tokens cropped)."""
        cache = branches.cache
        if branches.rows > 1:
            cache.batch_select_indices(self.torch.tensor([row]))
        tokens = branches.tokens[row]
        surplus = len(branches.padded[row]) - len(tokens)
        if surplus > 0:
            cache.crop(-surplus)
        self.cache = cache
        self.ids.extend(tokens)
        return tokens

    def text(self, ids: Sequence[int]) -> str:
        return str(self.tokenizer.decode(list(ids), skip_special_tokens=True))


class Branches:
    """Candidates grown in one batch from the trunk's end; each row's cache lacks only its last id."""

    def __init__(self, decoder: Decoder, cache: Any, rows: int) -> None:
        self.decoder = decoder
        self.cache = cache
        self.rows = rows
        self.tokens: list[list[int]] = [[] for _ in range(rows)]  # real tokens (up to and with a stop id)
        self.padded: list[list[int]] = [[] for _ in range(rows)]  # what each cache row holds after the trunk
        self.pending = [decoder.ids[-1]] * rows
        self.done = [False] * rows
        self.logprobs = [0.0] * rows

    def grow(
        self,
        steps: int,
        sampling: Sampling,
        *,
        distinct_first: bool = False,
        greedy_rows: int = 0,
        pause_on: frozenset[int] = frozenset(),
    ) -> None:
        """Extend every unfinished row by up to ``steps`` tokens in batched forwards.

        ``distinct_first`` makes the first token differ across rows: the top-``rows`` tokens when greedy
        (RAIN's expansion at the root), else samples without repetition. The first ``greedy_rows`` rows take
        the most likely token (RAIN's one greedy candidate among samples). A row reaching a stop id is done;
        one reaching an id in ``pause_on`` stops for this call only (a rollout to the end of a phrase).
        ``logprobs[row]`` accumulates the log-probability (temperature 1) of the tokens each row took.
        """
        decoder = self.decoder
        torch = decoder.torch
        active = [not done for done in self.done]
        for step in range(steps):
            if not any(active):
                break
            logits = decoder.forward([[p] for p in self.pending], self.cache)
            if step == 0 and distinct_first and not self.tokens[0]:
                chosen = _distinct(decoder, logits[0:1], self.rows, sampling)
            else:
                chosen = decoder.sample(logits, sampling)
                if greedy_rows:
                    greedy = logits[:greedy_rows].argmax(dim=-1)
                    chosen[:greedy_rows] = [int(t) for t in greedy]
            logprobs = torch.log_softmax(logits, dim=-1)
            for row, token in enumerate(chosen):
                previous = self.pending[row]
                if not active[row]:
                    self.padded[row].append(previous)  # a stopped row repeats its last id: cropped on adoption
                    continue
                self.padded[row].append(token)
                self.pending[row] = token
                self.tokens[row].append(token)
                self.logprobs[row] += float(logprobs[row, token])
                if token in decoder.stop_ids:
                    self.done[row] = True
                    active[row] = False
                elif token in pause_on:
                    active[row] = False

    def response_ids(self, row: int) -> list[int]:
        return self.decoder.generated + self.tokens[row]

    def select(self, rows: Sequence[int]) -> None:
        """Keep only ``rows`` (in that order), dropping the others' cache rows."""
        self.cache.batch_select_indices(self.decoder.torch.tensor(list(rows)))
        for name in ("tokens", "padded", "pending", "done", "logprobs"):
            values = getattr(self, name)
            setattr(self, name, [values[row] for row in rows])
        self.rows = len(rows)


class TextEmitter:
    """Turns a growing list of token ids into the user's text: deltas that hold back an incomplete UTF-8
    character, with redacted id ranges replaced (in the deltas and in the full text alike)."""

    def __init__(self, decoder: Decoder) -> None:
        self.decoder = decoder
        self.emitted = ""
        self.redactions: list[tuple[int, int, str]] = []  # (start, end) index the ids given to text / delta

    def redact(self, start: int, end: int, replacement: str) -> None:
        self.redactions.append((start, end, replacement))

    def forget_after(self, length: int) -> None:
        """The ids were rewound to ``length``: redactions of what was cut go too."""
        self.redactions = [r for r in self.redactions if r[1] <= length]

    def text(self, ids: Sequence[int]) -> str:
        pieces, cursor = [], 0
        for start, end, replacement in sorted(self.redactions):
            pieces += [self.decoder.text(ids[cursor:start]), replacement]
            cursor = end
        return "".join(pieces) + self.decoder.text(ids[cursor:])

    def delta(self, ids: Sequence[int], *, final: bool = False) -> str:
        text = self.text(ids)
        if not final:
            text = text.rstrip("\ufffd")
        if not text.startswith(self.emitted):
            return ""  # a merge changed earlier characters: wait for more (never rewrite released text)
        out = text[len(self.emitted) :]
        self.emitted = text
        return out


def _distinct(decoder: Decoder, logits: Any, rows: int, sampling: Sampling) -> list[int]:
    torch = decoder.torch
    if sampling.greedy:
        return [int(t) for t in torch.topk(logits[0], rows).indices]
    scaled = logits[0] / float(sampling.temperature or 1.0)
    probs = torch.softmax(scaled, dim=-1)
    return [int(t) for t in torch.multinomial(probs, rows, replacement=False, generator=decoder.generator)]


def _stop_ids(model: Any, tokenizer: Any) -> set[int]:
    ids: set[int] = set()
    for source in (getattr(model, "generation_config", None), tokenizer):
        value = getattr(source, "eos_token_id", None)
        if isinstance(value, int):
            ids.add(value)
        elif isinstance(value, (list, tuple)):
            ids.update(int(v) for v in value)
    for token in ("<|im_end|>", "<|eot_id|>", "<end_of_turn>", "<|endoftext|>"):
        token_id = tokenizer.convert_tokens_to_ids(token) if token in tokenizer.get_vocab() else None
        if isinstance(token_id, int) and token_id >= 0:
            ids.add(token_id)
    return ids
