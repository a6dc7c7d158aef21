"""Judged units per second of the embedding judge's encoder: one window a call and in batches, 1 and 2 threads.

    .venv/bin/python benchmarks/judge_speed.py            # 400 units, about 2 minutes on 2 cores

A unit is what the guard judges at a sentence boundary while streaming: the question and the last window of
the answer so far. Units here are our validation split's answers cut at 50 % (benchmarks/judge_data.py),
scored by MiniLM-L6 with the shipped head: the shipped int8 encoder (guardrail/judges/int8.py: one activation
scale per window, so a batch is exact) one window a call and in batches (length-sorted, padding masked), on
one thread (as the judge's worker runs it, ``judge.threads``) and on torch's threads; fp32 one a call and in
batches for comparison. CPU time a unit is printed too. The script checks that every batched run gives each
unit the features it got alone, bit for bit (int8) or to float rounding (fp32), and prints the largest
difference. ROC-AUC and F1 at 0.5 on these partial answers are the same for every int8 run by construction.
../shared/data/eval/ is not read.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))

import judge_data  # noqa: E402

from guardrail.judges import metrics  # noqa: E402
from guardrail.judges.embedding import CrossEncoder, head_path  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--units", type=int, default=400)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument(
        "--head", default="harmless", help="the shipped head (harmless_accurate: judge.encoder: accurate, mpnet-base)"
    )
    args = parser.parse_args()
    import torch

    rows = [r for r in judge_data.load_training_rows() if judge_data.in_validation_split(r["question"])]
    random.Random(0).shuffle(rows)
    rows = rows[: args.units]
    units = [(r["question"], judge_data.prefix(r["answer"], 0.5)) for r in rows]
    labels = [bool(r["unsafe"]) for r in rows]
    int8, fp32 = CrossEncoder(head_path(args.head)), CrossEncoder(head_path(args.head), quantize=False)
    threads = torch.get_num_threads()
    print(f"{len(units)} units, torch threads {threads}")
    runs = {
        "int8, one window a call, 1 thread": (int8, 1, 1),
        f"int8, batches of {args.batch}, 1 thread (shipped: `judge.threads`)": (int8, args.batch, 1),
        f"int8, one window a call, {threads} threads": (int8, 1, threads),
        f"int8, batches of {args.batch}, {threads} threads": (int8, args.batch, threads),
        f"fp32, one window a call, {threads} threads": (fp32, 1, threads),
        f"fp32, batches of {args.batch}, {threads} threads": (fp32, args.batch, threads),
    }
    features: dict[str, torch.Tensor] = {}
    print("| encoder | units/s | CPU ms a unit | mean tokens a unit | ROC-AUC | F1 @ 0.5 |\n|---|---|---|---|---|---|")
    for name, (encoder, batch, count) in runs.items():
        torch.set_num_threads(count)
        encoder.features(units[:4], last_only=True, batch_size=batch)  # warm up
        started, cpu = time.perf_counter(), time.process_time()
        features[name], wins = encoder.features(units, last_only=True, batch_size=batch)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        with torch.inference_mode():
            p = torch.sigmoid(encoder.head(features[name]).squeeze(-1)).tolist()
        tokens = sum(len(w.input_ids) for w in wins) / len(wins)
        print(f"| {name} | {len(units) / elapsed:.1f} | {cpu / len(units) * 1000:.1f} | {tokens:.0f} | "
              f"{metrics.roc_auc(labels, p):.4f} | "
              f"{metrics.f1_at(labels, p, 0.5):.4f} |", flush=True)  # fmt: skip
    names = list(runs)  # the same units each time: compare the runs row by row
    for kind, group in (("int8", names[:4]), ("fp32", names[4:])):
        gap = max(float((features[group[0]] - features[other]).abs().max()) for other in group[1:])
        print(f"{kind}: largest feature difference between its runs {gap:.2e}")


if __name__ == "__main__":
    main()
