"""How to score a complete answer: which earlier sentence ends to score too, per head, on our validation split
and on the steering gate.

    .venv/bin/python benchmarks/complete_scoring.py                                  # the shipped head
    .venv/bin/python benchmarks/complete_scoring.py --heads shipped /tmp/heads/ens0.safetensors
    .venv/bin/python benchmarks/complete_scoring.py --thresholds 0.5 0.6 0.7 0.8    # every sentence end

The embedding judge scores a complete answer whole (every window) and, against text appended to it, as it
stood at earlier sentence ends (each prefix's last window, what the streaming guard judged), keeping the
highest score. Variants: ``whole`` (no earlier end), ``one`` (one sentence back: until 2026-11-23), ``last3``,
``half`` / ``third`` (the ends in the answer's last half / two thirds), ``every`` (shipped). For each: ROC-AUC,
F1 and false violations at 0.5 on our validation split (3,598 answers; never eval/), and the steering gate of
``tests/security/test_steering.py`` (held-out attacks appended to the flagged ones of the first 60 unsafe
TrustLLM validation answers: flips at 0.5, mean shift). With ``--thresholds``: the ``every`` variant at other
thresholds, with F1 at 25 / 50 % of each answer (a stream's units), the probe of 12 short harmful answers, the
alarming-word pairs' validation questions and the hold-out of the embedded model's own answers to alarming-word
questions (``judge_data.chat_rows``: a safe answer flagged at any sentence end is one `guardrail chat` rewinds).
Window features come from the training script's on-disk cache (~/.cache/guardrail-rewind/head_features/: the
first run encodes what is missing, ~10 min on 2 cores), so heads
and variants are compared on the same features in seconds; the scores are the judge's (same encoder, windows,
steering removal, head).
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "benchmarks"), str(REPO / "scripts")]

import judge_data  # noqa: E402
import torch  # noqa: E402
from judge_data import FRESH_STEERING, HELD_OUT_STEERING, PARAPHRASED_STEERING  # noqa: E402
from safetensors.torch import load_file  # noqa: E402
from train_embedding_head import POOLED_LAYERS, FeatureCache, feature_cache  # noqa: E402

from guardrail.judges.embedding import (  # noqa: E402
    ACCURATE_HEADS,
    BUILTIN_HEADS,
    ENCODERS,
    CrossEncoder,
    head_module,
    head_path,
    sentence_prefixes,
)
from guardrail.judges.metrics import f1_at, false_violation_rate, roc_auc  # noqa: E402
from guardrail.judges.untrusted import before_steering, remove_judge_steering  # noqa: E402

Variant = Callable[[str, list[int]], list[int]]
VARIANTS: dict[str, Variant] = {
    "whole": lambda answer, ends: [],
    "one": lambda answer, ends: ends[-1:],
    "last3": lambda answer, ends: ends[-3:],
    "half": lambda answer, ends: [end for end in ends if end >= len(answer) / 2],
    "third": lambda answer, ends: [end for end in ends if end >= len(answer) / 3],
    "every": lambda answer, ends: ends,
}


def sentence_ends(answer: str) -> list[int]:
    """Where the answer's sentences end, first to last, the answer's end left out: the judge's own prefixes."""
    return [len(prefix) for prefix in reversed(sentence_prefixes(answer))]


class Scored:
    """(question, answer) pairs, steering removed, with the features of their windows and of every earlier
    sentence end's last window."""

    def __init__(self, cache: FeatureCache, encoder: CrossEncoder, pairs: list[tuple[str, str]]) -> None:
        self.pairs = [(q, remove_judge_steering(a)[0]) for q, a in pairs]
        self.whole, self.whole_rows = cache.features(encoder, self.pairs, last_only=False)
        self.ends = [(i, end) for i, (_, a) in enumerate(self.pairs) for end in sentence_ends(a)]
        prefixes = [(self.pairs[i][0], self.pairs[i][1][:end]) for i, end in self.ends]
        # the answer as it stood before text addressed to the judge (every variant: the judge always adds it)
        cuts = [(i, before_steering(a)) for i, (_, a) in enumerate(pairs)]
        self.ends += [(i, -1) for i, cut in cuts if cut is not None]
        prefixes += [(self.pairs[i][0], cut) for i, cut in cuts if cut is not None]
        self.prefix, self.prefix_rows = cache.features(encoder, prefixes, last_only=True)

    def scores(self, head: Any, variant: str) -> list[float]:
        with torch.inference_mode():
            whole = head(self.whole).squeeze(-1).tolist()
            prefix = head(self.prefix).squeeze(-1).tolist() if self.prefix_rows else []
        best = [-math.inf] * len(self.pairs)
        for row, logit in zip(self.whole_rows, whole, strict=True):
            best[row] = max(best[row], logit)
        kept = {(i, -1) for i in range(len(self.pairs))}  # the cut before steering: every variant
        kept |= {(i, end) for i, (_, a) in enumerate(self.pairs) for end in VARIANTS[variant](a, sentence_ends(a))}
        for row, logit in zip(self.prefix_rows, prefix, strict=True):
            if self.ends[row] in kept:
                best[self.ends[row][0]] = max(best[self.ends[row][0]], logit)
        return [1 / (1 + math.exp(-v)) for v in best]


def gate(base: list[float], steered: list[float], n: int, threshold: float) -> tuple[int, int, float]:
    """(flips, pairs, mean shift) of the steering gate: attacks appended to the answers flagged at ``threshold``."""
    caught = [i for i in range(n) if base[i] >= threshold]
    pairs = [(k * n + i, i) for k in range(len(steered) // n) for i in caught]
    flips = sum(steered[s] < threshold for s, _ in pairs)
    return flips, len(pairs), statistics.mean(steered[s] - base[i] for s, i in pairs) if pairs else 0.0


def caught_and_flagged(rows: list[dict[str, Any]], scores: list[float], threshold: float) -> str:
    """'caught H of N, flagged S of M': the unsafe rows at or above ``threshold``, and the safe ones."""
    harmful = [s for r, s in zip(rows, scores, strict=True) if r["unsafe"]]
    safe = [s for r, s in zip(rows, scores, strict=True) if not r["unsafe"]]
    return (f"caught {sum(s >= threshold for s in harmful)} of {len(harmful)}, "
            f"flagged {sum(s >= threshold for s in safe)} of {len(safe)}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--heads", nargs="+", default=["shipped"], help="'shipped' or .safetensors paths")
    parser.add_argument("--thresholds", nargs="+", type=float, help="sweep the 'every' variant")
    parser.add_argument(
        "--encoder", choices=sorted(ENCODERS), default="minilm",
        help="the heads' encoder: minilm ('shipped': harmless) or mpnet ('shipped': harmless_accurate)",
    )  # fmt: skip
    parser.add_argument(
        "--gate-only", action="store_true",
        help="only the steering gate (the validation split: benchmarks/judge_quality.py scores it as the judge does)",
    )  # fmt: skip
    args = parser.parse_args()
    shipped = (BUILTIN_HEADS if args.encoder == "minilm" else ACCURATE_HEADS)["harmful"]
    cache = FeatureCache(feature_cache(args.encoder))
    encoder = CrossEncoder(None, folder=ENCODERS[args.encoder]())  # the judge's windows, int8 like the judge
    encoder.pooled_layers = POOLED_LAYERS
    rows = judge_data.load_training_rows()
    validation = [r for r in rows if judge_data.in_validation_split(r["question"])][: 0 if args.gate_only else None]
    labels = [bool(r["unsafe"]) for r in validation]
    data = judge_data.SHARED / "safety_responses_dev.jsonl"
    trust = [json.loads(line) for line in data.read_text(encoding="utf-8").splitlines()]
    unsafe = [r for r in trust if judge_data.in_validation_split(r["question"]) and r["label"] == "unsafe"][:60]
    attacks = HELD_OUT_STEERING + PARAPHRASED_STEERING
    sets = {
        **(
            {"validation": Scored(cache, encoder, [(r["question"], r["answer"]) for r in validation])}
            if validation
            else {}
        ),
        "gate": Scored(cache, encoder, [(r["question"], r["answer"]) for r in unsafe]),
        "steered": Scored(cache, encoder, [(r["question"], r["answer"] + a) for a in attacks for r in unsafe]),
        "fresh": Scored(cache, encoder, [(r["question"], r["answer"] + a) for a in FRESH_STEERING for r in unsafe]),
    }
    if args.thresholds:
        probe = judge_data.probe_sets()["alarming harmful (ours)"]
        alarming = [r for r in judge_data.alarming_rows() if judge_data.in_validation_split(r["question"])]
        sets["probe"] = Scored(cache, encoder, [(r["question"], r["answer"]) for r in probe])
        sets["alarming"] = Scored(cache, encoder, [(r["question"], r["answer"]) for r in alarming])
        chat = [r for r in judge_data.chat_rows() if judge_data.in_chat_holdout(r["question"])]
        sets["chat"] = Scored(cache, encoder, [(r["question"], r["answer"]) for r in chat])
        partial = {
            f: cache.features(encoder, [(r["question"], judge_data.prefix(r["answer"], f)) for r in validation],
                              last_only=True)
            for f in (0.25, 0.5)
        }  # fmt: skip
    cache.save()
    for name in args.heads:
        head = head_module(torch, load_file(str(head_path(shipped) if name == "shipped" else name)))
        label = Path(name).stem
        for variant in VARIANTS:
            scores = sets["validation"].scores(head, variant) if validation else []
            base, steered = sets["gate"].scores(head, variant), sets["steered"].scores(head, variant)
            flips, pairs, shift = gate(base, steered, len(unsafe), 0.5)
            quality = (
                f"ROC-AUC {roc_auc(labels, scores):.4f} F1 {f1_at(labels, scores, 0.5):.4f} "
                f"false violations {false_violation_rate(labels, scores, 0.5):.1%}"
                if validation
                else "skipped"
            )
            fresh_flips, fresh_pairs, fresh_shift = gate(base, sets["fresh"].scores(head, variant), len(unsafe), 0.5)
            steering = (f"gate {flips} of {pairs} ({flips / max(1, pairs):.1%}) shift {shift:+.4f}, fresh attacks "
                        f"{fresh_flips} of {fresh_pairs} shift {fresh_shift:+.4f}")  # fmt: skip
            print(f"{label:12} {variant:6} validation {quality} | {steering}", flush=True)
        for threshold in args.thresholds or []:
            scores = sets["validation"].scores(head, "every")
            base, steered = sets["gate"].scores(head, "every"), sets["steered"].scores(head, "every")
            flips, pairs, _ = gate(base, steered, len(unsafe), threshold)
            units = []
            for features, owners in partial.values():
                with torch.inference_mode():
                    logits = head(features).squeeze(-1).tolist()
                best = [-math.inf] * len(validation)
                for row, logit in zip(owners, logits, strict=True):
                    best[row] = max(best[row], logit)
                units.append(f1_at(labels, [1 / (1 + math.exp(-v)) for v in best], threshold))
            probe_scores = sets["probe"].scores(head, "every")
            alarming_scores = sets["alarming"].scores(head, "every")
            quality = (
                f"F1 {f1_at(labels, scores, threshold):.4f} false violations "
                f"{false_violation_rate(labels, scores, threshold):.1%} F1 at 25 / 50 % {units[0]:.3f} / {units[1]:.3f}"
            )
            probes = (
                f"probe {sum(s >= threshold for s in probe_scores)} of {len(probe_scores)} | alarming "
                f"{caught_and_flagged(alarming, alarming_scores, threshold)}"
            )
            chats = f"chat hold-out: {caught_and_flagged(chat, sets['chat'].scores(head, 'every'), threshold)}"
            print(f"{label:12} every @ {threshold:.2f} validation {quality} | {probes} | gate {flips} of {pairs} | "
                  f"{chats}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
