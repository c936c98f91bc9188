"""A process that only serves keeps one copy of the weights: the engine its packed copies, the
backend no model of its own. What it samples must not change, and what it can no longer do must
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
    try:
        for engine in engines:
            engine.set_adapter("a", adapter, 2.0)
        calls = [(p, 1, GREEDY, a) for p in prompts for a in (None, "a")]
        trainable, serving = (gather(engine, calls) for engine in engines)
        for got, expected in zip(serving, trainable):
            assert got[0].tokens == expected[0].tokens
            assert got[0].logprobs == pytest.approx(expected[0].logprobs, abs=1e-5)
        runner = engines[1]._runner
        packed = [linear for linear in runner._linears() if linear.mode == "onednn"]
        if torch.backends.mkldnn.is_available():  # one copy: the packed one, but where hone's kernel also reads the plain one
            assert packed and all((linear.weight is None) != bool(linear.kernel_rows) for linear in packed)
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
