"""Judged units per second of the embedding judge's encoder, as shipped and as it could run.

    .venv/bin/python benchmarks/judge_speed.py            # 400 units, about 1 minute on 2 cores

A unit is what the guard judges at a sentence boundary while streaming: the question and the last window of
the answer so far. Units here are our validation split's answers cut at 50 % (benchmarks/judge_data.py),
scored by MiniLM-L6 with the shipped head five ways: int8, one window per call (as shipped: dynamic int8
scales activations per call, so a batched window's score would depend on its neighbours), on torch's threads
and on one (as the judge's worker runs it, ``judge.threads``; CPU time a unit is printed too); fp32, one per call;
fp32 in batches of 32 (length-sorted, padding masked: exact to float rounding, the largest feature difference
from one per call is printed); int8 in batches of 32, which the judge does not do (scores move with their
batch neighbours: the largest difference is printed), the bound on what int8 with per-row activation scales,
exact in a batch, could reach. ROC-AUC and F1 at 0.5 on these partial answers say what other features do to
a head trained on the int8 ones. ../shared/data/eval/ is not read.
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
    args = parser.parse_args()
    import torch

    rows = [r for r in judge_data.load_training_rows() if judge_data.in_validation_split(r["question"])]
    random.Random(0).shuffle(rows)
    rows = rows[: args.units]
    units = [(r["question"], judge_data.prefix(r["answer"], 0.5)) for r in rows]
    labels = [bool(r["unsafe"]) for r in rows]
    int8, fp32 = CrossEncoder(head_path("harmless")), CrossEncoder(head_path("harmless"), quantize=False)
    int8_batched = CrossEncoder(head_path("harmless"))
    int8_batched.quantized = False  # lifts the one-window-a-call rule: what exact per-row scales could reach
    threads = torch.get_num_threads()
    print(f"{len(units)} units, torch threads {threads}")
    runs = {
        f"int8, one window a call, {threads} threads": (int8, 1, threads),
        "int8, one window a call, 1 thread (shipped: `judge.threads`)": (int8, 1, 1),
        "fp32, one window a call": (fp32, 1, threads),
        f"fp32, batches of {args.batch}": (fp32, args.batch, threads),
        f"int8, batches of {args.batch} (not exact: one activation scale a batch)": (
            int8_batched,
            args.batch,
            threads,
        ),
    }
    features: dict[str, torch.Tensor] = {}
    scores: dict[str, torch.Tensor] = {}
    print("| encoder | units/s | CPU ms a unit | mean tokens a unit | ROC-AUC | F1 @ 0.5 |\n|---|---|---|---|---|---|")
    for name, (encoder, batch, count) in runs.items():
        torch.set_num_threads(count)
        encoder.features(units[:4], last_only=True, batch_size=batch)  # warm up
        started, cpu = time.perf_counter(), time.process_time()
        features[name], wins = encoder.features(units, last_only=True, batch_size=batch)
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        with torch.inference_mode():
            scores[name] = torch.sigmoid(encoder.head(features[name]).squeeze(-1))
        p = scores[name].tolist()
        tokens = sum(len(w.input_ids) for w in wins) / len(wins)
        print(f"| {name} | {len(units) / elapsed:.1f} | {cpu / len(units) * 1000:.1f} | {tokens:.0f} | "
              f"{metrics.roc_auc(labels, p):.4f} | "
              f"{metrics.f1_at(labels, p, 0.5):.4f} |", flush=True)  # fmt: skip
    int8_one, _, fp32_one, fp32_many, int8_many = runs  # the same units each time: compare the runs row by row
    feature_gap = float((features[fp32_one] - features[fp32_many]).abs().max())
    score_gap = float((scores[int8_one] - scores[int8_many]).abs().max())
    print(f"fp32 batched vs one a call: largest feature difference {feature_gap:.2e}")
    print(f"int8 batched vs one a call: largest score difference {score_gap:.3f}")


if __name__ == "__main__":
    main()
