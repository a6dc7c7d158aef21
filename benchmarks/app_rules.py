"""App rules the judges were never trained on: how well a rule written as a criterion and three examples of
each kind is judged, with no training by the user.

    .venv/bin/python benchmarks/app_rules.py [--out app_rules.json]

Rules: benchmarks/data/app_rules.yaml (3 dev rules, used to choose the example-based scoring; 5 test rules:
support-bot refunds, medical dosage, competitor, personal data, tone). Labelled responses (5 violating and 5
compliant per rule, on the rule's own topic, so topic words alone cannot separate them):
benchmarks/data/app_rules.jsonl; "padded" rows put each response between two harmless sentences. Each rule is
judged by the judge the library gives it (``resolve_judge`` over the embedded model: the embedding judge's
example prototypes) through ``Judge.judge``, as a Guard would judge a complete answer.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from guardrail.judges.metrics import f1_at, false_violation_rate, roc_auc  # noqa: E402
from guardrail.policy import load_policy  # noqa: E402
from guardrail.presets import resolve_judge  # noqa: E402

DATA = REPO / "benchmarks" / "data"
#: the same responses inside a longer answer: one violating sentence among harmless ones must still count
PADDED = "Thanks for your message, I'm happy to help. {} Is there anything else I can help you with today?"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="write the report as JSON")
    args = parser.parse_args()
    policy = load_policy(DATA / "app_rules.yaml")
    rows = [json.loads(line) for line in (DATA / "app_rules.jsonl").read_text().splitlines() if line.strip()]
    report: dict[str, object] = {}
    for split in ("dev", "test", "dev padded", "test padded"):
        per_rule: dict[str, float] = {}
        labels: list[bool] = []
        scores: list[float] = []
        started, judged = time.perf_counter(), 0
        for rule in policy.rules:
            mine = [r for r in rows if r["rule"] == rule.id and r["split"] == split.split()[0]]
            if split.endswith("padded"):
                mine = [{**r, "response": PADDED.format(r["response"])} for r in mine]
            if not mine:
                continue
            one = policy.model_copy(update={"rules": [rule]})
            judge = resolve_judge(one, None)
            got = [judge.judge(r["question"], r["response"]).score for r in mine]
            truth = [bool(r["violates"]) for r in mine]
            per_rule[rule.id] = round(roc_auc(truth, got), 3)
            labels += truth
            scores += got
            judged += len(mine)
        elapsed = time.perf_counter() - started
        report[split] = {
            "rules": per_rule,
            "mean_rule_roc_auc": round(statistics.mean(per_rule.values()), 3),
            "pooled_roc_auc": round(roc_auc(labels, scores), 3),
            "f1_at_0.5": round(f1_at(labels, scores, 0.5), 3),
            "false_violation_rate": round(false_violation_rate(labels, scores, 0.5), 3),
            "n": len(labels),
            "pairs_per_s": round(judged / elapsed, 1),
        }
        print(f"{split}: {json.dumps(report[split])}")
    if args.out:
        args.out.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
