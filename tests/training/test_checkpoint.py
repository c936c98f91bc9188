"""The checkpoint layout: plain tensors in, the same tensors out; wrong or partial checkpoints refused."""

import copy
import json
from pathlib import Path

import pytest
import torch

from hone.errors import CheckpointError
from hone.training import Trainer, checkpoint

PREFIX = "base_model.model.model.layers.0.self_attn.q_proj"


def adapter_weights(rank: int, seed: int = 0) -> dict[str, torch.Tensor]:
    """One adapted 6 → 5 layer in PEFT's names: A is (r, in), B is (out, r)."""
    g = torch.Generator().manual_seed(seed)
    return {
        f"{PREFIX}.lora_A.weight": torch.randn(rank, 6, generator=g),
        f"{PREFIX}.lora_B.weight": torch.randn(5, rank, generator=g),
    }


def save_lora(path: Path, rank: int = 2, alpha: int | None = None, step: int = 3, weights=None) -> Path:
    return checkpoint.save(
        path,
        full_finetune=False,
        lora_rank=rank,
        lora_alpha=alpha,
        step=step,
        weights=adapter_weights(rank) if weights is None else weights,
        model_config={"r": rank},
        optimizer_state={"state": {}, "param_groups": [{"lr": 1e-3, "params": [0, 1]}]},
        rng_states={"torch": torch.get_rng_state()},
    )


def test_a_lora_checkpoint_has_the_documented_files_and_loads_back_exactly(tmp_path):
    path = save_lora(tmp_path / "c", rank=2, step=3)
    files = sorted(str(p.relative_to(path)) for p in path.rglob("*"))
    assert files == [
        "adapter",
        "adapter/adapter_config.json",
        "adapter/adapter_model.safetensors",
        "optimizer.pt",
        "rng.pt",
        "trainer_state.json",
    ]
    # lora_alpha None means 2 · rank = 4
    assert json.loads((path / "trainer_state.json").read_text()) == {
        "format": checkpoint.FORMAT, "full_finetune": False, "lora_rank": 2, "lora_alpha": 4, "step": 3,
    }
    assert checkpoint.is_complete(path) and checkpoint.has_adapter(path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]  # no staging folder left

    state = checkpoint.load(path, full_finetune=False, lora_rank=2, lora_alpha=4)
    assert state.step == 3
    assert state.weights.keys() == adapter_weights(2).keys()
    assert all(torch.equal(state.weights[k], v) for k, v in adapter_weights(2).items())
    assert state.optimizer_state["param_groups"][0]["lr"] == 1e-3
    assert torch.equal(state.rng_states["torch"], torch.get_rng_state())
    assert checkpoint.load(path, full_finetune=False, lora_rank=2, lora_alpha=None, with_optimizer=False).optimizer_state is None


def test_a_full_checkpoint_is_a_hugging_face_folder_beside_the_trainer_files(tmp_path):
    weights = {"model.embed_tokens.weight": torch.ones(3, 2)}
    path = checkpoint.save(
        tmp_path / "c", full_finetune=True, lora_rank=16, lora_alpha=None, step=1, weights=weights,
        model_config={"model_type": "llama"}, optimizer_state={}, rng_states={},
    )
    names = sorted(p.name for p in path.iterdir())
    assert names == ["config.json", "model.safetensors", "optimizer.pt", "rng.pt", "trainer_state.json"]
    assert not checkpoint.has_adapter(path)
    state = checkpoint.load(path, full_finetune=True, lora_rank=None, lora_alpha=None)
    assert torch.equal(state.weights["model.embed_tokens.weight"], torch.ones(3, 2))


def test_a_folder_without_the_state_file_is_not_complete_and_not_loaded(tmp_path):
    path = save_lora(tmp_path / "c")
    (path / checkpoint.STATE_FILE).unlink()  # as if killed before the last file was written
    assert not checkpoint.is_complete(path)
    assert not checkpoint.is_complete(tmp_path / "nowhere")
    with pytest.raises(CheckpointError, match="not a complete"):
        checkpoint.load(path, full_finetune=False, lora_rank=2, lora_alpha=None)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        checkpoint.load(tmp_path / "nowhere", full_finetune=False, lora_rank=2, lora_alpha=None)


def test_a_corrupt_or_differently_configured_checkpoint_is_refused(tmp_path):
    path = save_lora(tmp_path / "c", rank=2)
    with pytest.raises(CheckpointError, match="differently configured"):
        checkpoint.load(path, full_finetune=False, lora_rank=4, lora_alpha=None)
    with pytest.raises(CheckpointError, match="differently configured"):
        checkpoint.load(path, full_finetune=False, lora_rank=2, lora_alpha=3)
    with pytest.raises(CheckpointError, match="has no model.safetensors"):
        checkpoint.load(path, full_finetune=True, lora_rank=None, lora_alpha=None)
    adapter = path / checkpoint.ADAPTER_DIR / checkpoint.ADAPTER_FILE
    adapter.write_bytes(adapter.read_bytes()[:50])  # cut short
    with pytest.raises(CheckpointError, match="corrupt"):
        checkpoint.load(path, full_finetune=False, lora_rank=2, lora_alpha=None)
    with pytest.raises(CheckpointError, match="corrupt"):
        checkpoint.read_adapter(path, lora_rank=2, lora_alpha=None)


def test_reading_an_adapter_saved_by_a_differently_configured_model_raises(tmp_path):
    path = save_lora(tmp_path / "c", rank=2, alpha=8)
    adapter, scale = checkpoint.read_adapter(path, lora_rank=2, lora_alpha=8)
    assert scale == 4.0  # alpha / r = 8 / 2
    assert adapter.keys() == adapter_weights(2).keys()
    with pytest.raises(CheckpointError, match="differently configured") as raised:
        checkpoint.read_adapter(path, lora_rank=4, lora_alpha=8)
    assert str(tmp_path) not in str(raised.value)  # tenants see the checkpoint's name, not the server's paths
    with pytest.raises(CheckpointError, match="differently configured"):
        checkpoint.read_adapter(path, lora_rank=2, lora_alpha=None)  # None = 2 · 2 = 4, not 8


def test_a_save_that_fails_midway_leaves_the_earlier_checkpoint_whole(tmp_path):
    path = save_lora(tmp_path / "c", step=3)
    with pytest.raises(Exception):
        save_lora(tmp_path / "c", step=4, weights={"bad": "not a tensor"})
    assert checkpoint.load(path, full_finetune=False, lora_rank=2, lora_alpha=None).step == 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c"]


def test_the_adapter_merge_equals_w_plus_scale_b_a_written_out():
    base = {"model.layers.0.self_attn.q_proj.weight": torch.randn(5, 6), "model.norm.weight": torch.ones(6)}
    adapter = adapter_weights(2, seed=1)
    merged = checkpoint.merged_adapter_weights(base, adapter, scale=0.5)
    assert list(merged) == ["model.layers.0.self_attn.q_proj.weight"]  # only adapted layers come back
    A, B = adapter[f"{PREFIX}.lora_A.weight"], adapter[f"{PREFIX}.lora_B.weight"]
    W = base["model.layers.0.self_attn.q_proj.weight"]
    # element by element: W[o, i] + 0.5 · Σ_r B[o, r] · A[r, i]
    slow = torch.tensor([[W[o, i] + 0.5 * sum(B[o, r] * A[r, i] for r in range(2)) for i in range(6)] for o in range(5)])
    assert torch.allclose(merged["model.layers.0.self_attn.q_proj.weight"], slow, atol=1e-6)


def test_a_trainers_adapter_folder_loads_with_peft_and_its_merge_equals_the_trainers(tiny, tmp_path):
    from peft import PeftModel, get_peft_model_state_dict

    trainer = Trainer(tiny.model, lora_rank=4, lora_alpha=6)
    with torch.no_grad():  # B starts at zero; give the adapter values so the merge is not the base
        for p in trainer._trainable:
            p.add_(torch.randn_like(p) * 0.1)
    path = trainer.save_state(tmp_path / "c")

    peft_model = PeftModel.from_pretrained(copy.deepcopy(tiny.model), str(path / checkpoint.ADAPTER_DIR))
    loaded = get_peft_model_state_dict(peft_model)
    expected = get_peft_model_state_dict(trainer.model)
    assert loaded.keys() == expected.keys() and all(torch.equal(loaded[k], expected[k]) for k in expected)

    adapter, scale = checkpoint.read_adapter(path, lora_rank=4, lora_alpha=6)
    assert scale == 1.5  # 6 / 4
    merged = checkpoint.merged_adapter_weights(tiny.model.state_dict(), adapter, scale)
    sampler = trainer.sampler_state_dict()
    assert merged and all(torch.allclose(merged[k], sampler[k], atol=1e-6) for k in merged)
