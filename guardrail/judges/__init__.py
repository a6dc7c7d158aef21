"""Judges: self-evaluation (RAIN), embedding classifier, patterns, the cascade that combines them, the
stream head on the local generating model's own hidden states, and the independent grader (for grading what
another judge guarded).

``build_judge(policy, scorer=...)`` gives the judge a policy asks for. torch and transformers load only
when a local scorer or the embedding judge is built.
"""

from guardrail.judges.base import Judge, Prompt, combine
from guardrail.judges.cascade import CascadeJudge
from guardrail.judges.embedding import EmbeddingJudge
from guardrail.judges.factory import JUDGE_KINDS, PolicyJudge, build_judge, needs_scorer
from guardrail.judges.grader import GraderJudge
from guardrail.judges.pattern import PatternJudge
from guardrail.judges.question import Question, build_question
from guardrail.judges.scorers import LogprobScorer, TextScorer, parse_option
from guardrail.judges.self_eval import OptionProbs, OptionScorer, SelfEvalJudge
from guardrail.judges.stream_head import StreamHeadJudge
from guardrail.judges.verdict import Cost, Verdict

__all__ = [
    "JUDGE_KINDS",
    "CascadeJudge",
    "Cost",
    "EmbeddingJudge",
    "GraderJudge",
    "Judge",
    "LogprobScorer",
    "OptionProbs",
    "OptionScorer",
    "PatternJudge",
    "PolicyJudge",
    "Prompt",
    "Question",
    "SelfEvalJudge",
    "StreamHeadJudge",
    "TextScorer",
    "Verdict",
    "build_judge",
    "build_question",
    "combine",
    "needs_scorer",
    "parse_option",
]
