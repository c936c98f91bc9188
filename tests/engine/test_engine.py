"""The engine's fast paths (KV cache, batching, shared prefill) against the obvious slow ones."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
import torch
from transformers import AutoConfig, AutoModelForCausalLM

from hone.engine import Engine
from hone.errors import HoneError, InvalidRequestError, SequenceTooLongError
from hone.types import SamplingParams

from .conftest import make_lively

GREEDY = SamplingParams(max_tokens=12, temperature=0.0)


# --------------------------------------------------------------------------- slow references
def naive_greedy(model, prompt: list[int], steps: int) -> list[int]:
    """Full forward over the whole sequence at every step, argmax of the last position: no cache."""
    ids = list(prompt)
    with torch.no_grad():
        for _ in range(steps):
            ids.append(int(model(torch.tensor([ids])).logits[0, -1].argmax()))
    return ids[len(prompt) :]


def full_forward_logprobs(model, prompt: list[int], tokens: list[int]) -> torch.Tensor:
    """log_softmax of one fp32 full forward, (len(tokens), V): row t predicts tokens[t]."""
    with torch.no_grad():
        logits = model(torch.tensor([prompt + tokens])).logits[0].float()
    return torch.log_softmax(logits, dim=-1)[len(prompt) - 1 : len(prompt) + len(tokens) - 1]


def gather(engine: Engine, calls: list[tuple[list[int], int, SamplingParams]]):
    """Run several `sample` calls concurrently from one event loop."""

    async def main():
        return await asyncio.gather(*[engine.sample(p, n, params) for p, n, params in calls])

    return asyncio.run(main())


# --------------------------------------------------------------------------- greedy and logprobs
def test_batched_cached_greedy_with_mixed_prompt_lengths_equals_naive_full_forward_loop(engine32, lively, prompts):
    results = gather(engine32, [(p, 1, GREEDY) for p in prompts])
    for prompt, [seq] in zip(prompts, results):
        assert seq.tokens == naive_greedy(lively, prompt, GREEDY.max_tokens)
        assert seq.finish_reason == "length"


def test_fp32_logprobs_equal_full_forward_log_softmax_of_the_sampled_tokens(engine32, lively, prompts):
    params = SamplingParams(max_tokens=10, temperature=1.0, seed=3)
    results = gather(engine32, [(p, 2, params) for p in prompts])
    for prompt, seqs in zip(prompts, results):
        for seq in seqs:
            reference = full_forward_logprobs(lively, prompt, seq.tokens)
            expected = reference.gather(1, torch.tensor(seq.tokens).unsqueeze(1)).squeeze(1)
            assert torch.allclose(torch.tensor(seq.logprobs), expected, atol=1e-4), (seq.logprobs, expected)


def test_logprobs_are_of_the_raw_distribution_whatever_the_temperature_and_truncation(engine32, lively, prompts):
    params = SamplingParams(max_tokens=6, temperature=0.5, top_k=5, top_p=0.9, seed=1)
    [seq] = engine32.sample_sync(prompts[1], 1, params)
    reference = full_forward_logprobs(lively, prompts[1], seq.tokens)
    expected = reference.gather(1, torch.tensor(seq.tokens).unsqueeze(1)).squeeze(1)
    assert torch.allclose(torch.tensor(seq.logprobs), expected, atol=1e-4)


def test_bf16_engine_logprobs_are_close_to_the_fp32_full_forward(lively, tokenizer, prompts):
    # bf16 matmuls in the body (fp32 LM head and log-softmax). Measured on this model over 384
    # tokens: mean |error| 0.013-0.016 nats, max 0.06-0.095. A real bug (a wrong position or mask) costs nats.
    with Engine(lively, eos_token_ids=[], dtype=torch.bfloat16) as engine:
        results = gather(engine, [(p, 4, SamplingParams(max_tokens=16, temperature=1.0, seed=5)) for p in prompts])
    errors = []
    for prompt, seqs in zip(prompts, results):
        for seq in seqs:
            reference = full_forward_logprobs(lively, prompt, seq.tokens)
            expected = reference.gather(1, torch.tensor(seq.tokens).unsqueeze(1)).squeeze(1)
            errors.append((torch.tensor(seq.logprobs) - expected).abs())
    errors = torch.cat(errors)
    assert errors.mean() < 0.04 and errors.max() < 0.3, (errors.mean(), errors.max())


def test_engine_keeps_its_own_copy_of_the_weights_until_load_weights(tokenizer, tiny, prompts):
    trainer_model = make_lively(tiny.model, seed=1)
    engine = Engine(trainer_model, eos_token_ids=[], dtype=torch.float32)
    try:
        before = engine.sample_sync(prompts[1], 1, GREEDY)[0].tokens
        other = make_lively(tiny.model, seed=2)
        with torch.no_grad():  # the trainer steps in place: the engine must not see it yet
            for mine, theirs in zip(trainer_model.parameters(), other.parameters()):
                mine.copy_(theirs)
        assert engine.sample_sync(prompts[1], 1, GREEDY)[0].tokens == before
        engine.load_weights(trainer_model.state_dict())
        after = engine.sample_sync(prompts[1], 1, GREEDY)[0].tokens
        assert after == naive_greedy(trainer_model, prompts[1], GREEDY.max_tokens)
        assert after != before
        assert engine.stats["weight_loads"] == 1
    finally:
        engine.close()


def test_two_engines_over_one_model_each_keep_their_own_weights(tiny, prompts):
    """LocalBackend builds an engine per base and per merged model, often over one model object:
    loading weights into one must leave every other as it was."""
    model = make_lively(tiny.model, seed=1)
    with Engine(model, eos_token_ids=[], dtype=torch.float32) as first, Engine(model, eos_token_ids=[], dtype=torch.float32) as second:
        before = second.sample_sync(prompts[1], 1, GREEDY)[0].tokens
        first.load_weights(make_lively(tiny.model, seed=2).state_dict())
        assert first.sample_sync(prompts[1], 1, GREEDY)[0].tokens != before
        assert second.sample_sync(prompts[1], 1, GREEDY)[0].tokens == before


def test_load_weights_rejects_unknown_names_and_wrong_shapes(engine32):
    with pytest.raises(InvalidRequestError, match="not a parameter"):
        engine32.load_weights({"base_model.model.lora_A.weight": torch.zeros(2, 2)})
    with pytest.raises(InvalidRequestError, match="shape"):
        engine32.load_weights({"model.norm.weight": torch.zeros(3)})


# --------------------------------------------------------------------------- seeds
def test_same_seed_gives_same_tokens_whatever_else_is_in_the_batch(engine32, prompts):
    params = SamplingParams(max_tokens=12, temperature=1.0, seed=42)
    [alone] = engine32.sample_sync(prompts[2], 1, params)
    noise = SamplingParams(max_tokens=20, temperature=1.0)  # unseeded neighbours of other lengths
    batched = gather(engine32, [(prompts[0], 3, noise), (prompts[2], 1, params), (prompts[3], 2, noise)])[1][0]
    assert batched.tokens == alone.tokens
    assert batched.logprobs == pytest.approx(alone.logprobs, abs=1e-5)


def test_different_seeds_and_unseeded_requests_give_different_samples(engine32, prompts):
    draws = [
        engine32.sample_sync(prompts[1], 1, SamplingParams(max_tokens=12, temperature=1.0, seed=s))[0].tokens
        for s in (1, 2, None, None)
    ]
    assert len({tuple(d) for d in draws}) == 4


# --------------------------------------------------------------------------- n samples share a prefill
def test_n_samples_prefill_the_prompt_once_and_differ(lively, prompts):
    with Engine(lively, eos_token_ids=[], dtype=torch.float32) as engine:
        seqs = engine.sample_sync(prompts[3], 4, SamplingParams(max_tokens=8, temperature=1.0, seed=0))
        # one forward over the prompt's positions, not four (rows x positions run through prefill)
        assert engine.stats["prefill_tokens"] == len(prompts[3])
        assert engine.stats["prefill_forwards"] == 1
    assert len(seqs) == 4
    assert len({tuple(s.tokens) for s in seqs}) == 4


def test_identical_prompts_in_one_batch_are_prefilled_once(lively, prompts):
    with Engine(lively, eos_token_ids=[], dtype=torch.float32, batch_window_s=0.05) as engine:
        params = SamplingParams(max_tokens=4, temperature=1.0)
        gather(engine, [(prompts[3], 1, params)] * 3)
        assert engine.stats["prefill_tokens"] == len(prompts[3])


def test_each_of_n_samples_is_reproducible_from_the_seed(engine32, prompts):
    params = SamplingParams(max_tokens=8, temperature=1.0, seed=9)
    first = engine32.sample_sync(prompts[0], 3, params)
    second = engine32.sample_sync(prompts[0], 3, params)
    assert [s.tokens for s in first] == [s.tokens for s in second]


# --------------------------------------------------------------------------- stopping
def test_max_tokens_finishes_with_length(engine32, prompts):
    [seq] = engine32.sample_sync(prompts[0], 1, SamplingParams(max_tokens=5, temperature=1.0))
    assert len(seq.tokens) == 5 and len(seq.logprobs) == 5
    assert seq.finish_reason == "length"


def test_eos_stops_with_the_eos_token_and_its_logprob_included(lively, prompts):
    greedy = naive_greedy(lively, prompts[1], GREEDY.max_tokens)
    eos = greedy[4]  # pretend the 5th greedy token is end-of-sequence
    cut = greedy.index(eos) + 1
    with Engine(lively, eos_token_ids=[eos], dtype=torch.float32) as engine:
        [seq] = engine.sample_sync(prompts[1], 1, GREEDY)
    assert seq.tokens == greedy[:cut] and seq.tokens[-1] == eos
    assert len(seq.logprobs) == cut
    assert seq.finish_reason == "stop"


def test_stop_token_ids_stop_like_eos(engine32, lively, prompts):
    greedy = naive_greedy(lively, prompts[1], GREEDY.max_tokens)
    params = SamplingParams(max_tokens=12, temperature=0.0, stop_token_ids=(greedy[3],))
    [seq] = engine32.sample_sync(prompts[1], 1, params)
    assert seq.tokens == greedy[: greedy.index(greedy[3]) + 1]
    assert seq.finish_reason == "stop"


def test_stop_string_is_cut_with_everything_after_it(engine32, lively, tokenizer, prompts):
    greedy = naive_greedy(lively, prompts[2], GREEDY.max_tokens)
    text = tokenizer.decode(greedy)
    stop = text[len(tokenizer.decode(greedy[:5])) :][:3]  # three characters starting at the 6th token
    assert stop.strip(), f"pick a visible stop string from {text!r}"
    params = SamplingParams(max_tokens=12, temperature=0.0, stop=(stop,))
    [seq] = engine32.sample_sync(prompts[2], 1, params)
    kept = tokenizer.decode(seq.tokens)
    assert seq.finish_reason == "stop"
    assert stop not in kept
    assert text.startswith(kept) and len(kept) <= text.find(stop)
    assert seq.tokens == greedy[: len(seq.tokens)]
    assert len(seq.logprobs) == len(seq.tokens)


def test_top_k_1_equals_greedy_and_a_tiny_top_p_too(engine32, prompts):
    [greedy] = engine32.sample_sync(prompts[3], 1, GREEDY)
    [top_k] = engine32.sample_sync(prompts[3], 1, SamplingParams(max_tokens=12, temperature=1.0, top_k=1))
    [top_p] = engine32.sample_sync(prompts[3], 1, SamplingParams(max_tokens=12, temperature=1.0, top_p=1e-6))
    assert top_k.tokens == greedy.tokens
    assert top_p.tokens == greedy.tokens


def test_top_logprobs_give_k_best_alternatives_per_position(engine32, lively, prompts):
    params = SamplingParams(max_tokens=6, temperature=1.0, seed=2, top_logprobs=3)
    [seq] = engine32.sample_sync(prompts[1], 1, params)
    assert len(seq.top_logprobs) == len(seq.tokens)
    reference = full_forward_logprobs(lively, prompts[1], seq.tokens)
    for t, alternatives in enumerate(seq.top_logprobs):
        assert len(alternatives) == 3
        values, ids = torch.topk(reference[t], 3)
        assert [i for i, _ in alternatives] == ids.tolist()
        assert [v for _, v in alternatives] == pytest.approx(values.tolist(), abs=1e-4)
        assert alternatives[0][1] >= seq.logprobs[t] - 1e-6


# --------------------------------------------------------------------------- concurrency
def test_sixteen_concurrent_requests_share_batches_and_each_equals_its_solo_result(lively, tokenizer):
    prompts = [tokenizer.encode(f"Request number {i} says" + " hello" * (i % 5)) for i in range(16)]
    with Engine(lively, eos_token_ids=[], dtype=torch.float32, batch_window_s=0.05) as engine:
        solo = [engine.sample_sync(p, 1, GREEDY)[0].tokens for p in prompts]
        before = engine.stats["batches"]
        together = gather(engine, [(p, 1, GREEDY) for p in prompts])
        batches = engine.stats["batches"] - before
    assert batches < 16  # typically 1: all arrive within the batch window
    assert [r[0].tokens for r in together] == solo


def test_a_request_arriving_mid_decode_joins_the_running_batch(lively, prompts):
    with Engine(lively, eos_token_ids=[], dtype=torch.float32) as engine:

        async def main():
            long = asyncio.ensure_future(engine.sample(prompts[0], 1, SamplingParams(max_tokens=400, temperature=1.0)))
            await wait_for_condition(lambda: engine.stats["decode_steps"] >= 5, "the long request never started decoding")
            short = await engine.sample(prompts[1], 1, GREEDY)
            assert not long.done()  # the short one was admitted into the running decode and finished first
            return short, await long

        short, long = asyncio.run(main())
    assert len(long[0].tokens) == 400 and short[0].finish_reason == "length"


def test_the_event_loop_stays_responsive_while_the_engine_computes(engine32, prompts):
    async def main():
        task = asyncio.ensure_future(engine32.sample(prompts[3], 4, SamplingParams(max_tokens=200, temperature=1.0)))
        gaps, start = [], time.monotonic()
        while not task.done():
            assert time.monotonic() - start < 60, "the 4 x 200-token sample did not finish within 60 s"
            before = time.monotonic()
            await asyncio.sleep(0.001)
            gaps.append(time.monotonic() - before)  # how long a 1 ms sleep took: the loop's reaction time
        await task
        return gaps, time.monotonic() - start

    gaps, elapsed = asyncio.run(main())
    # sampling on the loop's thread would give the loop no turn until the sample is done; a worker
    # holding the GIL through its decode steps would leave it waiting most of the time. Either way
    # the loop is stuck (a turn took over 20 ms, against ~1 ms) for much of the sample; here it is
    # stuck for a small fraction of it at most (4 x 200 tokens take ~0.3-1.2 s on 2 cores)
    stuck = sum(gap for gap in gaps if gap > 0.02)
    assert len(gaps) > 10, f"the loop got {len(gaps)} turns during a {elapsed:.2f} s sample"
    assert stuck < elapsed / 4, f"the loop waited over 20 ms for a turn for {stuck:.2f} s of a {elapsed:.2f} s sample"


def test_a_cancelled_request_leaves_the_batch(lively, prompts):
    with Engine(lively, eos_token_ids=[], dtype=torch.float32) as engine:

        async def main():
            task = asyncio.ensure_future(engine.sample(prompts[0], 2, SamplingParams(max_tokens=3000, temperature=1.0)))
            await wait_for_condition(lambda: engine.stats["decode_steps"] >= 3, "the request never started decoding")
            task.cancel()
            await asyncio.sleep(0.1)
            return await engine.sample(prompts[1], 1, GREEDY)

        [seq] = asyncio.run(main())
        assert seq.finish_reason == "length"
        assert engine.stats["decode_steps"] < 1000  # the 3000-token samples did not run to the end


def test_a_cancelled_request_frees_its_slots_at_once_and_is_counted(lively, prompts):
    long = SamplingParams(max_tokens=3000, temperature=1.0)
    with Engine(lively, eos_token_ids=[], dtype=torch.float32, max_batch_size=3) as engine:

        async def main():
            decoding = asyncio.ensure_future(engine.sample(prompts[0], 2, long))
            await wait_for_condition(lambda: engine.active_rows == 2, "the request never started decoding")
            queued = asyncio.ensure_future(engine.sample(prompts[1], 2, long))  # 2 rows: no room among 3 slots
            await asyncio.sleep(0.05)  # several decode steps: it stays queued
            assert engine.active_rows == 2 and engine.stats["batches"] == 1
            queued.cancel()
            await wait_for_condition(lambda: engine.stats["cancelled_requests"] == 1, "the cancelled request stayed queued", timeout_s=5)
            assert engine.active_rows == 2  # the other one decodes on
            decoding.cancel()
            await wait_for_condition(lambda: engine.active_rows == 0, "the cancelled rows stayed in the batch", timeout_s=5)
            steps = engine.stats["decode_steps"]
            await asyncio.sleep(0.05)
            assert engine.stats["decode_steps"] == steps  # idle: nothing decodes for a cancelled request
            return await engine.sample(prompts[2], 1, GREEDY)

        [seq] = asyncio.run(main())
        assert len(seq.tokens) == GREEDY.max_tokens  # the freed slots serve the next request
        # 2 = the decoding request (dropped between steps) + the queued one (never admitted)
        assert engine.stats["cancelled_requests"] == 2
        assert engine.stats["batches"] == 2  # the first request's and the last one's: the queued one never joined
        assert engine.stats["failed_requests"] == 0  # a cancel is not a failure


# --------------------------------------------------------------------------- errors
@pytest.mark.parametrize(
    "prompt, n, params, error, words",
    [
        ([], 1, GREEDY, InvalidRequestError, "empty"),
        ([1] * 65, 1, GREEDY, SequenceTooLongError, "max_seq_len"),
        ([1] * 60, 1, SamplingParams(max_tokens=10), SequenceTooLongError, "max_tokens"),
        ([1, 2], 0, GREEDY, InvalidRequestError, "n must"),
        ([1, 2], 1, SamplingParams(max_tokens=4, top_p=0.0), InvalidRequestError, "top_p"),
        ([1, 2], 1, SamplingParams(max_tokens=4, temperature=-1.0), InvalidRequestError, "temperature"),
        ([10**6], 1, GREEDY, InvalidRequestError, "vocabulary"),
    ],
)
def test_invalid_requests_raise_one_clear_sentence_before_any_compute(lively, prompt, n, params, error, words):
    with Engine(lively, eos_token_ids=[], dtype=torch.float32, max_seq_len=64) as engine:
        with pytest.raises(error, match=words):
            engine.sample_sync(prompt, n, params)
        with pytest.raises(error):
            asyncio.run(engine.sample(prompt, n, params))
        assert engine.stats["requests"] == 0


def test_stop_strings_without_a_decode_function_are_refused(lively):
    with Engine(lively, eos_token_ids=[], dtype=torch.float32) as engine:
        with pytest.raises(InvalidRequestError, match="decode"):
            engine.sample_sync([1, 2], 1, SamplingParams(stop=("x",)))


def test_a_request_whose_stop_check_raises_fails_alone_and_the_engine_keeps_serving(lively, prompts):
    def decode(tokens):
        raise ValueError("broken decode")

    with Engine(lively, eos_token_ids=[], decode=decode, dtype=torch.float32, batch_window_s=0.05) as engine:
        bad, good = gather_settled(
            engine, [(prompts[0], 1, SamplingParams(max_tokens=5, stop=("x",))), (prompts[1], 1, GREEDY)]
        )
        assert isinstance(bad, ValueError)
        assert good[0].finish_reason == "length"
        assert engine.sample_sync(prompts[2], 1, GREEDY)[0].finish_reason == "length"
        assert engine.stats["failed_requests"] == 1


def test_a_failing_batch_fails_only_its_requests_and_the_worker_keeps_serving(lively, prompts, monkeypatch):
    with Engine(lively, eos_token_ids=[], dtype=torch.float32) as engine:
        real_decode = engine._runner.decode

        def broken(*args, **kwargs):
            monkeypatch.setattr(engine._runner, "decode", real_decode)  # fail once
            raise RuntimeError("simulated kernel failure")

        monkeypatch.setattr(engine._runner, "decode", broken)
        with pytest.raises(RuntimeError, match="simulated"):
            engine.sample_sync(prompts[0], 2, GREEDY)
        [seq] = engine.sample_sync(prompts[1], 1, GREEDY)
        assert seq.finish_reason == "length" and len(seq.tokens) == GREEDY.max_tokens
        assert engine.stats["failed_batches"] == 1


def test_close_fails_waiting_requests_and_refuses_new_ones(lively, prompts):

    engine = Engine(lively, eos_token_ids=[], dtype=torch.float32, max_batch_size=2)
    long = SamplingParams(max_tokens=3000, temperature=1.0)

    async def main():
        # one request decoding (it fills the 2 rows), one queued behind it with no room to join
        in_flight = asyncio.ensure_future(engine.sample(prompts[0], 2, long))
        await wait_for_condition(lambda: engine.stats["decode_steps"] >= 3, "the first request never started decoding")
        queued = asyncio.ensure_future(engine.sample(prompts[1], 1, long))
        await wait_for_condition(lambda: engine.stats["requests"] == 2, "the second request was never queued")
        # close from another thread, as a server's shutdown would; it must not wait for the 3000 tokens
        closer = threading.Thread(target=engine.close, daemon=True)
        started = time.monotonic()
        closer.start()
        try:
            settled = await asyncio.wait_for(asyncio.gather(in_flight, queued, return_exceptions=True), timeout=10)
        except asyncio.TimeoutError:
            raise AssertionError("close() left the waiting requests hanging for 10 s") from None
        closer.join(timeout=10)
        assert not closer.is_alive(), "close() did not return within 10 s"
        return settled, time.monotonic() - started

    (in_flight, queued), took = asyncio.run(main())
    for failed in (in_flight, queued):
        assert isinstance(failed, HoneError) and "closed" in str(failed), f"not failed by close(): {str(failed)[:200]}"
    assert took < 5, f"the requests failed {took:.1f} s after close()"  # a decode step or two, not the 3000 tokens
    assert engine.stats["decode_steps"] < 1000
    with pytest.raises(HoneError, match="closed"):
        engine.sample_sync(prompts[0], 1, GREEDY)


async def wait_for_condition(condition, message: str, timeout_s: float = 30.0) -> None:
    """Yield to the loop until `condition()` holds; fail with `message` after `timeout_s`."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        assert time.monotonic() < deadline, f"{message} (waited {timeout_s:.0f} s)"
        await asyncio.sleep(0.001)


def gather_settled(engine: Engine, calls):
    """Like `gather`, but returns exceptions in place of results."""

    async def main():
        return await asyncio.gather(*[engine.sample(p, n, params) for p, n, params in calls], return_exceptions=True)

    return asyncio.run(main())


# --------------------------------------------------------------------------- other Llama-family models
def tiny_config(model_type: str, vocab_size: int, **options):
    return AutoConfig.for_model(
        model_type,
        vocab_size=vocab_size,
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=512,
        tie_word_embeddings=False,
        **options,
    )


# sliding windows shorter than the longest prompt (~20 tokens) plus its 10 new tokens: the window bites
FAMILIES = {
    "qwen2": {},
    "qwen3": {},
    "mistral": {"sliding_window": 8},
    "phi3": {},
    "gemma3_text": {"sliding_window": 8, "layer_types": ["sliding_attention", "full_attention"], "query_pre_attn_scalar": 16},
}


@pytest.mark.parametrize("model_type", FAMILIES)
def test_other_llama_family_models_decode_like_their_hugging_face_forward(model_type, tokenizer, prompts):
    config = tiny_config(model_type, len(tokenizer), **FAMILIES[model_type])
    torch.manual_seed(0)
    model = make_lively(AutoModelForCausalLM.from_config(config, dtype=torch.float32))
    with Engine(model, eos_token_ids=[], dtype=torch.float32, max_seq_len=512) as engine:
        results = gather(engine, [(p, 1, GREEDY) for p in prompts])
        logprobs = results[-1][0].logprobs
    for prompt, [seq] in zip(prompts, results):
        assert seq.tokens == naive_greedy(model, prompt, GREEDY.max_tokens)
    reference = full_forward_logprobs(model, prompts[-1], results[-1][0].tokens)
    expected = reference.gather(1, torch.tensor(results[-1][0].tokens).unsqueeze(1)).squeeze(1)
    assert torch.allclose(torch.tensor(logprobs), expected, atol=1e-4)


@pytest.mark.parametrize("model_type", ["mistral", "gemma3_text"])
def test_a_sliding_window_layers_cache_holds_only_its_window(model_type, tokenizer, prompts):
    """The ring is bounded by the window however long the sequence grows, and n samples copied
    from one prefill (whose ring wrapped) each go on exactly as a fresh prefill would."""
    config = tiny_config(model_type, len(tokenizer), **FAMILIES[model_type])
    torch.manual_seed(0)
    model = make_lively(AutoModelForCausalLM.from_config(config, dtype=torch.float32))
    params = SamplingParams(max_tokens=40, temperature=1.0, seed=5)
    with Engine(model, eos_token_ids=[], dtype=torch.float32, max_seq_len=512) as engine:
        [a, b] = engine.sample_sync(prompts[-1], 2, params)
        runner = engine._runner
        windows = [w for w in runner._groups if w is not None]
        assert windows == [8] and all(k.shape[-1] <= 8 for k, w in zip(runner.k_groups, runner._groups) if w is not None)
        assert any(k.shape[-1] > 8 for k in runner.k_groups) or model_type == "mistral"  # Gemma's global layers keep everything
    for seq in (a, b):
        tokens = seq.tokens
        reference = full_forward_logprobs(model, prompts[-1], tokens)
        expected = reference.gather(1, torch.tensor(tokens).unsqueeze(1)).squeeze(1)
        assert torch.allclose(torch.tensor(seq.logprobs), expected, atol=1e-4)
    assert a.tokens != b.tokens


# --------------------------------------------------------------------------- the embedded model
@pytest.mark.slow
def test_embedded_model_greedy_and_logprobs_match_its_full_forward(embedded):
    model, tokenizer = embedded.model, embedded.tokenizer
    prompts = [tokenizer.encode(t) for t in ["The capital of France is", "def fibonacci(n):"]]
    with Engine(model, eos_token_ids=[], dtype=torch.float32) as engine:
        results = gather(engine, [(p, 1, GREEDY) for p in prompts])
    with Engine(model, eos_token_ids=[], dtype=torch.bfloat16) as engine:
        sampled = gather(engine, [(p, 1, SamplingParams(max_tokens=12, temperature=1.0, seed=0)) for p in prompts])
    for prompt, [seq], [bf16] in zip(prompts, results, sampled):
        assert seq.tokens == naive_greedy(model, prompt, GREEDY.max_tokens)
        reference = full_forward_logprobs(model, prompt, seq.tokens)
        expected = reference.gather(1, torch.tensor(seq.tokens).unsqueeze(1)).squeeze(1)
        assert torch.allclose(torch.tensor(seq.logprobs), expected, atol=1e-4)
        # bf16 body, fp32 head, against the fp32 model. Measured over 384 sampled tokens: mean
        # |error| 0.025-0.027 nats, max 0.19-0.24 (with a bf16 head as well: mean 0.032, max 0.21-0.36)
        reference = full_forward_logprobs(model, prompt, bf16.tokens)
        expected = reference.gather(1, torch.tensor(bf16.tokens).unsqueeze(1)).squeeze(1)
        errors = (torch.tensor(bf16.logprobs) - expected).abs()
        assert errors.mean() < 0.08 and errors.max() < 0.6, (errors.mean(), errors.max())


@pytest.mark.slow
def test_gemma3_270m_greedy_and_logprobs_match_its_full_forward():
    """The second packaged model: Gemma 3's own layout (local ring-cached layers, 262k vocabulary,
    head_dim 256) run by the engine against transformers' forward of the same weights."""
    from hone.models import load_model

    loaded = load_model("gemma3-270m")
    model, tokenizer = loaded.model, loaded.tokenizer
    end_of_turn = tokenizer.convert_tokens_to_ids("<end_of_turn>")
    assert end_of_turn in model.generation_config.eos_token_id  # a reply ends at the end of its turn
    text = tokenizer.apply_chat_template([{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Name a colour."}], add_generation_prompt=True, tokenize=False)
    assert text == "<bos><start_of_turn>user\nBe brief.\n\nName a colour.<end_of_turn>\n<start_of_turn>model\n"
    prompt = tokenizer.encode(text, add_special_tokens=False)
    with Engine(model, eos_token_ids=[], dtype=torch.float32) as engine:
        [seq] = engine.sample_sync(prompt, 1, GREEDY)
    # transformers' cached greedy decode: a full forward per token costs ~3 s at this vocabulary here
    with torch.no_grad():
        ids = torch.tensor([prompt])
        hf = model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=GREEDY.max_tokens, min_new_tokens=GREEDY.max_tokens, do_sample=False)
    assert seq.tokens == hf[0, len(prompt) :].tolist()
    reference = full_forward_logprobs(model, prompt, seq.tokens)
    expected = reference.gather(1, torch.tensor(seq.tokens).unsqueeze(1)).squeeze(1)
    # fp32 both sides, summed in different orders (oneDNN's GEMM here, MKL's in transformers): over
    # a 262k vocabulary the log-softmax differs by up to ~2e-4 nats (measured 1.6e-4 on AMD EPYC)
    assert torch.allclose(torch.tensor(seq.logprobs), expected, atol=5e-4)


def test_preferred_dtype_on_x86_follows_the_cpus_bf16_instructions_not_a_timing():
    import platform

    from hone.hardware import bf16_is_native, preferred_dtype

    if torch.cuda.is_available() or platform.machine().lower() not in ("x86_64", "amd64"):
        pytest.skip("decided by CUDA or by a timing probe on this machine")
    native = torch.cpu._is_amx_tile_supported() or torch.cpu._is_avx512_bf16_supported()
    assert preferred_dtype() == (torch.bfloat16 if native else torch.float32)
    assert bf16_is_native(torch.device("cpu")) is native  # what a trainer's autocast_bf16="auto" asks


def test_a_serving_only_process_computes_in_bf16_wherever_bf16_runs_fast_and_training_keeps_fp32_elsewhere():
    from hone.engine.engine import bf16_kernel_runs, preferred_dtype, serving_dtype, serving_options

    if preferred_dtype() == torch.bfloat16:
        assert serving_dtype() == torch.bfloat16  # native bf16: both
    else:  # e.g. AVX2 without AVX-512: hone's own kernel makes bf16 the faster one to serve in, not to train beside
        assert serving_dtype() == (torch.bfloat16 if bf16_kernel_runs() else torch.float32)
    # the head goes bf16 only where the kernel keeps its logits fp32 (fp32 sums, fp32 out)
    head = torch.bfloat16 if serving_dtype() == torch.bfloat16 and bf16_kernel_runs(head=True) else torch.float32
    assert serving_options() == {"dtype": serving_dtype(), "lm_head_dtype": head}


def test_a_script_that_makes_an_engine_and_ends_at_once_exits_cleanly():
    """The worker repacks the weights as soon as the engine is made; a script that ended during
    that (a training-only script never samples) was killed inside torch: 'terminate called without
    an active exception', exit status 134. The embedded model, so the repack outlasts the script."""
    import os
    import subprocess
    import sys

    script = (
        "from hone.engine import Engine\n"
        "from hone.models import load_model\n"
        "Engine(load_model('smollm2-135m').model, eos_token_ids=[])\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert done.returncode == 0 and "terminate called" not in done.stderr, done.stderr[-2000:]
