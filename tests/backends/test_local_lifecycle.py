"""A LocalBackend model's life: deleted while samples run, those samples finish and only then is it
freed; checkpoint models beyond the backend's limit go least recently used first."""

from __future__ import annotations

import asyncio

import pytest

from hone.backends import LocalBackend
from hone.errors import ModelNotFoundError
from hone.types import AdamParams, Datum, SamplingParams

LONG = SamplingParams(max_tokens=200, temperature=1.0, seed=1)
GREEDY = SamplingParams(max_tokens=6, temperature=0)
DATUM = Datum.from_sequence([1, 2, 3, 4, 5, 6], [0, 0, 1, 1, 1, 1], [0.0, 0, -9, -9, -9, -9], [0.0, 0, 1, 1, 1, 1])


@pytest.mark.parametrize("share_base", [False, True], ids=["own-engine", "shared-base"])
def test_a_model_deleted_mid_sample_finishes_that_sample_refuses_new_ones_then_is_freed(share_base):
    backend = LocalBackend(share_base=share_base, engine_options={"max_batch_size": 4})
    backend.add_model("m", "tiny", lora_rank=4)
    handle = backend.get("m")

    async def scenario():
        running = asyncio.ensure_future(backend.sample("m", [1, 2, 3], 2, LONG))
        while handle.in_flight == 0 or handle.engine.stats["decode_steps"] == 0:
            await asyncio.sleep(0.005)  # until it is decoding
        backend.delete_model("m")
        with pytest.raises(ModelNotFoundError):  # refused at once, while the other still runs
            await backend.sample("m", [1, 2, 3], 1, GREEDY)
        assert not running.done() and "m" not in backend.list_models()
        return await asyncio.wait_for(running, 60)

    try:
        finished = asyncio.run(scenario())
        assert [s.finish_reason for s in finished] == ["length", "length"] and all(len(s.tokens) == 200 for s in finished)
        if share_base:
            assert not handle.engine.has_adapter("m")  # the adapter went with the last sample
        else:
            with pytest.raises(Exception, match="closed"):
                handle.engine.sample_sync([1, 2, 3], 1, GREEDY)  # its own engine was closed
    finally:
        backend.close()


def test_checkpoint_models_past_the_limit_go_least_recently_used_first(tmp_path):
    backend = LocalBackend(checkpoint_models=2)
    try:
        backend.add_model("m", "tiny", lora_rank=4)
        for step in (1, 2, 3):
            asyncio.run(backend.forward_backward("m", [DATUM], "cispo"))
            asyncio.run(backend.optim_step("m", AdamParams(learning_rate=5e-2)))
            asyncio.run(backend.save_state("m", tmp_path / f"c{step}"))
        backend.add_checkpoint_model("m@1", "m", tmp_path / "c1")
        backend.add_checkpoint_model("m@2", "m", tmp_path / "c2")
        asyncio.run(backend.sample("m@1", [1, 2, 3], 1, GREEDY))  # m@1 is now the more recently used
        backend.add_checkpoint_model("m@3", "m", tmp_path / "c3")
        assert backend.list_models() == ["m", "m@1", "m@3"]  # m@2 went; the live model is never evicted
    finally:
        backend.close()
