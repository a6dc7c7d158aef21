"""Loading policies: built-ins, extends, and a located PolicyError for every kind of broken file."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from guardrail import PolicyError, builtin_policy_names, load_policy, parse_policy
from guardrail.policy import Policy
from guardrail.taxonomy import CATEGORIES, EVALUATION_ONLY

BROKEN = Path(__file__).parent / "data" / "broken_policies"


def test_builtins_load() -> None:
    names = builtin_policy_names()
    assert {"harmless", "trustllm", "no_pii", "on_topic", "no_competitors"} <= set(names)
    for name in names:
        policy = load_policy(name)
        assert policy.rules, name


def test_trustllm_covers_the_taxonomy() -> None:
    policy = load_policy("trustllm")
    categories = [rule.category for rule in policy.rules]
    expected = [f"{cat}.{sub}" for cat, subs in CATEGORIES.items() for sub in subs]
    assert sorted(categories) == sorted(expected)  # type: ignore[type-var]
    assert len(expected) == 29 and len(CATEGORIES) == 7
    only = {rule.category for rule in policy.rules if rule.evaluation_only}
    assert only == EVALUATION_ONLY
    assert len(policy.checked_rules()) == 29 - len(EVALUATION_ONLY)


def test_harmless_is_rains_judgment() -> None:
    rule = load_policy("harmless").rule("harmful")
    assert "refuses" in rule.criterion and rule.examples.violating and rule.examples.compliant


def test_extends_merges_rules_and_settings(tmp_path: Path) -> None:
    (tmp_path / "base.yaml").write_text(
        "name: base\nrules:\n  - {id: a, criterion: first}\n  - {id: b, criterion: second}\n"
        "rewind: {mode: sentence, max_rewinds: 5}\n"
    )
    (tmp_path / "app.yaml").write_text(
        "name: app\nextends: base.yaml\nrules:\n  - {id: b, criterion: replaced}\n  - {id: c, criterion: new}\n"
        "rewind: {max_rewinds: 2}\n"
    )
    policy = load_policy(tmp_path / "app.yaml")
    assert [(r.id, r.criterion) for r in policy.rules] == [("a", "first"), ("b", "replaced"), ("c", "new")]
    assert policy.rewind.mode == "sentence" and policy.rewind.max_rewinds == 2
    assert policy.name == "app" and policy.extends == "base.yaml"


def test_extends_error_points_into_the_child(tmp_path: Path) -> None:
    (tmp_path / "app.yaml").write_text(
        "name: app\nextends: harmless\nrules:\n  - {id: z, criterion: c, threshold: 2}\n"
    )
    with pytest.raises(PolicyError) as info:
        load_policy(tmp_path / "app.yaml")
    issue = info.value.issues[0]
    # the child's rule 0 is rule 1 after merging with harmless; the message names the child's own position
    assert (issue.line, issue.path) == (4, "rules[0].threshold")
    assert "must be between 0 and 1, got 2" in issue.message


def test_builtin_extended_by_name() -> None:
    policy = load_policy("on_topic")
    assert [rule.id for rule in policy.rules] == ["harmful", "off-topic"]


# file name -> the exact line `guardrail check` prints (relative to BROKEN)
EXPECTED = {
    "thr.yaml": "5:16: rules[0].threshold: must be between 0 and 1, got 1.5",
    "thrtype.yaml": "5:16: rules[0].threshold: expected a number, got a string 'high'",
    "typo.yaml": "5:5: rules[0].severty: unknown key 'severty' (did you mean 'severity'?)",
    "dup.yaml": "2:1: name: duplicate key 'name' (first defined on line 1)",
    "dupid.yaml": "2:37: rules[1].id: duplicate rule id 'a' (first on line 2)",
    "empty.yaml": "1:1: empty policy file",
    "act.yaml": "6:5: actions[0]: unknown action 'refuze' (did you mean 'refuse'?)",
    "cat.yaml": "5:15: rules[0].category: unknown TrustLLM category 'safety.violense' (did you mean 'safety.vi",
    "ext.yaml": "2:10: extends: no policy file 'harmles' and no built-in policy of that name (did you mean 'harml",
    "judge.yaml": "5:12: rules[0].judge: unknown judge 'strictt' (did you mean 'strict'?)",
    "mode.yaml": "3:9: rewind.mode: must be 'auto', 'token', 'sentence' or 'off', got 'tokens' (did you mean 'token'?)",
    "py.yaml": "1:7: name: unsupported YAML tag",
    "re.yaml": "5:14: rules[0].patterns: regular expression '(unclosed' is not accepted: missing )",
    "rec.yaml": "1:4: a[0]: recursive alias",
    "syn.yaml": "2:6: invalid YAML: mapping values are not allowed here",
    "latin.yaml": "1:1: not UTF-8 text (byte 0xff)",
    "toplist.yaml": "1:1: a policy must be a mapping",
    "evalonly.yaml": "3:5: rules[0]: category 'reliability.miscalibration' cannot be seen in one response",
    "ladder.yaml": "3:3: actions: step 0 is 'refuse', which ends the ladder",
    "missing.yaml": "3:5: rules[0].criterion: required key is missing",
    "apikey.yaml": "3:36: judges.strict.api_key: unknown key 'api_key' (did you mean 'api_key_env'?)",
    "cycle_a.yaml": "cycle_b.yaml:2:10: extends: cycle:",
    "cycle_b.yaml": "cycle_a.yaml:2:10: extends: cycle:",
}


def test_every_broken_fixture_has_an_expectation() -> None:
    assert sorted(p.name for p in BROKEN.glob("*.yaml")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_broken_file_gives_located_error(name: str) -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(BROKEN / name)
    text = str(info.value.issues[0])
    expected = EXPECTED[name]
    if name.startswith("cycle"):
        assert expected in text
    else:
        assert text.startswith(f"{BROKEN / name}:{expected}"), text


def test_oversized_file(tmp_path: Path) -> None:
    big = tmp_path / "big.yaml"
    with big.open("wb") as handle:
        handle.write(b"name: x\ndescription: '")
        handle.write(b"a" * (50 * 1024 * 1024))
        handle.write(b"'\n")
    with pytest.raises(PolicyError, match=r"policy file '.*big.yaml' is larger than 1 MiB"):
        load_policy(big)


def test_directory_and_missing(tmp_path: Path) -> None:
    with pytest.raises(PolicyError, match="is a directory"):
        load_policy(tmp_path)
    with pytest.raises(PolicyError, match="no policy file"):
        load_policy(tmp_path / "nope.yaml")
    with pytest.raises(PolicyError, match=r"did you mean 'harmless'"):
        load_policy("harmles")


def test_alias_bomb_is_bounded() -> None:
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    for level in range(1, 9):
        prev = f"*a{level - 1}"
        lines.append(f"a{level}: &a{level} [{', '.join([prev] * 10)}]")
    with pytest.raises(PolicyError, match="alias bomb"):
        parse_policy("\n".join(lines))


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_unreadable(tmp_path: Path) -> None:
    path = tmp_path / "secret.yaml"
    path.write_text("name: x\n")
    path.chmod(0)
    with pytest.raises(PolicyError, match="cannot read"):
        load_policy(path)


def test_policy_object_passes_through_and_helpers() -> None:
    policy = Policy.model_validate(
        {
            "name": "p",
            "rules": [
                {"id": "a", "criterion": "x", "threshold": 0.7, "actions": [{"action": "raise"}]},
                {"id": "b", "criterion": "y", "scope": ["input"]},
            ],
        }
    )
    assert load_policy(policy) is policy
    a, b = policy.rules
    assert policy.threshold_for(a) == 0.7 and policy.threshold_for(b) == 0.5
    assert [s.action for s in policy.ladder_for(a)] == ["raise"]
    assert [s.action for s in policy.ladder_for(b)] == ["rewind", "refuse"]
    assert policy.checked_rules("input") == [b] and policy.checked_rules("output") == [a]


def test_version_number_is_kept_as_text() -> None:
    assert parse_policy("name: x\nversion: 1.2\n").version == "1.2"
