"""Judge-quality metrics without extra dependencies: ROC-AUC, F1 at a threshold, best F1."""

from __future__ import annotations

from collections.abc import Sequence

__all__ = ["best_f1", "f1_at", "false_violation_rate", "in_validation_split", "question_fold", "roc_auc"]


def roc_auc(labels: Sequence[bool], scores: Sequence[float]) -> float:
    """Area under the ROC curve (Mann-Whitney U, ties counted half)."""
    pairs = sorted(zip(scores, labels, strict=True))
    positives = sum(1 for label in labels if label)
    negatives = len(labels) - positives
    if not positives or not negatives:
        raise ValueError("ROC-AUC needs both positive and negative labels")
    rank_sum = 0.0
    index = 0
    while index < len(pairs):
        end = index
        while end + 1 < len(pairs) and pairs[end + 1][0] == pairs[index][0]:
            end += 1
        mean_rank = (index + end) / 2 + 1
        rank_sum += mean_rank * sum(1 for k in range(index, end + 1) if pairs[k][1])
        index = end + 1
    return (rank_sum - positives * (positives + 1) / 2) / (positives * negatives)


def f1_at(labels: Sequence[bool], scores: Sequence[float], threshold: float) -> float:
    """F1 of 'violation' when a score at or above ``threshold`` counts as one."""
    tp = sum(1 for y, s in zip(labels, scores, strict=True) if y and s >= threshold)
    fp = sum(1 for y, s in zip(labels, scores, strict=True) if not y and s >= threshold)
    fn = sum(1 for y, s in zip(labels, scores, strict=True) if y and s < threshold)
    return 2 * tp / (2 * tp + fp + fn) if tp else 0.0


def best_f1(labels: Sequence[bool], scores: Sequence[float]) -> tuple[float, float]:
    """The best F1 over all thresholds, and the threshold that reaches it (one pass over the sorted scores)."""
    positives = sum(1 for label in labels if label)
    ranked = sorted(zip(scores, labels, strict=True), key=lambda pair: -pair[0])
    best, tp, fp, index = (0.0, 0.5), 0, 0, 0
    while index < len(ranked):
        threshold = ranked[index][0]
        while index < len(ranked) and ranked[index][0] == threshold:  # ties share one threshold
            tp, fp, index = tp + ranked[index][1], fp + (not ranked[index][1]), index + 1
        f1 = 2 * tp / (tp + fp + positives) if tp else 0.0
        if f1 > best[0]:
            best = (f1, threshold)
    return best


def false_violation_rate(labels: Sequence[bool], scores: Sequence[float], threshold: float) -> float:
    """Share of compliant responses judged violating."""
    compliant = [s for y, s in zip(labels, scores, strict=True) if not y]
    return sum(1 for s in compliant if s >= threshold) / len(compliant) if compliant else 0.0


def question_fold(question: str, folds: int = 5) -> int:
    """The fold of ``folds`` a question falls in, by the sha256 of its text: the fixed split of every judge."""
    import hashlib

    return int(hashlib.sha256(question.encode("utf-8")).hexdigest(), 16) % folds


def in_validation_split(question: str, folds: int = 5) -> bool:
    """The fixed question split used to train and to benchmark judges: one fold in ``folds`` by text hash."""
    return question_fold(question, folds) == 0
