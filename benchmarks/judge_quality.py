"""Judge quality and speed: our validation split and every public set in ../shared/data/eval/.

    .venv/bin/python benchmarks/judge_quality.py                       # embedding judge, every set (~5 min)
    .venv/bin/python benchmarks/judge_quality.py --judges embedding self --self-limit 60   # + self-evaluation
    .venv/bin/python benchmarks/judge_quality.py --quick               # 200 rows a set, for a smoke run
    .venv/bin/python benchmarks/judge_quality.py --judges grader --limit 600   # the independent grader

For each judge and set: ROC-AUC, F1 / precision / recall / false-violation rate at the shipped threshold (the
policy's, 0.5), and for our validation split F1 at 25 / 50 / 100 % of each answer (a prefix of an unsafe answer
keeps its label: strict). Pairs/s is measured on whole answers on this machine (2 cores in CI), model loading
excluded; units/s on those prefixes, judged as the guard judges a streaming unit (the question and the answer's last
window, one call each), and units_per_s_concurrent on the 50 % ones asked all at once (concurrent streams: the
judge's worker batches them; concurrent_max_diff, how far a score moved beside others). The embedding head was
trained and its threshold chosen on the training split only (benchmarks/judge_data.py); eval/ is read here and
nowhere else. ``self`` is self-evaluation by the embedded SmolLM2-135M (slow and near chance), on a stratified
sample; ``stream`` is the stream head on that model's hidden states (one forward of the whole chat per pair here),
on a stratified sample too. ``grader`` is the independent grader (guardrail/judges/grader.py), trained on our
validation split's questions: its validation row is its own held-out part of that split (sha256 % 25 == 0). "no
question": the validation answers with the question blanked (texts judged on their own, as in the moderation and
ToxicChat rows). Writes a JSON report with --out.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import sys
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import judge_data  # noqa: E402

from guardrail.judges.metrics import f1_at, false_violation_rate, roc_auc  # noqa: E402
from guardrail.policy import load_policy  # noqa: E402
from guardrail.presets import resolve_judge  # noqa: E402


def sample(rows: list[dict[str, Any]], limit: int | None, seed: int = 0) -> list[dict[str, Any]]:
    """``limit`` rows, stratified so both labels keep their share (all rows when ``limit`` is None)."""
    if limit is None or limit >= len(rows):
        return rows
    rng = random.Random(seed)
    unsafe = [r for r in rows if r["unsafe"]]
    safe = [r for r in rows if not r["unsafe"]]
    n_unsafe = max(1, round(limit * len(unsafe) / len(rows)))
    return rng.sample(unsafe, n_unsafe) + rng.sample(safe, limit - n_unsafe)


def quality(labels: list[bool], scores: list[float], threshold: float) -> dict[str, float]:
    tp = sum(1 for y, s in zip(labels, scores, strict=True) if y and s >= threshold)
    flagged = sum(1 for s in scores if s >= threshold)
    if all(labels):  # a probe of unsafe answers only: how many are caught
        return {"recall": round(tp / len(labels), 4), "n": len(labels), "unsafe": len(labels)}
    return {
        "roc_auc": round(roc_auc(labels, scores), 4),
        "f1": round(f1_at(labels, scores, threshold), 4),
        "precision": round(tp / flagged, 4) if flagged else 0.0,
        "recall": round(tp / sum(labels), 4),
        "false_violation_rate": round(false_violation_rate(labels, scores, threshold), 4),
        "n": len(labels),
        "unsafe": sum(labels),
    }


def measure(judge: Any, rows: list[dict[str, Any]], threshold: float, *, prefixes: bool) -> dict[str, Any]:
    pairs = [(r["question"], r["answer"]) for r in rows]
    labels = [bool(r["unsafe"]) for r in rows]
    started = time.perf_counter()
    scores = [v.score for v in judge.judge_many(pairs)]
    elapsed = time.perf_counter() - started
    result = quality(labels, scores, threshold) | {"pairs_per_s": round(len(pairs) / elapsed, 1)}
    if prefixes:  # as while streaming: the judge sees the answer so far
        units, unit_s = 0, 0.0
        for fraction in (0.25, 0.5):
            partial = [(q, judge_data.prefix(a, fraction)) for q, a in pairs]
            started = time.perf_counter()
            partial_scores = [judge.judge(q, a, partial=True).score for q, a in partial]
            units, unit_s = units + len(partial), unit_s + time.perf_counter() - started
            result[f"f1_prefix_{int(fraction * 100)}"] = round(f1_at(labels, partial_scores, threshold), 4)
        # a streaming unit: the question and the answer's last window, one call each (what the guard pays per unit)
        result["units_per_s"] = round(units / unit_s, 1)
        # the same 50 % units asked all at once, as concurrent streams ask: the judge's worker batches them
        started = time.perf_counter()
        batched = asyncio.run(_all_at_once(judge, partial))
        result["units_per_s_concurrent"] = round(len(partial) / (time.perf_counter() - started), 1)
        # how far a unit's score moved when judged beside others (0.0 for the embedding judge: exact batches)
        result["concurrent_max_diff"] = max(abs(a - b) for a, b in zip(batched, partial_scores, strict=True))
        result["f1_prefix_100"] = result["f1"]
    return result


async def _all_at_once(judge: Any, pairs: list[tuple[str, str]]) -> list[float]:
    verdicts = await asyncio.gather(*(judge.ajudge(q, a, partial=True) for q, a in pairs))
    return [v.score for v in verdicts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument(
        "--judges",
        nargs="+",
        default=["embedding"],
        choices=["embedding", "embedding-english", "embedding-accurate", "self", "stream", "grader"],
        help="embedding-english: the embedding judge with judge.multilingual off (MiniLM's head for every answer); "
        "embedding-accurate: with judge.encoder: accurate (mpnet's head for English answers); "
        "stream: the stream head on the embedded model's hidden states",
    )
    parser.add_argument("--policy", default="harmless")
    parser.add_argument("--limit", type=int, default=None, help="rows per set (stratified)")
    parser.add_argument(
        "--self-limit", type=int, default=60, help="rows per set for the judges that run the 135M model (self, stream)"
    )
    parser.add_argument("--quick", action="store_true", help="200 rows a set")
    parser.add_argument("--sets", nargs="+", help="only the sets whose name contains one of these")
    parser.add_argument("--out", type=Path, help="write the report as JSON")
    args = parser.parse_args()
    limit = 200 if args.quick else args.limit

    rows = judge_data.load_training_rows()
    sets = {"validation (ours)": [r for r in rows if judge_data.in_validation_split(r["question"])]}
    # the same answers with no question: how the judge reads a text on its own (an input rule, a moderation call)
    sets["validation (ours), no question"] = [{**r, "question": ""} for r in sets["validation (ours)"]]
    # the grader trains on "validation (ours)" but for its own fifth of it (scripts/train_multilingual_head.py)
    grader_validation = [r for r in rows if judge_data.in_validation_split(r["question"], judge_data.GRADER_FOLDS)]
    sets.update(judge_data.eval_sets())
    sets.update(judge_data.multilingual_sets())
    sets.update(judge_data.probe_sets())
    if args.sets:
        sets = {name: rows for name, rows in sets.items() if any(part in name for part in args.sets)}
    policy = load_policy(args.policy)
    threshold = policy.threshold_for(policy.checked_rules()[0])
    report: dict[str, Any] = {"threshold": threshold, "results": {}}
    for kind in args.judges:
        started = time.perf_counter()
        backend = None
        slow = kind in {"self", "stream"}  # they run the 135M model: a sample of each set
        if slow:
            from guardrail.presets import make_backend

            backend = make_backend(None)
        if kind in {"embedding-english", "embedding-accurate"}:
            setting = {"multilingual": "off"} if kind == "embedding-english" else {"encoder": "accurate"}
            changed = policy.model_copy(update={"judge": policy.judge.model_copy(update=setting)})
            judge = resolve_judge(changed, None, "embedding")
        else:
            judge = resolve_judge(policy, backend, kind)
        load_s = time.perf_counter() - started
        for name, set_rows in sets.items():
            if kind == "grader" and name.startswith("validation (ours)"):  # it trained on ours: its own part
                blank = name.endswith("no question")
                name = "validation (grader's own)" + (", no question" if blank else "")
                set_rows = [{**r, "question": ""} for r in grader_validation] if blank else grader_validation
            chosen = sample(set_rows, min(limit or 10**9, args.self_limit) if slow else limit)
            prefixes = name.startswith("validation") and not name.endswith("no question")
            result = measure(judge, chosen, threshold, prefixes=prefixes)
            result["load_s"] = round(load_s, 1)
            report["results"][f"{kind} | {name}"] = result
            print(f"{kind:9} {name:22} " + "  ".join(f"{k} {v}" for k, v in result.items()), flush=True)
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
