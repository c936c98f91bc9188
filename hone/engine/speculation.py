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
worth one token only if it is accepted. The policy keeps each row's acceptance rate (starting
from the engine's recent rate) and the measured cost of a step as a function of its rows; it
drafts the j-th token only when its chance of being kept (acceptance rate ** j) exceeds what one
more row costs in tokens of a plain step. At batch 1 a step is bound by reading the weights and
extra rows are nearly free; at batch 32 they are not, and only drafts that are usually right pay.
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

    def __post_init__(self):
        if not 1 <= self.min_ngram <= self.max_ngram:
            raise ValueError(f"need 1 <= min_ngram <= max_ngram; got {self.min_ngram} and {self.max_ngram}")
        if self.max_draft < 1:
            raise ValueError(f"max_draft must be at least 1; got {self.max_draft}")


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

    def copy(self) -> "NgramIndex":
        twin = NgramIndex.__new__(NgramIndex)
        twin.config, twin.tokens = self.config, list(self.tokens)
        twin.follows = {n: dict(table) for n, table in self.follows.items()}
        return twin

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
    """Decides how many draft tokens each row gets, from acceptance rates and measured step costs."""

    PRIOR_WEIGHT = 8.0  # a row's own outcomes outweigh the engine's rate after this many draft tokens
    WINDOW = 128  # recent decode steps the cost of a row is fitted on

    def __init__(self, config: SpeculationConfig):
        self.config = config
        self.drafted = 0  # engine-wide, for the prior (decayed so it follows the current workload)
        self.accepted = 0.0
        self._steps: deque[tuple[int, float]] = deque(maxlen=self.WINDOW)  # (rows fed, seconds)

    @property
    def engine_rate(self) -> float:
        return (self.accepted + 1.0) / (self.drafted + 2.0)  # optimistic at start: the first drafts measure it

    def row_rate(self, drafted: int, accepted: int) -> float:
        w = self.PRIOR_WEIGHT
        return (accepted + w * self.engine_rate) / (drafted + w)

    def draft_length(self, rate: float, batch: int) -> int:
        """Draft tokens worth verifying for a row with acceptance `rate` in a step of `batch` rows."""
        threshold = self.row_cost(batch)
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
