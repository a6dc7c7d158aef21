"""The RAIN tree search (arXiv 2309.07124), made fast: ``rewind.strategy: rain``.

A node is a token set; the committed answer grows one token set at a time, each chosen by a search:

- **select** from the root by ``Q_norm + c * P * sqrt(N_parent) / (1 + N)`` (the reference code's form: Q
  normalised by the tree-wide min/max, starting at -1/+1; unvisited children count as the minimum);
- **expand** a leaf into up to ``q`` token sets of length ``token_set_lengths[level]`` (1, 2, 4, then 10):
  the top-q next tokens at the original root, deeper one greedy continuation and samples from the top-``top_k``;
  prior = the token set's probability, normalised over the siblings, mixed 0.75/0.25 with uniform at the root;
- **evaluate** the ``evaluated_children`` most probable new children at once (the others are judged when the
  search visits them): roll each out (temperature 1) to the end of a phrase (``, . ? : ;`` or a newline), then
  judge the whole response so far; value v = +1 / -1 / 0 for pass / violation / undecided (the reference's hard
  votes; ``value: soft`` gives 1 - 2 * P(violation));
- **back up** each judged child's v (one simulation each, as the reference's one rollout) along the path
  (visit counts, running-mean Q); similar siblings share it (cosine of MiniLM embeddings of the text from the
  node to the end of its rollouts >= ``similarity``: N += gamma * cos, Q moves toward v by that weight);
- **dynamic node addition**: when every child of a node has Q < 0 and their embeddings are too alike, one more
  child is sampled (up to ``max_children``), its prior its share of the siblings' probability;
- **commit** the most visited root child (ties by Q) as soon as, after any expansion, it has more than
  ``t_min`` visits with Q > ``v``; else after ``t_max`` visits (reused visits count) with at least
  ``min_new_simulations`` new simulations; its subtree is reused as the new root. A committed token set is
  verified by the judge before it is released; one it rejects is pruned and never grown again at that point;
  and when every root child the search judged there has Q <= -V (``give_up_when_hopeless``, not in the
  reference), the ladder's last step is taken at once instead of searching the same position again.

Where it is fast: one KV cache for the committed answer, paths fed by teacher forcing and cropped off after
each simulation, the children of an expansion grown, rolled out and judged in one batch (the judged ones
count as that many simulations), self-evaluation on the cache (suffix tokens only), identical texts judged once.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from guardrail.actions import decide, give_up
from guardrail.events import Event, FallbackEvent, TextEvent
from guardrail.judges.verdict import Verdict
from guardrail.rewind.decoder import Branches, Decoder, Sampling, TextEmitter
from guardrail.rewind.request import Request, RunState
from guardrail.rewind.token import TokenRewind, redact_tokens, rewind_event

__all__ = ["Node", "RainSearch", "phrase_end_ids"]

_ROLLOUT_MAX = 32
_ADD_VARIANCE = 0.05  # children's embeddings "too alike" below this mean squared distance to their centroid
_PHRASE_MARKS = (",", ".", "?", ":", ";", "\n", "!")
_phrase_cache: dict[int, frozenset[int]] = {}
_embedder: Any = None
_embedder_lock = threading.Lock()


def phrase_end_ids(tokenizer: Any) -> frozenset[int]:
    """Ids of tokens whose text ends a phrase (RAIN's rollout stops there). Computed once per tokenizer."""
    key = id(tokenizer)
    if key not in _phrase_cache:
        size = len(tokenizer)
        texts = tokenizer.batch_decode([[i] for i in range(size)])
        _phrase_cache[key] = frozenset(i for i, text in enumerate(texts) if any(m in text for m in _PHRASE_MARKS))
    return _phrase_cache[key]


def _embed(texts: list[str]) -> Any:
    global _embedder
    with _embedder_lock:
        if _embedder is None:
            from guardrail.judges.embedding import CrossEncoder

            _embedder = CrossEncoder(None)
    return _embedder.embeddings(texts)


@dataclass(eq=False)
class Node:
    """A token set in the search tree."""

    tokens: list[int]
    level: int  # token sets between the original root and this node
    prior: float = 1.0
    likelihood: float = 1.0  # the token set's probability under the model (its prior before normalising)
    parent: Node | None = None
    children: list[Node] = field(default_factory=list)
    visits: float = 0.0  # N, with fractional credit from similar siblings
    real_visits: int = 0
    q: float = 0.0
    embedding: Any = None
    embedded: int = 0
    terminal: bool = False
    rejected: set[tuple[int, ...]] = field(default_factory=set)  # children committed here and rejected by the judge

    def path(self) -> list[Node]:
        nodes: list[Node] = []
        node: Node | None = self
        while node is not None and node.parent is not None:
            nodes.append(node)
            node = node.parent
        return nodes[::-1]

    def absorb(self, embedding: Any) -> None:
        """Running mean of the embeddings of the text from this node to the end of its rollouts."""
        self.embedded += 1
        self.embedding = (
            embedding if self.embedding is None else self.embedding + (embedding - self.embedding) / self.embedded
        )


class RainSearch:
    """One request's RAIN search; ``events()`` yields what the Guard streams."""

    def __init__(self, owner: TokenRewind, decoder: Decoder, prompt: str, request: Request, state: RunState) -> None:
        self.owner = owner
        self.policy = owner.policy
        self.settings = owner.policy.rewind.rain
        self.decoder = decoder
        self.prompt = prompt
        self.request = request
        self.state = state
        self.evaluator = owner.evaluator()
        self.phrase_ends = phrase_end_ids(decoder.tokenizer)
        self.q_min, self.q_max = -1.0, 1.0
        self.simulations = 0

    # ------------------------------------------------------------------------------------------ tree ops

    def _score(self, parent: Node, child: Node) -> float:
        span = (self.q_max - self.q_min) or 1.0
        q_norm = (child.q - self.q_min) / span if child.visits > 0 else 0.0
        return q_norm + self.settings.c * child.prior * math.sqrt(max(parent.visits, 1.0)) / (1 + child.visits)

    def _select(self, root: Node) -> Node:
        node = root
        while node.children and not node.terminal:
            if self._wants_extra_child(node):
                return node
            node = max(node.children, key=lambda child: self._score(node, child))
        return node

    def _wants_extra_child(self, node: Node) -> bool:
        children = node.children
        if len(children) >= self.settings.max_children or any(c.visits == 0 or c.q >= 0 for c in children):
            return False
        embeddings = [c.embedding for c in children if c.embedding is not None]
        if len(embeddings) < 2:
            return False
        torch = self.decoder.torch
        stacked = torch.stack(embeddings)
        spread = float(((stacked - stacked.mean(dim=0)) ** 2).sum(dim=-1).mean())
        return spread < _ADD_VARIANCE

    def _expand(self, node: Node, root: Node) -> int:
        """Expand the leaf ``node``: grow its children (or one more), roll out and judge the most probable
        ``evaluated_children`` of them in one batch, each a simulation whose value is backed up from the child
        to the root. Returns the simulations done (0 when nothing new grew)."""
        decoder = self.decoder
        base = len(decoder.ids)
        path = node.path()
        path_tokens = [t for n in path for t in n.tokens]
        committed = len(decoder.text(decoder.generated))  # judged and committed: not judged again (Judge.judge)
        decoder.feed(path_tokens)
        try:
            extra = bool(node.children)
            rows = 1 if extra else max(1, min(self.settings.q, self.settings.max_cached_branches))
            lengths = self.settings.token_set_lengths
            length = lengths[min(node.level, len(lengths) - 1)]
            branches = decoder.fork(rows)
            if node.level == 0 and not extra:
                branches.grow(length, Sampling(None), distinct_first=True)
            else:
                branches.grow(length, Sampling(1.0, self.settings.top_k), greedy_rows=0 if extra else 1)
            unique = self._unique_rows(branches, node)
            if not unique:
                return 0
            branches.select(unique)
            likelihoods = [math.exp(lp) for lp in branches.logprobs]
            # normalised over the siblings (an added child's too: its prior is its share, not 1.0)
            total = sum(likelihoods) + sum(child.likelihood for child in node.children) or 1.0
            siblings = len(likelihoods) + len(node.children)
            children = [
                Node(list(tokens), node.level + 1, p / total, likelihood=p, parent=node, terminal=bool(done))
                for tokens, p, done in zip(branches.tokens, likelihoods, branches.done, strict=True)
            ]
            if node is root:
                for child in children:
                    child.prior = 0.75 * child.prior + 0.25 / siblings
            node.children.extend(children)
            self.state.completion_tokens += sum(len(t) for t in branches.tokens)
            judged = sorted(range(len(children)), key=lambda row: -children[row].likelihood)
            judged = judged[: self.settings.evaluated_children]
            branches.select(judged)
            children = [children[row] for row in judged]
            before = [len(t) for t in branches.tokens]
            branches.grow(_ROLLOUT_MAX, Sampling(1.0), pause_on=self.phrase_ends)
            self.state.completion_tokens += sum(len(t) for t in branches.tokens) - sum(before)
            verdicts = self.evaluator.evaluate(
                decoder, self.prompt, branches, partial=not all(branches.done), judged=committed
            )
            for verdict in verdicts:
                self.state.judge_cost = self.state.judge_cost + verdict.cost
            values = [self._value(verdict) for verdict in verdicts]
            self._embed_children(children, path, branches)
            for child, value in zip(children, values, strict=True):
                self._backup(child, value)
            return len(children)
        finally:
            decoder.truncate(base)

    def _value(self, verdict: Verdict) -> float:
        """A verdict as a value in [-1, 1] (``rain.value``): a hard vote, or the soft score."""
        if self.settings.value == "soft":
            return 1.0 - 2.0 * verdict.score
        return 0.0 if verdict.undecided else (-1.0 if verdict.violated else 1.0)

    def _unique_rows(self, branches: Branches, node: Node) -> list[int]:
        seen = {tuple(child.tokens) for child in node.children} | node.rejected
        rows = []
        for row, tokens in enumerate(branches.tokens):
            key = tuple(tokens)
            if tokens and key not in seen:
                seen.add(key)
                rows.append(row)
        return rows

    def _embed_children(self, children: list[Node], path: list[Node], branches: Branches) -> None:
        decoder = self.decoder
        texts: list[str] = []
        owners: list[Node] = []
        for row, child in enumerate(children):
            tail = branches.tokens[row]  # the child's token set and its rollout
            texts.append(decoder.text(tail))
            owners.append(child)
            for depth, ancestor in enumerate(path):
                texts.append(decoder.text([t for n in path[depth:] for t in n.tokens] + tail))
                owners.append(ancestor)
        for owner, embedding in zip(owners, _embed(texts), strict=True):
            owner.absorb(embedding)

    def _backup(self, leaf: Node, value: float) -> None:
        """One simulation's value (one rollout, judged), from ``leaf`` up to the root."""
        self.simulations += 1
        node: Node | None = leaf
        while node is not None:
            node.visits += 1
            node.real_visits += 1
            node.q += (value - node.q) / node.visits
            self.q_min, self.q_max = min(self.q_min, node.q), max(self.q_max, node.q)
            if node.parent is not None:
                self._share(node, value)
            node = node.parent

    def _share(self, node: Node, value: float) -> None:
        """RAIN's similarity update: siblings whose text is alike get fractional credit for ``value``."""
        assert node.parent is not None
        if node.embedding is None:
            return
        for sibling in node.parent.children:
            if sibling is node or sibling.embedding is None:
                continue
            cosine = float(
                (sibling.embedding * node.embedding).sum() / (sibling.embedding.norm() * node.embedding.norm())
            )
            if cosine >= self.settings.similarity:
                weight = self.settings.gamma * cosine
                sibling.q = (sibling.q * sibling.visits + weight * value) / (sibling.visits + weight)
                sibling.visits += weight

    def _simulate(self, root: Node) -> int:
        leaf = self._select(root)
        if leaf.terminal:  # a finished answer: its value is known; visiting it again costs nothing
            self._backup(leaf, leaf.q)
            return 1
        return self._expand(leaf, root)

    # ------------------------------------------------------------------------------------------ commits

    def _choose(self, root: Node) -> Node | None:
        """Simulate until the most visited child has more than T_min visits with Q > V (tested after every
        expansion, i.e. every ``evaluated_children`` simulations at most; the reference tests after each one),
        or T_max visits (reused ones count) with at least ``min_new_simulations`` new simulations; the most
        visited child (ties by Q) is committed."""
        settings = self.settings
        fresh = attempts = 0
        while True:
            attempts += 1
            best = max(root.children, key=lambda c: (c.visits, c.q), default=None)
            if best is not None and fresh and best.real_visits > settings.t_min and best.q > settings.v:
                return best
            enough_new = fresh >= min(settings.min_new_simulations, settings.t_max)
            if best is not None and ((enough_new and root.visits >= settings.t_max) or attempts > 2 * settings.t_max):
                return best  # the second test ends a search whose expansions keep repeating known children
            done = self._simulate(root)
            if done == 0 and not root.children:
                return None
            fresh += max(done, 1)

    def _hopeless(self, root: Node) -> bool:
        """Whether every continuation judged at this position violated: at least as many root children judged
        as an expansion judges, each with Q <= -V (with hard votes: nine rollouts in ten or more violated). A
        search at the same position draws from the same distribution again, so it ends here."""
        judged = [child for child in root.children if child.real_visits > 0]
        wanted = min(self.settings.q, self.settings.evaluated_children)
        return len(judged) >= wanted and all(child.q <= -self.settings.v for child in judged)

    def events(self) -> Iterator[Event]:
        decoder, request, state = self.decoder, self.request, self.state
        emitter = TextEmitter(decoder)
        max_new = request.params.max_tokens or 512
        root = Node([], level=0)
        committed = 0
        rejection: Verdict | None = None  # the last verdict that rejected a commit at this position
        while not decoder.finished() and len(decoder.generated) < max_new:
            child = self._choose(root)
            if child is None:  # nothing new grows here: every continuation was rejected
                if rejection is not None:
                    decision = give_up(self.policy, rejection, "no continuation left to search at this position")
                    if decision.action != "rewind":  # give_up never rewinds (this narrows the type)
                        yield FallbackEvent(decision.action, decision.rules, decision.message)
                    if decision.action in {"refuse", "raise"}:
                        return  # the Guard gives the message (or the error); else the verified text stands
                break
            start = len(decoder.ids)
            decoder.feed(child.tokens)
            partial = not child.terminal and len(decoder.generated) < max_new
            judged = len(decoder.text(decoder.ids[decoder.prompt_len : start]))  # committed before
            verdict = self.evaluator.evaluate(decoder, self.prompt, partial=partial, judged=judged)[0]
            yield state.verdict(verdict, partial=partial)
            if verdict.violated:
                decision = decide(self.policy, verdict, state.budget)
                if decision.action == "rewind" and self.settings.give_up_when_hopeless and self._hopeless(root):
                    decision = give_up(self.policy, verdict, "every continuation the search judged here violated")
                if decision.action in {"refuse", "raise"}:  # the Guard gives the message (or the error)
                    yield FallbackEvent(decision.action, decision.rules, decision.message)
                    return
                if decision.action == "rewind":
                    rejection = verdict
                    rejected = decoder.text(child.tokens)
                    state.budget.spend(len(child.tokens))
                    decoder.truncate(start)
                    root.children.remove(child)  # pruned: the search goes on at the same position
                    root.rejected.add(tuple(child.tokens))  # and never grows it again
                    prefix = decoder.text(decoder.generated)
                    # back to the committed token sets so far: where the search goes on
                    yield rewind_event(self.owner, state, verdict, rejected, len(child.tokens), committed, 1, prefix)
                    continue
                yield FallbackEvent(decision.action, decision.rules, decision.message)
                if decision.action == "redact":
                    redact_tokens(decoder, emitter, start, verdict, decision.message)
            state.budget.progress()
            rejection = None
            committed += 1
            child.parent = None
            for grandchild in child.children:
                grandchild.prior = 0.75 * grandchild.prior + 0.25 / len(child.children)
            root = child
            if request.streaming:
                text = emitter.delta(decoder.generated)
                if text:
                    yield TextEvent(text)
        yield TextEvent(emitter.delta(decoder.generated, final=True))  # all of it, or what was held back
