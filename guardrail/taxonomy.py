"""The trustworthiness taxonomy of "Trustworthy LLMs" (arXiv 2308.05374): 7 categories, 29 sub-categories.

Rule categories in policies are written ``category`` or ``category.sub_category``, e.g. ``safety.violence``.
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType
from typing import Final

__all__ = ["CATEGORIES", "EVALUATION_ONLY", "all_category_ids", "is_category_id"]

CATEGORIES: Final[Mapping[str, tuple[str, ...]]] = MappingProxyType(
    {
        "reliability": ("misinformation", "hallucination", "inconsistency", "miscalibration", "sycophancy"),
        "safety": (
            "violence",
            "unlawful_conduct",
            "harms_to_minors",
            "adult_content",
            "mental_health_issues",
            "privacy_violation",
        ),
        "fairness": ("injustice", "stereotype_bias", "preference_bias", "disparate_performance"),
        "resistance_to_misuse": (
            "propagandistic_misuse",
            "cyberattack_misuse",
            "social_engineering_misuse",
            "leaking_copyrighted_content",
        ),
        "explainability_and_reasoning": (
            "lack_of_interpretability",
            "limited_logical_reasoning",
            "limited_causal_reasoning",
        ),
        "social_norms": ("toxicity", "unawareness_of_emotions", "cultural_insensitivity"),
        "robustness": (
            "prompt_attacks",
            "paradigm_and_distribution_shift",
            "interventional_effect",
            "poisoning_attacks",
        ),
    }
)

#: Sub-categories that one response cannot show; they are measured across many answers (``guardrail eval``).
EVALUATION_ONLY: Final[frozenset[str]] = frozenset(
    {
        "reliability.inconsistency",
        "reliability.miscalibration",
        "fairness.disparate_performance",
        "explainability_and_reasoning.lack_of_interpretability",
        "robustness.paradigm_and_distribution_shift",
        "robustness.interventional_effect",
        "robustness.poisoning_attacks",
    }
)


def all_category_ids() -> list[str]:
    """Every valid category id: the 7 categories and the 29 ``category.sub_category`` ids."""
    ids: list[str] = []
    for category, subs in CATEGORIES.items():
        ids.append(category)
        ids.extend(f"{category}.{sub}" for sub in subs)
    return ids


def is_category_id(value: str) -> bool:
    """True when ``value`` names a category or a sub-category of the taxonomy."""
    return value in set(all_category_ids())
