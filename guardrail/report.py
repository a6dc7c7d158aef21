"""Evaluation reports: Markdown with PNG charts (safe-answer rate per category, guarded vs unguarded, like the
paper's figure of safe rates across models) and a JSON summary; and a side-by-side comparison of runs.
Charts need matplotlib (the ``eval`` extra); without it the report says so and keeps the tables."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from guardrail.evaluation import MODES, load_results, summarize

__all__ = ["compare", "write_report"]


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _chart(summary: dict[str, Any], key: str, title: str, path: Path) -> bool:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    categories = [
        c for c in summary["modes"]["unguarded"] if c != "*" and summary["modes"]["unguarded"][c][key] is not None
    ]
    categories.append("*")
    fig, ax = plt.subplots(figsize=(max(6.0, 1.1 * len(categories) + 2), 4))
    width = 0.38
    for offset, mode, color in ((-width / 2, "unguarded", "#9aa5b1"), (width / 2, "guarded", "#2e7d32")):
        values = [100 * (summary["modes"].get(mode, {}).get(c, {}).get(key) or 0.0) for c in categories]
        bars = ax.bar([i + offset for i in range(len(categories))], values, width, label=mode, color=color)
        ax.bar_label(bars, fmt="%.0f", fontsize=7)
    ax.set_xticks(range(len(categories)), ["all" if c == "*" else c.replace("_", " ") for c in categories],
                  rotation=30, ha="right", fontsize=8)  # fmt: skip
    ax.set_ylim(0, 110)
    ax.set_ylabel("%")
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0))
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def write_report(run_dir: str | Path) -> Path:
    """``report.md``, ``summary.json`` and the charts, from a run folder's results."""
    run_dir = Path(run_dir)
    rows = load_results(run_dir)
    if not rows:
        raise ValueError(f"{run_dir} has no results yet: run `guardrail eval` first")
    summary = summarize(rows)
    meta = json.loads((run_dir / "meta.json").read_text(encoding="utf-8")) if (run_dir / "meta.json").exists() else {}
    summary["meta"] = meta
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2) + "\n", encoding="utf-8")
    charts = [
        ("safe_rate", "Safe-answer rate per category", "safe_rate.png"),
        ("refusal_rate", "Refusal rate per category", "refusal_rate.png"),
    ]
    drawn = [name for key, title, name in charts if _chart(summary, key, title, run_dir / name)]
    lines = [
        f"# Evaluation: {meta.get('model', 'model')} with policy {meta.get('policy', '?')}",
        "",
        f"Answers judged by: **{meta.get('judge', '?')}**"
        f"{', a judge the guard does not use' if meta.get('independent_grade') else ''}; "
        f"guard: {meta.get('guard', '?')}; max_tokens "
        f"{meta.get('max_tokens', '?')}, greedy decoding, seed {meta.get('seed', 0)}.",
        ""
        if meta.get("independent_grade", True)
        else "\n**Not an independent grade**: the judge that graded the answers also guarded them, so the guarded "
        "safe rate counts what the guard's own judge passes. Grade with another judge for an honest number.\n",
        "| category | n | safe (unguarded) | safe (guarded) | refusal (unguarded) | refusal (guarded) | "
        "rewinds / answer (share rewound) | extra tokens / answer | latency s (unguarded / guarded) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    unguarded, guarded = summary["modes"]["unguarded"], summary["modes"].get("guarded", {})
    for category in sorted(unguarded, key=lambda c: (c == "*", c)):
        u, g = unguarded[category], guarded.get(category, {})
        name = "**all**" if category == "*" else category
        refusal_u = u["refusal_rate"] if u["refusal_rate"] is not None else u["over_refusal_rate"]
        refusal_g = g.get("refusal_rate") if g.get("refusal_rate") is not None else g.get("over_refusal_rate")
        suffix = " (over-refusal)" if category == "benign" else ""
        lines.append(
            f"| {name} | {u['n']} | {_pct(u['safe_rate'])} | {_pct(g.get('safe_rate'))} | {_pct(refusal_u)}{suffix} | "
            f"{_pct(refusal_g)}{suffix} | {g.get('rewinds_mean', 0):.2f} ({_pct(g.get('rewound_rate'))}) | "
            f"{g.get('extra_tokens_mean', 0):.1f} | "
            f"{u['latency_mean_s']:.2f} / {g.get('latency_mean_s', 0):.2f} |"
        )
    if "typo_consistency" in summary:
        consistency = summary["typo_consistency"]
        lines += ["", "Typo robustness (same verdict and refusal with and without typos): "
                  + ", ".join(f"{mode} {_pct(consistency.get(mode))}" for mode in MODES)]  # fmt: skip
    lines.append("")
    if drawn:
        lines += [f"![{name}]({name})" for name in drawn]
    else:
        lines.append("(charts need matplotlib: `pip install 'guardrail-rewind[eval]'`)")
    report = run_dir / "report.md"
    report.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return report


def compare(run_dirs: Sequence[str | Path]) -> str:
    """Markdown putting several runs side by side: overall and per-category safe rates, refusals, cost."""
    summaries = []
    for run_dir in run_dirs:
        path = Path(run_dir)
        summary = summarize(load_results(path))
        meta = json.loads((path / "meta.json").read_text(encoding="utf-8")) if (path / "meta.json").exists() else {}
        summaries.append((path.name, meta, summary))
    header = "| metric | " + " | ".join(f"{name} ({meta.get('model', '?')})" for name, meta, _ in summaries) + " |"
    lines = [header, "|---|" + "---|" * len(summaries)]
    categories = sorted({c for _, _, s in summaries for c in s["modes"]["unguarded"]}, key=lambda c: (c != "*", c))
    for mode in MODES:
        for category in categories:
            values = [s["modes"].get(mode, {}).get(category, {}).get("safe_rate") for _, _, s in summaries]
            label = "all" if category == "*" else category
            lines.append(f"| safe, {mode}, {label} | " + " | ".join(_pct(v) for v in values) + " |")
    for key, label in (("refusal_rate", "refusal"), ("rewinds_mean", "rewinds / answer")):
        values = [s["modes"].get("guarded", {}).get("*", {}).get(key) for _, _, s in summaries]
        shown = [_pct(v) if key == "refusal_rate" else ("-" if v is None else f"{v:.2f}") for v in values]
        lines.append(f"| {label}, guarded, all | " + " | ".join(shown) + " |")
    return "\n".join(lines)
