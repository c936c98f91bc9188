"""Choosing the next token for a batch of rows, each with its own settings and its own random stream.

1. The logprob returned for a token is log_softmax of the RAW fp32 logits (before temperature,
   top-k, top-p, and before a grammar's mask, logit biases and penalties), the same number a
   trainer computes from the same weights. The policy being trained is the model's own
   distribution; what shaped the draw is part of how it was explored, not of the policy.
2. Randomness is one uniform number per row per step from that row's own `random.Random`, turned
   into a token by inverse-CDF sampling. A row's tokens therefore depend only on its seed and its
   logits, never on which other rows share the batch.
3. Truncation (top-k, top-p) works on the top candidates only (a `topk`, not a full sort of the
   vocabulary); a row whose nucleus does not fit in them falls back to a full sort.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import torch
import torch.nn.functional as F

_TOP_CANDIDATES = 1024  # top-p looks at this many candidates first; a full sort only if the nucleus is wider


@dataclass
class RowSettings:
    """What the sampler needs to know about one row (one sampled sequence)."""

    temperature: float
    top_p: float
    top_k: int
    top_logprobs: int
    rng: random.Random


@dataclass
class Draw:
    """One step's choices for B rows."""

    tokens: list[int]
    logprobs: list[float]
    top_logprobs: list[list[tuple[int, float]] | None]


def sample_rows(logits_B_V: torch.Tensor, rows: list[RowSettings], raw_B_V: torch.Tensor | None = None, shaped: list[int] = ()) -> Draw:
    """Pick one token per row of fp32 logits (B, V) and return it with its raw logprob.

    `raw_B_V`, when given, holds the model's logits before masks, biases and penalties were
    applied to the rows listed in `shaped`: tokens are drawn from `logits_B_V`, logprobs reported
    from `raw_B_V`."""
    B, V = logits_B_V.shape
    lse_B = torch.empty(B, dtype=logits_B_V.dtype)  # normaliser of each row's raw distribution
    chosen = torch.empty(B, dtype=torch.long)

    greedy = [b for b, r in enumerate(rows) if r.temperature == 0.0]
    plain = [b for b, r in enumerate(rows) if r.temperature > 0.0 and r.top_k == 0 and r.top_p >= 1.0]
    truncated = [b for b, r in enumerate(rows) if r.temperature > 0.0 and (r.top_k > 0 or r.top_p < 1.0)]
    if greedy:
        idx, x = _select(logits_B_V, greedy)
        chosen[idx] = x.max(dim=-1).indices  # max, not argmax: several times faster on CPU
        lse_B[idx] = torch.logsumexp(x, dim=-1)
    if plain:
        idx, x = _select(logits_B_V, plain)
        temps = [rows[b].temperature for b in plain]
        unit = all(t == 1.0 for t in temps)
        y = x if unit else x / torch.tensor(temps, dtype=x.dtype).unsqueeze(1)
        m = y.amax(dim=-1, keepdim=True)
        weights = (y - m).exp_()  # (R, V) unnormalised sampling probabilities
        tokens, total = _pick_chunked(weights, _uniforms(plain, rows))
        chosen[idx] = tokens
        # at temperature 1 the sampling normaliser is the raw one: lse = max + log(sum of exp)
        lse_B[idx] = m.squeeze(1) + total.log() if unit else torch.logsumexp(x, dim=-1)
    if truncated:
        idx, x = _select(logits_B_V, truncated)
        chosen[idx] = _sample_truncated(x, truncated, rows)
        lse_B[idx] = torch.logsumexp(x, dim=-1)

    report_B_V = logits_B_V
    if raw_B_V is not None and shaped:
        report_B_V = raw_B_V
        idx = torch.tensor(list(shaped))
        lse_B[idx] = torch.logsumexp(raw_B_V[idx], dim=-1)
    logprobs_B = report_B_V.gather(1, chosen.unsqueeze(1)).squeeze(1) - lse_B
    top: list[list[tuple[int, float]] | None] = [None] * B
    want = [b for b, r in enumerate(rows) if r.top_logprobs > 0]
    if want:
        k = min(V, max(rows[b].top_logprobs for b in want))
        idx, x = _select(report_B_V, want)
        values, ids = torch.topk(x, k, dim=-1)  # (W, k), best first
        values = (values - lse_B[idx].unsqueeze(1)).tolist()
        ids = ids.tolist()
        for j, b in enumerate(want):
            kb = rows[b].top_logprobs
            top[b] = list(zip(ids[j][:kb], values[j][:kb]))
    return Draw(tokens=chosen.tolist(), logprobs=logprobs_B.tolist(), top_logprobs=top)


def _select(x_B_V: torch.Tensor, indices: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
    """The given rows (no copy when they are all of them, in order)."""
    idx = torch.tensor(indices)
    if len(indices) == x_B_V.shape[0] and indices == list(range(len(indices))):
        return idx, x_B_V
    return idx, x_B_V[idx]


def _uniforms(indices: list[int], rows: list[RowSettings]) -> torch.Tensor:
    return torch.tensor([rows[b].rng.random() for b in indices], dtype=torch.float64)


def _pick_chunked(weights_R_V: torch.Tensor, u_R: torch.Tensor, chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """Inverse-CDF sampling from unnormalised weights in two levels (chunk sums, then one chunk).

    One cumulative sum over the whole vocabulary would cost two passes and, in fp32, drift; here
    the only full pass is the chunk sums, and the cumulative sums are small and in fp64.
    Returns the token ids (R,) and each row's total weight (R,).
    """
    R, V = weights_R_V.shape
    pad = -V % chunk
    w = F.pad(weights_R_V, (0, pad)) if pad else weights_R_V
    blocks = w.view(R, -1, chunk)  # (R, C, chunk)
    sums = blocks.sum(dim=-1).double()  # (R, C)
    cdf = sums.cumsum(dim=-1)
    target = u_R * cdf[:, -1]
    c = torch.searchsorted(cdf, target.unsqueeze(1), right=True).clamp_(max=cdf.shape[1] - 1)  # (R, 1)
    before = torch.where(c > 0, cdf.gather(1, (c - 1).clamp(min=0)), torch.zeros_like(target.unsqueeze(1)))
    inner = blocks[torch.arange(R), c.squeeze(1)].double().cumsum(dim=-1)  # (R, chunk)
    j = torch.searchsorted(inner, target.unsqueeze(1) - before, right=True).clamp_(max=chunk - 1)
    tokens = (c * chunk + j).squeeze(1)
    # fp32 chunk sums and fp64 inner sums can disagree in the last bits: never return a zero-weight token
    zero = w.gather(1, tokens.unsqueeze(1)).squeeze(1) == 0
    for r in zero.nonzero().flatten().tolist():
        tokens[r] = _pick(weights_R_V[r : r + 1], u_R[r : r + 1])[0]
    return tokens.clamp_(max=V - 1), cdf[:, -1].to(weights_R_V.dtype)


def _pick(probs_R_C: torch.Tensor, u_R: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF: the first candidate whose cumulative mass exceeds u * total. (R,) positions."""
    cdf = torch.cumsum(probs_R_C, dim=-1, dtype=torch.float64)
    target = (u_R * cdf[:, -1]).unsqueeze(1)
    pos = torch.searchsorted(cdf, target, right=True).squeeze(1)
    pos = pos.clamp_(max=probs_R_C.shape[1] - 1)
    # a target equal to the total lands past the last positive entry: step back onto it
    for r in (probs_R_C.gather(1, pos.unsqueeze(1)).squeeze(1) == 0).nonzero().flatten().tolist():
        pos[r] = int(probs_R_C[r].nonzero().max())
    return pos


def _sample_truncated(x_R_V: torch.Tensor, indices: list[int], rows: list[RowSettings]) -> torch.Tensor:
    """Top-k then top-p on the tempered distribution, among the best candidates."""
    temps = torch.tensor([rows[b].temperature for b in indices], dtype=x_R_V.dtype).unsqueeze(1)
    probs = torch.softmax(x_R_V / temps, dim=-1)  # (R, V)
    V = probs.shape[1]
    ks = [rows[b].top_k for b in indices]
    ps = [rows[b].top_p for b in indices]
    width = min(V, max(k if k > 0 else _TOP_CANDIDATES for k in ks))
    values, ids = torch.topk(probs, width, dim=-1)  # (R, C) best first
    # a row with top_p but no top_k whose nucleus is wider than `width` needs the whole sorted vocabulary
    cum = torch.cumsum(values, dim=-1)
    wide = [j for j, (k, p) in enumerate(zip(ks, ps)) if k == 0 and p < 1.0 and float(cum[j, -1]) < p]
    if wide and width < V:
        values, ids = torch.sort(probs, dim=-1, descending=True)
        cum = torch.cumsum(values, dim=-1)
        width = V
    keep = torch.ones_like(values, dtype=torch.bool)
    position = torch.arange(width).unsqueeze(0)
    keep &= position < torch.tensor([k if k > 0 else width for k in ks]).unsqueeze(1)
    keep &= (cum - values) < torch.tensor(ps, dtype=cum.dtype).unsqueeze(1)  # mass before it still short of top_p
    keep[:, 0] = True  # the best candidate always survives
    pos = _pick(values * keep, _uniforms(indices, rows))
    return ids.gather(1, pos.unsqueeze(1)).squeeze(1)


# --------------------------------------------------------------------------- stop strings
def stop_window(stops: tuple[str, ...]) -> int:
    """How many trailing tokens certainly cover any stop string (a character can span 4 byte tokens)."""
    return 4 * max(len(s) for s in stops) + 2


def find_stop_cut(decode, tokens: list[int], stops: tuple[str, ...], window: int) -> int | None:
    """If the newest token completed a stop string, return how many tokens to keep, else None.

    Kept are the most tokens whose text ends before the stop string starts, so the stop string
    and anything after it are excluded; a token that straddles the start of the stop string is
    dropped with it.
    """
    tail = decode(tokens[-window:])
    if not any(s in tail for s in stops):
        return None
    text = decode(tokens)
    starts = [text.find(s) for s in stops if s in text]
    if not starts:  # the tail matched only across a decode artefact; the full text has no stop
        return None
    start = min(starts)
    keep = len(tokens)
    while keep > 0 and len(decode(tokens[:keep])) > start:
        keep -= 1
    return keep
