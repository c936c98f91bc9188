"""Speculative decoding with drafts copied from the sequence itself (prompt lookup, n-gram drafting).

Agents copy: tool arguments repeat words of the question, answers repeat lines of tool results,
JSON repeats its keys. When the newest n tokens of a sequence occurred earlier in it, the tokens
that followed them there are a guess at what follows now. The engine feeds a row's newest token
and that guess in one decode step (several tokens per slot) and keeps the guessed tokens for as
long as the tokens it draws at those positions equal them; the first draw that differs is kept
too, so every step yields at least one token.

Exact: each token is drawn as it would be without speculation, from the same logits with the
row's own next random number, and a draft token is kept only when the draw equals it. Greedy
output is unchanged. At temperature > 0, accepting draft d when a draw from p equals d happens
with probability p(d), and a draw that differs is a sample of p with d removed: the standard
speculative-sampling rule for a deterministic draft, so the sampled distribution is the model's.
A row's random stream advances once per kept token, as without speculation, so a seed gives the
same tokens with it on or off wherever the logits are the same (in bf16, a step that verifies
several tokens computes its matmuls at another batch size, so logits may differ in the last bits).

When it pays (`DraftPolicy`): a draft token costs one more row in the step's matmuls and is
worth one token only if it is accepted. At batch 1 a step is bound by reading the weights and
extra rows are nearly free; at batch 32 on a small CPU they are not. The policy drafts where its
own measurements say steps that draft produce tokens faster, and sizes each row's draft by that
row's acceptance rate.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class SpeculationConfig:
    """How the engine drafts. `max_ngram`..`min_ngram`: the lengths of the newest n-gram looked up
    (longest first); `max_draft`: tokens guessed per row per step."""

    max_ngram: int = 4
    min_ngram: int = 2
    max_draft: int = 4
    # steps with more rows never draft: on a 2-core CPU a step of 8 or more rows is bound by its
    # matmuls, and drafting there measured 0.85-1.24x (bench/speculative.py) against ~2x at batch 1
    max_batch: int = 4
    adaptive: bool = True  # False: draft wherever a draft exists (DraftPolicy's measurements ignored)

    def __post_init__(self):
        if not 1 <= self.min_ngram <= self.max_ngram:
            raise ValueError(f"need 1 <= min_ngram <= max_ngram; got {self.min_ngram} and {self.max_ngram}")
        if self.max_draft < 1 or self.max_batch < 1:
            raise ValueError(f"max_draft and max_batch must be at least 1; got {self.max_draft} and {self.max_batch}")


class NgramIndex:
    """Where each n-gram of a sequence last occurred with a token after it; grows as tokens are appended.

    For n in min..max, `follows[n]` maps an n-gram to the index of the token that followed its
    latest earlier occurrence. A draft is the run of tokens from there: the latest occurrence is
    preferred because an agent's newest context (the last tool result) is what it copies most."""

    def __init__(self, config: SpeculationConfig, tokens: list[int]):
        self.config = config
        self.tokens: list[int] = []
        self.follows: dict[int, dict[tuple[int, ...], int]] = {n: {} for n in range(config.min_ngram, config.max_ngram + 1)}
        self.extend(tokens)

    def extend(self, tokens: list[int]) -> None:
        seq = self.tokens
        for token in tokens:
            t = len(seq)  # the new token's index: it follows the n-grams ending just before it
            seq.append(token)
            for n, table in self.follows.items():
                if t >= n:
                    table[tuple(seq[t - n : t])] = t

    def draft(self, limit: int) -> list[int]:
        """Up to `limit` tokens that followed the longest n-gram ending the sequence that occurred before."""
        seq = self.tokens
        for n in range(self.config.max_ngram, self.config.min_ngram - 1, -1):
            if len(seq) <= n:
                continue
            start = self.follows[n].get(tuple(seq[-n:]))
            if start is not None:
                return seq[start : start + limit]
        return []


class DraftPolicy:
    """Decides whether a step drafts at all, and how many draft tokens each row gets.

    Two rules, both from what this engine measured:
    1. Per batch size (buckets 1, 2, 3-4, 5-8, ... rows), the seconds per token produced of steps
       that verified drafts against steps that did not. Drafting stays on in a bucket while its
       steps produce tokens no slower than plain ones (2% margin); when it loses, only every
       `EXPLORE`-th step there drafts, to notice when the workload changes. Every overhead
       counts here (the wider forward, the draws position by position, the lookups), which a
       model of the forward's cost alone misses: on a 2-core CPU a 32-row step is bound by its
       matmuls, and 8 more rows cost ~7 ms of a 60 ms step.
    2. Per row, draft tokens while their chance of being kept (the row's acceptance rate, from
       the engine's recent rate at first, to the power j) exceeds what one more row costs in
       tokens of a plain step, from a least-squares line through recent (rows fed, seconds) steps.
    """

    PRIOR_WEIGHT = 8.0  # a row's own outcomes outweigh the engine's rate after this many draft tokens
    WINDOW = 128  # recent decode steps the cost of a row is fitted on
    EXPLORE = 16  # in a bucket where drafting loses, one step in this many still drafts
    MARGIN = 1.02  # drafting must not cost more than this per token
    SMOOTHING = 0.1  # weight of the newest step in the per-token averages

    def __init__(self, config: SpeculationConfig):
        self.config = config
        self.drafted = 0  # engine-wide, for the prior (decayed so it follows the current workload)
        self.accepted = 0.0
        self._steps: deque[tuple[int, float]] = deque(maxlen=self.WINDOW)  # (rows fed, seconds)
        self._per_token: dict[int, dict[bool, float]] = {}  # bucket -> {drafted?: seconds per token}
        self._turn: dict[int, int] = {}  # bucket -> steps seen, for exploring

    @staticmethod
    def bucket(batch: int) -> int:
        return 1 << max(0, batch - 1).bit_length()  # 1, 2, 4, 8, ...: the power of two at or above

    def should_draft(self, batch: int) -> bool:
        """Whether this step (of `batch` rows) may draft, from rule 1."""
        if batch > self.config.max_batch:
            return False
        if not self.config.adaptive:
            return True
        b = self.bucket(batch)
        self._turn[b] = self._turn.get(b, 0) + 1
        seen = self._per_token.get(b, {})
        if True not in seen or False not in seen:
            return True  # not yet measured both ways: drafting where drafts exist measures it
        if seen[True] <= seen[False] * self.MARGIN:
            return True
        return self._turn[b] % self.EXPLORE == 0

    def record_outcome(self, batch: int, drafted: bool, seconds: float, tokens: int) -> None:
        """A finished step: its rows, whether it verified drafts, its seconds and the tokens it produced."""
        if tokens <= 0:
            return
        seen = self._per_token.setdefault(self.bucket(batch), {})
        value = seconds / tokens
        seen[drafted] = value if drafted not in seen else (1 - self.SMOOTHING) * seen[drafted] + self.SMOOTHING * value

    @property
    def engine_rate(self) -> float:
        return (self.accepted + 1.0) / (self.drafted + 2.0)  # optimistic at start: the first drafts measure it

    def row_rate(self, drafted: int, accepted: int) -> float:
        w = self.PRIOR_WEIGHT
        return (accepted + w * self.engine_rate) / (drafted + w)

    def draft_length(self, rate: float, row_cost: float) -> int:
        """Draft tokens worth verifying for a row with acceptance `rate` when one more row costs
        `row_cost` tokens of a plain step (`row_cost(batch)`; rule 2)."""
        threshold = row_cost if self.config.adaptive else 0.0
        k = 0
        chance = rate
        while k < self.config.max_draft and chance > threshold:
            k += 1
            chance *= rate
        return k

    def row_cost(self, batch: int) -> float:
        """One extra row's time as a fraction of a plain step's time per token (c1 / (c(B) / B)),
        from a least-squares line through recent (rows, seconds) steps; 0 until the steps vary."""
        if len(self._steps) < 8:
            return 0.0
        rows = np.array([r for r, _ in self._steps], dtype=np.float64)
        seconds = np.array([s for _, s in self._steps], dtype=np.float64)
        if rows.max() - rows.min() < 2:
            return 0.0
        slope, intercept = np.polyfit(rows, seconds, 1)
        plain = intercept + slope * batch
        if plain <= 0:
            return 0.0
        return max(0.0, float(slope) * batch / float(plain))

    def record_step(self, rows: int, seconds: float) -> None:
        self._steps.append((rows, seconds))

    def record_drafts(self, drafted: int, accepted: int) -> None:
        decay = 0.99 if self.drafted > 512 else 1.0
        self.drafted = int(self.drafted * decay) + drafted
        self.accepted = self.accepted * decay + accepted
