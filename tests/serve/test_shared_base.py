"""LoRA models of one base on one LocalBackend share the base in memory (sampling and training),
and each samples exactly what it would sample on a backend of its own."""

from __future__ import annotations

import asyncio

import pytest
import torch

from hone.backends import LocalBackend
from hone.backends.local import _checkpoint_weights
from hone.types import AdamParams, Datum, SamplingParams

GREEDY = SamplingParams(max_tokens=8, temperature=0)
PROMPTS = ([1, 2, 3], [40, 41, 42, 43, 44])
DATA = {  # a different lesson per model, so their adapters differ
    "a": Datum.from_sequence([1, 2, 3, 4, 5, 6], [0, 0, 1, 1, 1, 1], [0.0, 0, -9, -9, -9, -9], [0.0, 0, 1, 1, 1, 1]),
    "b": Datum.from_sequence([7, 8, 9, 10, 11], [0, 0, 1, 1, 1], [0.0, 0, -9, -9, -9], [0.0, 0, -1, -1, -1]),
}


def train(backend: LocalBackend, name: str, datum: Datum, steps: int = 1) -> None:
    async def go():
        for _ in range(steps):
            await backend.forward_backward(name, [datum], "cispo")
            await backend.optim_step(name, AdamParams(learning_rate=5e-2))

    asyncio.run(go())


def samples(backend: LocalBackend, name: str) -> list[tuple[list[int], list[float]]]:
    return [(s.tokens, s.logprobs) for p in PROMPTS for s in backend.get(name).sample_sync(p, 1, GREEDY)]


def base_weight(trainer) -> torch.Tensor:
    return trainer._causal_lm.model.layers[0].self_attn.q_proj.base_layer.weight


def storage(*modules) -> int:
    """Bytes of distinct tensor storage across these modules' parameters."""
    seen = {}
    for module in modules:
        for p in module.parameters():
            seen[p.untyped_storage().data_ptr()] = p.untyped_storage().nbytes()
    return sum(seen.values())


def test_two_lora_models_share_one_engine_and_one_set_of_frozen_base_weights():
    backend = LocalBackend(share_base=True)
    try:
        backend.add_model("a", "tiny", lora_rank=4)
        a = backend.get("a")
        backend.add_model("b", "tiny", lora_rank=8)
        b = backend.get("b")
        backend.add_model("f", "tiny", full_finetune=True)
        full = backend.get("f")
        backend.add_model("s", "tiny", lora_rank=4, seed=1)  # `tiny` with another seed is another base
        other_seed = backend.get("s")
        assert a.engine is b.engine and a.loaded is b.loaded
        assert full.engine is not a.engine and other_seed.engine is not a.engine
        ta, tb = backend.trainer("a"), backend.trainer("b")
        shared = a.loaded.model.model.layers[0].self_attn.q_proj.weight
        assert base_weight(ta).data_ptr() == base_weight(tb).data_ptr() == shared.data_ptr()
        # the two trainers together hold the base once plus their two adapters, nothing more
        adapters = sum(p.numel() * p.element_size() for t in (ta, tb) for p in t.model.parameters() if p.requires_grad)
        assert storage(ta.model, tb.model) == storage(a.loaded.model) + adapters
        # a full fine-tuning model trains its own copy
        assert backend.trainer("f")._causal_lm.model.layers[0].self_attn.q_proj.weight.data_ptr() != shared.data_ptr()
        # removing one model keeps the shared engine serving the other; removing the last frees it
        backend.delete_model("a")
        assert backend.get("b").sample_sync([1, 2, 3], 1, GREEDY)[0].tokens
        backend.delete_model("b")
        assert not backend._bases.get(("tiny", 0))
    finally:
        backend.close()


def test_each_lora_models_samples_equal_those_of_a_backend_that_serves_it_alone_and_training_one_leaves_the_other_unchanged():
    backend = LocalBackend(share_base=True)
    alone = {name: LocalBackend(share_base=True) for name in DATA}
    try:
        for name in DATA:
            backend.add_model(name, "tiny", lora_rank=4)
            alone[name].add_model(name, "tiny", lora_rank=4)
        before_b = samples(backend, "b")
        train(backend, "a", DATA["a"])
        train(alone["a"], "a", DATA["a"])
        assert samples(backend, "b") == before_b  # training a moved nothing of b
        assert samples(backend, "a") != before_b  # ... while a's samples did change
        train(backend, "b", DATA["b"], steps=2)
        train(alone["b"], "b", DATA["b"], steps=2)
        for name in DATA:
            assert samples(backend, name) == samples(alone[name], name), name  # tokens and logprobs identical
            assert backend.trainer(name).step == alone[name].trainer(name).step
    finally:
        backend.close()
        for other in alone.values():
            other.close()


def test_a_lora_checkpoint_served_as_name_at_step_is_an_adapter_on_the_shared_engine_with_the_checkpoints_samples(tmp_path):
    backend = LocalBackend(share_base=True)
    try:
        backend.add_model("m", "tiny", lora_rank=4)
        handle = backend.get("m")
        train(backend, "m", DATA["a"])
        at_step_1 = samples(backend, "m")
        asyncio.run(backend.save_state("m", tmp_path / "c1"))
        train(backend, "m", DATA["b"], steps=2)  # the live model moves on
        assert samples(backend, "m") != at_step_1
        served = backend.add_checkpoint_model("m@1", "m", tmp_path / "c1")
        assert served.engine is handle.engine and served.adapter == "m@1"
        assert samples(backend, "m@1") == at_step_1
        # the merged-weights engine of before (the weights merged into a copy of the base): same tokens,
        # logprobs within bf16 rounding
        merged = backend._new_engine(handle.loaded)
        try:
            merged.load_weights(_checkpoint_weights(handle, tmp_path / "c1"))
            for prompt, (tokens, logprobs) in zip(PROMPTS, at_step_1):
                [seq] = merged.sample_sync(prompt, 1, GREEDY)
                assert seq.tokens == tokens
                assert seq.logprobs == pytest.approx(logprobs, abs=2e-2)
        finally:
            merged.close()
        backend.delete_model("m@1")
        assert samples(backend, "m") != at_step_1 and handle.engine.has_adapter("m")
    finally:
        backend.close()


def test_two_lora_models_training_at_the_same_time_on_the_shared_base_train_as_they_would_alone():
    backend = LocalBackend(share_base=True)
    alone = {name: LocalBackend(share_base=True) for name in DATA}
    try:
        for name in DATA:
            backend.add_model(name, "tiny", lora_rank=4)
            alone[name].add_model(name, "tiny", lora_rank=4)

        async def both():  # forward_backward and optim_step of a and b interleave in worker threads
            async def one(name):
                for _ in range(2):
                    metrics = await backend.forward_backward(name, [DATA[name]], "cispo")
                    await backend.optim_step(name, AdamParams(learning_rate=5e-2))
                return metrics

            return await asyncio.gather(*(one(name) for name in DATA))

        together = asyncio.run(both())
        for name, metrics in zip(DATA, together):
            train(alone[name], name, DATA[name], steps=1)
            last = asyncio.run(alone[name].forward_backward(name, [DATA[name]], "cispo"))
            asyncio.run(alone[name].optim_step(name, AdamParams(learning_rate=5e-2)))
            assert metrics["loss"] == last["loss"], name
            assert samples(backend, name) == samples(alone[name], name), name
    finally:
        backend.close()
        for other in alone.values():
            other.close()


def test_two_concurrent_adds_of_one_name_give_one_model_and_one_clear_refusal_leaving_the_first_intact():
    from concurrent.futures import ThreadPoolExecutor

    from hone.errors import InvalidRequestError

    backend = LocalBackend(share_base=True)
    try:
        backend.add_model("keep", "tiny", lora_rank=4)
        train(backend, "keep", DATA["a"])
        trained = samples(backend, "keep")
        with ThreadPoolExecutor(2) as pool:
            outcomes = list(pool.map(lambda _: _try(backend.add_model, "twin", "tiny", lora_rank=4), range(2)))
        refused = [o for o in outcomes if isinstance(o, InvalidRequestError)]
        assert len(refused) == 1 and "already exists" in str(refused[0])
        assert backend.list_models() == ["keep", "twin"]
        assert samples(backend, "keep") == trained  # the shared engine's adapters are untouched
        with pytest.raises(InvalidRequestError, match="already exists"):  # nor can a re-add clobber a trained adapter
            backend.add_model("keep", "tiny", lora_rank=4)
        assert samples(backend, "keep") == trained
    finally:
        backend.close()


def _try(function, *args, **kwargs):
    try:
        return function(*args, **kwargs)
    except Exception as exc:  # the refusal is the result under test
        return exc
