"""The batched sampler against slow, obvious versions of the same choices."""

from __future__ import annotations

import random

import torch

from hone.engine.sampling import RowSettings, _pick_chunked, find_stop_cut, sample_rows, stop_window


def row(temperature=1.0, top_p=1.0, top_k=0, top_logprobs=0, seed=0) -> RowSettings:
    return RowSettings(temperature, top_p, top_k, top_logprobs, random.Random(seed))


def frequencies(logits: torch.Tensor, settings: RowSettings, draws: int) -> torch.Tensor:
    counts = torch.zeros(logits.shape[-1])
    for _ in range(draws):
        counts[sample_rows(logits.unsqueeze(0), [settings]).tokens[0]] += 1
    return counts / draws


def test_two_level_inverse_cdf_picks_what_a_full_cumulative_sum_picks():
    g = torch.Generator().manual_seed(0)
    weights = torch.rand(6, 5000, generator=g) ** 8  # peaked; 5000 is not a whole number of chunks
    weights[3, 1000:] = 0.0  # and a row with a zero tail
    u = torch.rand(6, generator=g, dtype=torch.float64)
    fast, total = _pick_chunked(weights, u)
    cdf = weights.double().cumsum(-1)
    slow = torch.searchsorted(cdf, (u * cdf[:, -1]).unsqueeze(1), right=True).squeeze(1)
    assert fast.tolist() == slow.tolist()
    assert torch.allclose(total.double(), cdf[:, -1], rtol=1e-5)
    assert all(weights[r, t] > 0 for r, t in enumerate(fast.tolist()))


def test_temperature_one_samples_in_proportion_to_softmax():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    observed = frequencies(logits, row(seed=1), 4000)
    # 4000 draws: standard error of a frequency <= 0.008, so 0.03 is ~4 standard errors
    assert torch.allclose(observed, torch.softmax(logits, -1), atol=0.03)


def test_temperature_sharpens_the_sampling_distribution():
    logits = torch.tensor([2.0, 1.0, 0.0, -1.0])
    observed = frequencies(logits, row(temperature=0.5, seed=2), 4000)
    assert torch.allclose(observed, torch.softmax(logits / 0.5, -1), atol=0.03)


def test_top_k_and_top_p_keep_exactly_the_slow_nucleus():
    logits = torch.tensor([0.5, 3.0, 1.0, 2.5, -1.0, 2.0, 0.0, 1.5])
    probs = torch.softmax(logits, -1)
    order = probs.argsort(descending=True).tolist()
    # top_p = 0.8: keep the best tokens until their mass reaches 0.8 (the one crossing it included)
    nucleus, mass = set(), 0.0
    for t in order:
        if mass >= 0.8:
            break
        nucleus.add(t)
        mass += float(probs[t])
    seen_p = {t for t, f in enumerate(frequencies(logits, row(top_p=0.8, seed=3), 600).tolist()) if f > 0}
    seen_k = {t for t, f in enumerate(frequencies(logits, row(top_k=3, seed=4), 600).tolist()) if f > 0}
    assert seen_p == nucleus
    assert seen_k == set(order[:3])


def test_a_nucleus_wider_than_the_candidate_window_falls_back_to_a_full_sort():
    logits = torch.zeros(5000)  # flat: 90% of the mass needs 4500 tokens, more than 1024 candidates
    seen = {sample_rows(logits.unsqueeze(0), [row(top_p=0.9, seed=s)]).tokens[0] for s in range(300)}
    assert max(seen) > 1024  # a sampler stuck in the first 1024 candidates never goes past them


def test_logprobs_and_top_logprobs_are_of_the_raw_distribution():
    g = torch.Generator().manual_seed(5)
    logits = torch.randn(3, 100, generator=g) * 3
    rows = [row(temperature=0.0, top_logprobs=2), row(temperature=0.7, top_k=5, seed=1), row(top_logprobs=4, seed=2)]
    draw = sample_rows(logits, rows)
    raw = torch.log_softmax(logits, -1)
    for b in range(3):
        assert abs(draw.logprobs[b] - float(raw[b, draw.tokens[b]])) < 1e-5
    assert draw.tokens[0] == int(logits[0].argmax())
    values, ids = raw[2].topk(4)
    assert [t for t, _ in draw.top_logprobs[2]] == ids.tolist()
    assert all(abs(a - float(b)) < 1e-5 for (_, a), b in zip(draw.top_logprobs[2], values))
    assert draw.top_logprobs[1] is None and len(draw.top_logprobs[0]) == 2


# --------------------------------------------------------------------------- stop strings
PIECES = {0: "Hel", 1: "lo", 2: " wor", 3: "ld", 4: "!\n", 5: "\nBye", 6: "x"}


def decode(ids: list[int]) -> str:
    return "".join(PIECES[i] for i in ids)


def test_stop_string_inside_the_newest_token_cuts_that_token_and_what_follows():
    tokens = [0, 1, 2, 3]  # "Hello world"
    assert find_stop_cut(decode, tokens, ("wor",), stop_window(("wor",))) == 2  # keep "Hello"


def test_stop_string_straddling_two_tokens_drops_the_token_where_it_starts():
    tokens = [0, 1, 4, 5]  # "Hello!\n\nBye": "\n\n" starts inside "!\n"
    assert find_stop_cut(decode, tokens, ("\n\n",), stop_window(("\n\n",))) == 2  # keep "Hello"


def test_no_stop_string_means_no_cut():
    assert find_stop_cut(decode, [0, 1, 2], ("Bye",), stop_window(("Bye",))) is None
