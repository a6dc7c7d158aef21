"""Property-based: random and mutated YAML gives a Policy or a PolicyError, never anything else."""

from __future__ import annotations

from importlib import resources

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from guardrail import PolicyError, parse_policy
from guardrail.policy.source import decode_policy_bytes

SEED_TEXTS = [
    resources.files("guardrail.policies").joinpath(f"{name}.yaml").read_text(encoding="utf-8")
    for name in ("harmless", "no_pii", "on_topic")
]


def _accepts_only_policy_or_policy_error(text: str) -> None:
    try:
        parse_policy(text, "fuzz.yaml")
    except PolicyError as err:
        assert err.issues and all(issue.source.startswith(("fuzz.yaml", "builtin:")) for issue in err.issues)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.text(max_size=400))
def test_random_text(text: str) -> None:
    _accepts_only_policy_or_policy_error(text)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300))
def test_random_bytes(raw: bytes) -> None:
    try:
        text = decode_policy_bytes(raw, "fuzz.yaml")
    except PolicyError:
        return
    _accepts_only_policy_or_policy_error(text)


_YAML_BITS = st.sampled_from(
    [
        ":",
        "-",
        " ",
        "\n",
        "  ",
        "{",
        "}",
        "[",
        "]",
        "&a",
        "*a",
        "!!python/object:os.system",
        "'",
        '"',
        "#",
        "|",
        ">",
        "<<: *a",
        "null",
        "1.5",
        "-3",
        "true",
        "rules",
        "id",
        "threshold",
        "\t",
        "\x00",
        "???",
        "%YAML 1.1",
    ]
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    seed=st.sampled_from(SEED_TEXTS),
    edits=st.lists(st.tuples(st.floats(0, 1), st.integers(0, 12), _YAML_BITS | st.text(max_size=5)), max_size=6),
)
def test_mutated_valid_policies(seed: str, edits: list[tuple[float, int, str]]) -> None:
    text = seed
    for where, cut, insert in edits:
        at = int(where * len(text))
        text = text[:at] + insert + text[at + cut :]
    _accepts_only_policy_or_policy_error(text)
