"""Every model family the engine runs also trains: one step, LoRA and full, after which the engine
(the adapter unmerged on top, or the new weights loaded) samples what the trained Hugging Face
model computes. Phi-3 is the family whose PEFT names differ (`qkv_proj`, `gate_up_proj` are
already fused), so its adapter reaches the engine by another mapping; Gemma 3's norm weights are
offsets from 1, so loading full weights must add it."""

from __future__ import annotations

import pytest
import torch
from peft import get_peft_model_state_dict
from transformers import AutoModelForCausalLM

from hone.engine import Engine
from hone.training import Trainer
from hone.types import AdamParams, Datum, SamplingParams

from ..engine.conftest import make_lively
from ..engine.test_engine import FAMILIES, naive_greedy, tiny_config

GREEDY = SamplingParams(max_tokens=8, temperature=0.0)


def one_step(trainer: Trainer, prompt: list[int]) -> None:
    """Push up the logprob of a fixed continuation, with a learning rate that visibly moves the model."""
    tokens = prompt + [11, 12, 13, 14]
    datum = Datum(input_tokens=tokens[:-1], target_tokens=tokens[1:], weights=[0.0] * (len(prompt) - 1) + [1.0] * 4)
    trainer.forward_backward([datum], "cross_entropy")
    trainer.optim_step(AdamParams(learning_rate=5e-2))


@pytest.mark.parametrize("model_type", ["llama", "mistral", "qwen2", "qwen3", "phi3", "gemma3_text"])
@pytest.mark.parametrize("full_finetune", [False, True], ids=["lora", "full"])
def test_one_training_step_reaches_the_engine_exactly(model_type, full_finetune, tokenizer):
    torch.manual_seed(0)
    model = make_lively(AutoModelForCausalLM.from_config(tiny_config(model_type, len(tokenizer), **FAMILIES.get(model_type, {})), dtype=torch.float32))
    trainer = Trainer(model, lora_rank=4, full_finetune=full_finetune)
    prompt = tokenizer.encode("The capital of France is")
    with Engine(model, eos_token_ids=[], dtype=torch.float32, max_seq_len=512) as engine:
        before = engine.sample_sync(prompt, 1, GREEDY)[0].tokens
        one_step(trainer, prompt)
        if full_finetune:
            engine.load_weights(trainer.sampler_state_dict())
            sampled = engine.sample_sync(prompt, 1, GREEDY)[0].tokens
        else:
            engine.set_adapter("trained", get_peft_model_state_dict(trainer.model), trainer.lora_alpha / trainer.lora_rank)
            sampled = engine.sample_sync(prompt, 1, GREEDY, adapter="trained")[0].tokens
    trained = trainer.model.eval()
    with torch.no_grad():
        assert sampled == naive_greedy(trained, prompt, GREEDY.max_tokens)
    assert sampled != before, "the step changed nothing: the test would prove nothing"
