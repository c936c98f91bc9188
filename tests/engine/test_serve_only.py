"""A process that only serves keeps one copy of the weights: the engine its packed copies (the plain
ones where hone's kernel reads them), the backend no model of its own. What it samples must not change, and what it can no longer do must
be refused with one sentence."""

from __future__ import annotations

import time

import pytest
import torch

from hone.backends import LocalBackend
from hone.engine import Engine
from hone.errors import HoneError
from hone.types import SamplingParams

from .test_adapters import gather, random_adapter

GREEDY = SamplingParams(max_tokens=12, temperature=0.0)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_a_serve_only_engine_samples_what_a_trainable_one_does_base_and_adapter(lively, prompts, dtype):
    adapter = random_adapter(lively, 4, seed=5)
    engines = [Engine(lively, eos_token_ids=[], dtype=dtype, serve_only=flag) for flag in (False, True)]
    greedy = SamplingParams(max_tokens=GREEDY.max_tokens, temperature=0.0, top_logprobs=2)
    try:
        for engine in engines:
            engine.set_adapter("a", adapter, 2.0)
        calls = [(p, 1, greedy, a) for p in prompts for a in (None, "a")]
        trainable, serving = (gather(engine, calls) for engine in engines)
        linears = engines[1]._runner._linears()
        # where hone's kernel runs a few rows beside oneDNN (AVX512-BF16) the serving engine keeps the
        # plain bf16 weights the kernel reads, and a prefill's matmul on them (torch's, not the packed
        # one) rounds to bf16 differently: logprobs agree to bf16's precision, and greedy choices
        # part only where the two best tokens were within that of each other
        unpacked = any(linear.kernel_rows and linear.mode == "plain" for linear in linears)
        for got, expected in zip(serving, trainable):
            a, b = got[0], expected[0]
            if not unpacked:
                assert a.tokens == b.tokens and a.logprobs == pytest.approx(b.logprobs, abs=1e-5)
                continue
            same = next((i for i, (x, y) in enumerate(zip(a.tokens, b.tokens)) if x != y), len(b.tokens))
            assert a.logprobs[:same] == pytest.approx(b.logprobs[:same], abs=0.05)
            if same < len(b.tokens):
                (_, first), (_, second) = b.top_logprobs[same][:2]
                assert first - second < 0.1, (same, b.top_logprobs[same])
        # one copy of each weight: the packed one, or the plain one where the kernel reads it (MKL needs both)
        assert all(linear.weight is None or linear.packed is None or linear.mode == "mkl" for linear in linears)
        if torch.backends.mkldnn.is_available() and not unpacked:
            assert any(linear.mode == "onednn" and linear.weight is None for linear in linears)
    finally:
        for engine in engines:
            engine.close()


def test_a_serve_only_engine_refuses_new_weights_with_one_sentence(lively, prompts):
    with Engine(lively, eos_token_ids=[], dtype=torch.float32, serve_only=True) as engine:
        engine.sample_sync(prompts[0], 1, GREEDY)  # the worker has dropped the plain copies by now
        with pytest.raises(HoneError, match="serves fixed weights"):
            engine.load_weights({"model.norm.weight": torch.ones(lively.config.hidden_size)})
        assert len(engine.sample_sync(prompts[0], 1, GREEDY)[0].tokens) == GREEDY.max_tokens  # still serving


def test_a_serve_only_engine_gives_its_kv_cache_back_when_idle_and_grows_it_again(lively, prompts):
    with Engine(lively, eos_token_ids=[], dtype=torch.float32, serve_only=True) as engine:
        first = gather(engine, [(p, 2, GREEDY, None) for p in prompts])
        deadline = time.monotonic() + 10
        while engine._runner.slots and time.monotonic() < deadline:  # the worker frees it once it is idle
            time.sleep(0.01)
        assert engine._runner.slots == 0 and engine._runner.k_groups == []
        again = gather(engine, [(p, 2, GREEDY, None) for p in prompts])
        assert [[s.tokens for s in r] for r in again] == [[s.tokens for s in r] for r in first]


def test_a_serve_only_backend_frees_the_models_weights_and_refuses_training(tokenizer):
    backend = LocalBackend(serve_only=True)
    try:
        backend.add_model("m", "tiny")
        handle = backend.get("m")
        assert all(p.device.type == "meta" for p in handle.loaded.model.parameters())  # freed; the engine has its own
        assert handle.loaded.model.config.vocab_size > 0
        prompt = tokenizer.encode("The capital of France is")
        assert len(handle.sample_sync(prompt, 1, GREEDY)[0].tokens) > 0
        with pytest.raises(HoneError, match="only serves"):
            backend.trainer("m")
        with pytest.raises(HoneError, match="only serves"):
            backend.add_checkpoint_model("m@1", "m", "/nonexistent")
    finally:
        backend.close()
