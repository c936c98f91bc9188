"""Serving NAME@STEP: the fast LoRA merge from the adapter file against the slow obvious path (a throwaway trainer)."""

from __future__ import annotations

import asyncio

import pytest
import torch

from hone.backends import LocalBackend
from hone.backends.local import _checkpoint_weights, _weights_via_trainer
from hone.errors import CheckpointError
from hone.types import AdamParams, Datum, SamplingParams


@pytest.mark.parametrize("lora_alpha", [None, 3])
def test_the_adapter_merge_equals_the_trainers_merged_weights_and_serves_the_same_tokens(tmp_path, lora_alpha):
    backend = LocalBackend()
    try:
        options = {"lora_rank": 4} | ({"lora_alpha": lora_alpha} if lora_alpha else {})
        backend.add_model("m", "tiny", **options)
        handle = backend.get("m")
        trainer = backend.trainer("m")
        datum = Datum.from_sequence([1, 2, 3, 4, 5, 6], [0, 0, 1, 1, 1, 1], [0.0, 0, -9, -9, -9, -9], [0.0, 0, 1, 1, 1, 1])
        trainer.forward_backward([datum], "cispo")
        trainer.optim_step(AdamParams(learning_rate=5e-2))  # B moves off zero: the merge is not the base
        trainer.save_state(tmp_path / "c")

        fast = _checkpoint_weights(handle, tmp_path / "c")  # merged from the adapter file
        slow = _weights_via_trainer(handle, tmp_path / "c")
        base = handle.loaded.model.state_dict()
        assert len(fast) == 2 * 7  # every linear layer of the 2-layer model's blocks
        for name, tensor in slow.items():
            expected = fast.get(name, base[name])
            assert torch.equal(tensor, expected.float()), name
        assert any(not torch.equal(fast[n], base[n]) for n in fast)

        backend.add_checkpoint_model("m@1", "m", tmp_path / "c")
        params = SamplingParams(max_tokens=6, temperature=0)
        asyncio.run(backend.load_state("m", tmp_path / "c"))  # the live engine gets the same weights the slow way
        live = backend.get("m").sample_sync([1, 2, 3], 1, params)
        served = backend.get("m@1").sample_sync([1, 2, 3], 1, params)
        assert served[0].tokens == live[0].tokens and served[0].logprobs == pytest.approx(live[0].logprobs, abs=1e-6)
    finally:
        backend.close()


def test_a_checkpoint_of_another_configuration_is_refused_with_one_sentence(tmp_path):
    backend = LocalBackend()
    try:
        backend.add_model("r4", "tiny", lora_rank=4)
        backend.trainer("r4").save_state(tmp_path / "c")
        backend.add_model("r8", "tiny", lora_rank=8)
        other = backend.get("r8")
        with pytest.raises(CheckpointError, match="differently configured"):
            _checkpoint_weights(other, tmp_path / "c")
    finally:
        backend.close()
