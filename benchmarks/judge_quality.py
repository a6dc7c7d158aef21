"""Judge quality and speed on the validation split of ../shared/data/safety_responses_dev.jsonl.

    .venv/bin/python benchmarks/judge_quality.py                       # embedding + self (embedded model)
    .venv/bin/python benchmarks/judge_quality.py --judges self --model http://127.0.0.1:8080/v1 --model-name m
    .venv/bin/python benchmarks/judge_quality.py --quick               # a smaller sample, for a smoke run

For each judge: ROC-AUC, F1 at the policy's threshold, the best F1 (and its threshold), the false-violation
rate on compliant responses at the threshold, and (question, response) pairs judged per second (model loading
excluded, reported apart). The split is by question (``in_validation_split``), the one the embedding head was
not trained on. Self-evaluation with the 135M embedded model is slow and near chance; it runs on a sample
(``--self-limit``), stratified so both labels are present.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from guardrail.commands.judge import make_scorer  # noqa: E402
from guardrail.judges import build_judge  # noqa: E402
from guardrail.judges.metrics import best_f1, f1_at, false_violation_rate, in_validation_split, roc_auc  # noqa: E402
from guardrail.policy import load_policy  # noqa: E402

DATA = REPO.parent / "shared" / "data" / "safety_responses_dev.jsonl"


def validation_rows(limit: int | None, seed: int = 0) -> list[dict[str, Any]]:
    rows = [json.loads(line) for line in DATA.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if in_validation_split(r["question"])]
    if limit is None or limit >= len(rows):
        return rows
    rng = random.Random(seed)
    unsafe = [r for r in rows if r["label"] == "unsafe"]
    safe = [r for r in rows if r["label"] != "unsafe"]
    share = len(unsafe) / len(rows)
    n_unsafe = max(1, round(limit * share))
    return rng.sample(unsafe, n_unsafe) + rng.sample(safe, limit - n_unsafe)


def measure(kind: str, rows: list[dict[str, Any]], args: argparse.Namespace) -> dict[str, Any]:
    policy = load_policy(args.policy)
    started = time.perf_counter()
    scorer = make_scorer(args.model, args.model_name) if kind in {"self", "cascade"} else None
    judge = build_judge(policy, scorer=scorer, override=kind)
    load_s = time.perf_counter() - started
    pairs = [(r["question"], r["answer"]) for r in rows]
    started = time.perf_counter()
    verdicts = judge.judge_many(pairs, explain=False)
    elapsed = time.perf_counter() - started
    labels = [r["label"] == "unsafe" for r in rows]
    scores = [v.score for v in verdicts]
    threshold = policy.threshold_for(policy.checked_rules()[0])
    f1, best_threshold = best_f1(labels, scores)
    undecided = sum(1 for v in verdicts if v.undecided)
    return {
        "judge": kind,
        "model": (args.model or "embedded SmolLM2-135M") if scorer else "-",
        "n": len(rows),
        "unsafe": sum(labels),
        "roc_auc": roc_auc(labels, scores),
        "threshold": threshold,
        "f1_at_threshold": f1_at(labels, scores, threshold),
        "best_f1": f1,
        "best_threshold": best_threshold,
        "false_violation_rate": false_violation_rate(labels, scores, threshold),
        "undecided": undecided,
        "pairs_per_s": len(rows) / elapsed,
        "load_s": load_s,
        "forward_tokens_per_pair": sum(v.cost.forward_tokens for v in verdicts) / len(rows),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--judges", default="embedding,self", help="comma-separated: embedding, self, cascade")
    parser.add_argument("--policy", default="harmless")
    parser.add_argument("--model", help="self-evaluation model: default, a local path, or an OpenAI-compatible URL")
    parser.add_argument("--model-name")
    parser.add_argument("--self-limit", type=int, default=200, help="sample size for self / cascade")
    parser.add_argument("--quick", action="store_true", help="small samples (a smoke run)")
    parser.add_argument("--json", type=Path, help="also write the results as JSON here")
    args = parser.parse_args()
    if args.quick:
        args.self_limit = min(args.self_limit, 40)
    results = []
    for kind in [k.strip() for k in args.judges.split(",") if k.strip()]:
        limit = args.self_limit if kind in {"self", "cascade"} else (200 if args.quick else None)
        results.append(measure(kind, validation_rows(limit), args))
    print(
        "| judge | model | n (unsafe) | ROC-AUC | F1 @ threshold | best F1 (at) | false-violation rate | "
        "undecided | pairs/s | load s | forward tokens/pair |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(
            f"| {r['judge']} | {r['model']} | {r['n']} ({r['unsafe']}) | {r['roc_auc']:.3f} | "
            f"{r['f1_at_threshold']:.3f} @ {r['threshold']:g} | {r['best_f1']:.3f} ({r['best_threshold']:.2f}) | "
            f"{r['false_violation_rate']:.3f} | {r['undecided']} | {r['pairs_per_s']:.1f} | {r['load_s']:.1f} | "
            f"{r['forward_tokens_per_pair']:.0f} |"
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
