"""Trainer on the tiny model: fast paths against slow ones, validation, learning, checkpoints, weights."""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest
import torch
from transformers import AutoModelForCausalLM

from hone.errors import CheckpointError, InvalidRequestError, SequenceTooLongError
from hone.training import LossConfig, Trainer
from hone.types import AdamParams, Datum

ADAM = AdamParams(learning_rate=1e-2)


# --------------------------------------------------------------------------- batches
def _grpo_batch(seed: int = 0, groups: int = 2, group_size: int = 3, prompt_len: int = 24) -> list[Datum]:
    """Groups of attempts sharing a prompt (weights 0 there), plus one lone sequence."""
    rng = random.Random(seed)
    datums = []
    for _ in range(groups):
        prompt = [rng.randrange(1000) for _ in range(prompt_len)]
        for g in range(group_size):
            completion = [rng.randrange(1000) for _ in range(rng.randrange(3, 10))]
            tokens = prompt + completion
            weights = [0.0] * len(prompt) + [1.0] * len(completion)
            sampler = [0.0] * len(prompt) + [-10.8 + rng.uniform(-0.3, 0.3) for _ in completion]
            advantage = [g - (group_size - 1) / 2] * len(tokens)
            datums.append(Datum.from_sequence(tokens, weights, sampler, advantage))
    lone = [rng.randrange(1000) for _ in range(15)]
    datums.append(Datum.from_sequence(lone, [1.0] * 15, [-10.8] * 15, [0.5] * 15))
    return datums


def _trainer(tiny, **kwargs) -> Trainer:
    return Trainer(tiny.model, lora_rank=4, **kwargs)


def _perturb_lora(trainer: Trainer, seed: int = 1) -> None:
    """LoRA's B starts at zero, which hides half the gradient paths; give every adapter weight a value."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in trainer._trainable:
            p.copy_(torch.randn(p.shape, generator=generator) * 0.05)


def _grads(trainer: Trainer) -> list[torch.Tensor]:
    return [p.grad.clone() for p in trainer._trainable]


def _weights(trainer: Trainer) -> list[torch.Tensor]:
    return [p.detach().clone() for p in trainer._trainable]


def _assert_same(a: list[torch.Tensor], b: list[torch.Tensor], atol: float = 1e-5) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, atol=atol, rtol=1e-4)


# --------------------------------------------------------------------------- fast paths = slow paths
@pytest.mark.parametrize(
    "loss, config",
    [
        ("cispo", LossConfig()),
        ("ppo", LossConfig(ratio_level="sequence", aggregation="sequence_mean")),
        ("cross_entropy", LossConfig()),
    ],
)
def test_micro_batched_gradients_equal_one_big_batch(tiny, loss, config):
    datums = _grpo_batch()
    whole = _trainer(tiny, min_shared_prefix=0)
    split = _trainer(tiny, min_shared_prefix=0, micro_batch_tokens=40)  # ~1-2 sequences per micro-batch
    for trainer in (whole, split):
        _perturb_lora(trainer)
    m_whole = whole.forward_backward(datums, loss, config)
    m_split = split.forward_backward(datums, loss, config)
    assert m_whole["micro_batches"] == 1 and m_split["micro_batches"] >= 4
    assert m_split["loss"] == pytest.approx(m_whole["loss"], abs=1e-5)
    _assert_same(_grads(split), _grads(whole))


def test_custom_loss_over_several_micro_batches_gets_the_whole_batch_gradient(tiny):
    def squared_total(logprobs, datums, config):  # not a sum over sequences: needs the exact two-pass path
        total = sum((lp * torch.tensor(d.weights)).sum() for lp, d in zip(logprobs, datums))
        return (total / 100) ** 2, {}

    datums = _grpo_batch()
    whole = _trainer(tiny, min_shared_prefix=0)
    split = _trainer(tiny, min_shared_prefix=0, micro_batch_tokens=40)
    for trainer in (whole, split):
        _perturb_lora(trainer)
    m_whole = whole.forward_backward(datums, squared_total)
    m_split = split.forward_backward(datums, squared_total)
    assert m_split["micro_batches"] > 1
    assert m_split["loss"] == pytest.approx(m_whole["loss"], rel=1e-5)
    _assert_same(_grads(split), _grads(whole))


@pytest.mark.parametrize("full_finetune", [False, True])
def test_shared_prefix_gives_the_same_loss_and_gradients_as_running_each_datum_whole(tiny, full_finetune):
    datums = _grpo_batch()
    naive = _trainer(tiny, min_shared_prefix=0, full_finetune=full_finetune)
    shared = _trainer(tiny, min_shared_prefix=16, full_finetune=full_finetune)
    if not full_finetune:
        for trainer in (naive, shared):
            _perturb_lora(trainer)
    m_naive = naive.forward_backward(datums, "cispo")
    m_shared = shared.forward_backward(datums, "cispo")
    # 2 groups of 3 sharing a 24-token prompt: each group skips 2 * 24 prompt tokens
    assert m_naive["prefix_tokens_shared"] == 0 and m_shared["prefix_tokens_shared"] == 2 * 2 * 24
    assert m_shared["loss"] == pytest.approx(m_naive["loss"], abs=1e-5)
    assert m_shared["entropy"] == pytest.approx(m_naive["entropy"], abs=1e-5)
    _assert_same(_grads(shared), _grads(naive))


def test_shared_prefix_and_micro_batches_together_split_a_group_and_keep_the_gradient(tiny):
    datums = _grpo_batch(groups=1, group_size=6)
    naive = _trainer(tiny, min_shared_prefix=0)
    split = _trainer(tiny, min_shared_prefix=16, micro_batch_tokens=24 + 3 * 9)  # at most 3 suffixes per part
    for trainer in (naive, split):
        _perturb_lora(trainer)
    naive.forward_backward(datums, "cispo")
    metrics = split.forward_backward(datums, "cispo")
    assert metrics["micro_batches"] >= 2 and metrics["prefix_tokens_shared"] > 0
    _assert_same(_grads(split), _grads(naive))


def test_logprobs_equal_log_softmax_of_the_hugging_face_model_at_every_position(tiny):
    datums = _grpo_batch()
    trainer = _trainer(tiny)
    _perturb_lora(trainer)
    got = trainer.logprobs(datums)
    for datum, lp in zip(datums, got):
        with torch.no_grad():
            logits = trainer.model(input_ids=torch.tensor([datum.input_tokens])).logits[0].float()
        want = torch.log_softmax(logits, -1).gather(1, torch.tensor(datum.target_tokens)[:, None]).squeeze(1)
        torch.testing.assert_close(lp, want, atol=1e-5, rtol=1e-5)


def test_entropy_metric_is_the_mean_entropy_over_weighted_tokens(tiny):
    datums = _grpo_batch()[:1]
    trainer = _trainer(tiny)
    metrics = trainer.forward_backward(datums, "cispo")
    with torch.no_grad():
        logits = trainer.model(input_ids=torch.tensor([datums[0].input_tokens])).logits[0].float()
    logp = torch.log_softmax(logits, -1)
    entropy = -(logp.exp() * logp).sum(-1)  # (T,)
    weighted = torch.tensor(datums[0].weights) != 0
    assert metrics["entropy"] == pytest.approx(entropy[weighted].mean().item(), abs=1e-4)


def test_bf16_autocast_gives_close_fp32_logprobs(tiny):
    datums = _grpo_batch()[:2]
    fp32 = _trainer(tiny).logprobs(datums)
    bf16 = _trainer(tiny, autocast_bf16=True).logprobs(datums)
    for a, b in zip(fp32, bf16):
        assert b.dtype == torch.float32
        torch.testing.assert_close(a, b, atol=0.1, rtol=0.02)


def test_bf16_autocast_auto_follows_the_hardware(tiny):
    """"auto" autocasts only where bf16 is native (tests/engine checks that against the CPU's flags):
    emulated bf16 (AVX2-only x86) trains 18x slower than fp32, and `hone demo` asks for "auto"."""
    from hone.hardware import bf16_is_native

    assert _trainer(tiny, autocast_bf16="auto").autocast_bf16 is bf16_is_native(torch.device("cpu"))
    assert _trainer(tiny, autocast_bf16=False).autocast_bf16 is False


# --------------------------------------------------------------------------- validation
def test_a_sequence_longer_than_max_seq_len_is_refused_before_any_compute(tiny):
    trainer = _trainer(tiny, max_seq_len=20)
    datums = _grpo_batch()  # 24-token prompts
    with pytest.raises(SequenceTooLongError, match="max_seq_len of 20"):
        trainer.forward_backward(datums, "cispo")
    assert all(p.grad is None for p in trainer._trainable)
    assert trainer.step == 0


def test_mismatched_datum_lengths_are_an_invalid_request(tiny):
    datum = Datum(input_tokens=[1, 2, 3], target_tokens=[2, 3, 4], weights=[1.0, 1.0])
    with pytest.raises(InvalidRequestError, match="datum 0"):
        _trainer(tiny).forward_backward([datum], "cross_entropy")


def test_an_rl_loss_refuses_datums_without_sampler_logprobs_before_compute(tiny):
    datum = Datum(input_tokens=[1, 2, 3], target_tokens=[2, 3, 4], weights=[1.0] * 3, advantages=[1.0] * 3)
    trainer = _trainer(tiny)
    with pytest.raises(InvalidRequestError, match="sampler_logprobs"):
        trainer.forward_backward([datum], "ppo")
    assert all(p.grad is None for p in trainer._trainable)


def test_unknown_loss_name_is_refused(tiny):
    with pytest.raises(InvalidRequestError, match="unknown loss"):
        _trainer(tiny).forward_backward(_grpo_batch()[:1], "grpo")


def test_a_custom_callable_loss_drives_the_gradient(tiny):
    seen = {}

    def mean_logprob(logprobs, datums, config):
        seen["n"] = len(logprobs)
        return -torch.cat(logprobs).mean(), {"custom": 1.0}

    trainer = _trainer(tiny)
    metrics = trainer.forward_backward(_grpo_batch()[:2], mean_logprob)
    assert seen["n"] == 2 and metrics["custom"] == 1.0
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in trainer._trainable)


# --------------------------------------------------------------------------- learning
def _confident_tiny(tiny):
    """The tiny model with larger embeddings: its tied, frozen head can then express confident
    predictions, which a LoRA adapter alone could not reach from logits of size ~1."""
    model = copy.deepcopy(tiny.model)
    with torch.no_grad():
        model.get_input_embeddings().weight.mul_(10)
    return model


@pytest.mark.parametrize("full_finetune", [False, True])
def test_repeated_cross_entropy_steps_drive_the_loss_down(tiny, full_finetune):
    tokens = tiny.tokenizer("The quick brown fox jumps over the lazy dog.")["input_ids"]
    datum = Datum.from_sequence(tokens, [1.0] * len(tokens))
    trainer = Trainer(_confident_tiny(tiny), lora_rank=16, full_finetune=full_finetune)
    losses = []
    for _ in range(30):
        losses.append(trainer.forward_backward([datum], "cross_entropy")["loss"])
        metrics = trainer.optim_step(ADAM)
        assert metrics["grad_norm"] > 0
    assert trainer.step == 30
    assert losses[-1] < 0.5 * losses[0]


def test_gradients_accumulate_across_calls_until_optim_step(tiny):
    datums = _grpo_batch()
    once, twice = _trainer(tiny), _trainer(tiny)
    for trainer in (once, twice):
        _perturb_lora(trainer)
    once.forward_backward(datums, "cispo")
    twice.forward_backward(datums, "cispo")
    twice.forward_backward(datums, "cispo")
    _assert_same(_grads(twice), [2 * g for g in _grads(once)])
    twice.optim_step(ADAM)
    assert all(p.grad is None for p in twice._trainable)


def test_same_seed_gives_the_same_adapter_and_leaves_the_callers_model_alone(tiny):
    before = {k: v.clone() for k, v in tiny.model.state_dict().items()}
    a, b, c = _trainer(tiny, seed=3), _trainer(tiny, seed=3), _trainer(tiny, seed=4)
    _assert_same(_weights(a), _weights(b), atol=0)
    assert any(not torch.equal(x, y) for x, y in zip(_weights(a), _weights(c)))
    a.forward_backward(_grpo_batch(), "cispo")
    a.optim_step(ADAM)
    after = tiny.model.state_dict()
    assert set(after) == set(before) and all(torch.equal(before[k], after[k]) for k in before)


# --------------------------------------------------------------------------- checkpoints
def _train(trainer: Trainer, steps: int, seed: int) -> None:
    for s in range(steps):
        trainer.forward_backward(_grpo_batch(seed=seed + s), "cispo")
        trainer.optim_step(ADAM)


@pytest.mark.parametrize("full_finetune", [False, True])
def test_load_state_restores_weights_optimizer_step_and_rng_exactly(tiny, tmp_path, full_finetune):
    original = _trainer(tiny, full_finetune=full_finetune)
    _train(original, 2, seed=10)
    path = original.save_state(tmp_path / "ckpt")
    rng_after_save = (random.random(), np.random.rand(), torch.rand(1).item())

    restored = _trainer(tiny, full_finetune=full_finetune, seed=99)  # a different init, overwritten by the load
    restored.load_state(path)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == rng_after_save
    assert restored.step == 2
    _assert_same(_weights(restored), _weights(original), atol=0)

    _train(original, 2, seed=20)
    _train(restored, 2, seed=20)
    assert restored.step == original.step == 4
    _assert_same(_weights(restored), _weights(original), atol=1e-7)


def test_save_state_replaces_an_existing_checkpoint_and_leaves_no_staging_dirs(tiny, tmp_path):
    trainer = _trainer(tiny)
    trainer.save_state(tmp_path / "ckpt")
    _train(trainer, 1, seed=0)
    trainer.save_state(tmp_path / "ckpt")
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]
    fresh = _trainer(tiny)
    fresh.load_state(tmp_path / "ckpt", with_optimizer=False)
    assert fresh.step == 1


def test_missing_or_corrupt_checkpoints_raise_checkpoint_error(tiny, tmp_path):
    trainer = _trainer(tiny)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        trainer.load_state(tmp_path / "nowhere")

    path = trainer.save_state(tmp_path / "ckpt")
    adapter = path / "adapter" / "adapter_model.safetensors"
    adapter.write_bytes(adapter.read_bytes()[:100])  # cut short
    with pytest.raises(CheckpointError, match="corrupt"):
        trainer.load_state(path)

    path = trainer.save_state(tmp_path / "ckpt2")
    (path / "trainer_state.json").unlink()
    with pytest.raises(CheckpointError, match="not a complete"):
        trainer.load_state(path)

    path = Trainer(tiny.model, lora_rank=8).save_state(tmp_path / "ckpt3")
    with pytest.raises(CheckpointError, match="differently configured"):
        trainer.load_state(path)


# --------------------------------------------------------------------------- sampler weights
def test_sampler_state_dict_loads_into_a_plain_model_with_the_same_logits(tiny):
    trainer = _trainer(tiny)
    _perturb_lora(trainer)
    lora_before = _weights(trainer)
    state = trainer.sampler_state_dict()
    assert all(t.dtype == torch.float32 for t in state.values())
    assert not any("lora" in k or "base_layer" in k for k in state)

    plain = AutoModelForCausalLM.from_config(tiny.model.config)
    plain.load_state_dict(state, strict=True)
    plain.eval()
    ids = torch.tensor([_grpo_batch()[0].input_tokens])
    with torch.no_grad():
        want = trainer.model(input_ids=ids).logits
        got = plain(input_ids=ids).logits
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    _assert_same(_weights(trainer), lora_before, atol=0)  # the trainer's model is untouched

    state["model.norm.weight"].add_(1.0)  # the copy is the caller's to change
    assert not torch.equal(trainer._causal_lm.model.norm.weight, state["model.norm.weight"])


def test_sampler_state_dict_of_a_full_finetune_is_the_plain_state_dict(tiny):
    trainer = _trainer(tiny, full_finetune=True)
    _train(trainer, 1, seed=0)
    state = trainer.sampler_state_dict()
    assert set(state) == set(tiny.model.state_dict())
    for name, tensor in trainer.model.state_dict().items():
        assert torch.equal(state[name], tensor)


def test_loss_config_may_come_as_a_plain_dict(tiny):
    datums = _grpo_batch()
    a, b = _trainer(tiny), _trainer(tiny)
    m_a = a.forward_backward(datums, "ppo", LossConfig(clip_low=0.1))
    m_b = b.forward_backward(datums, "ppo", {"clip_low": 0.1})
    assert m_a["loss"] == m_b["loss"]
    with pytest.raises(InvalidRequestError, match="unknown field"):
        b.forward_backward(datums, "ppo", {"clip_lo": 0.1})
