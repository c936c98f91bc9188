"""A model the native runner does not reproduce (GPT-NeoX: parallel residual, partial rotary,
LayerNorm) still samples and trains, through transformers' own forward: the same tokens and fp32
logprobs as a full forward, n samples from one prefill, new weights after a training step."""

from __future__ import annotations

import asyncio

import pytest
import torch
from peft import get_peft_model_state_dict
from transformers import AutoConfig, AutoModelForCausalLM

from hone.engine import Engine
from hone.errors import HoneError
from hone.training import Trainer
from hone.types import AdamParams, Datum, SamplingParams

from .conftest import make_lively
from .test_engine import full_forward_logprobs, naive_greedy

GREEDY = SamplingParams(max_tokens=10, temperature=0.0)


@pytest.fixture(scope="module")
def neox(tokenizer):
    config = AutoConfig.for_model("gpt_neox", vocab_size=len(tokenizer), hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=512)
    torch.manual_seed(0)
    return make_lively(AutoModelForCausalLM.from_config(config, dtype=torch.float32))


def test_an_unsupported_architecture_samples_exactly_through_transformers(neox, prompts):
    with Engine(neox, eos_token_ids=[], dtype=torch.bfloat16, max_seq_len=512) as engine:
        assert engine.attention_impl == "transformers" and engine.dtype == torch.float32

        async def run():
            greedy = [engine.sample(p, 1, GREEDY) for p in prompts]
            sampled = engine.sample(prompts[-1], 3, SamplingParams(max_tokens=12, temperature=1.0, seed=4))
            return await asyncio.gather(*greedy, sampled)

        *greedy, sampled = asyncio.run(run())
    for prompt, [seq] in zip(prompts, greedy):
        assert seq.tokens == naive_greedy(neox, prompt, GREEDY.max_tokens)
    assert len({tuple(s.tokens) for s in sampled}) > 1  # n samples from one prefill, each its own
    for seq in sampled:
        reference = full_forward_logprobs(neox, prompts[-1], seq.tokens)
        expected = reference.gather(1, torch.tensor(seq.tokens).unsqueeze(1)).squeeze(1)
        assert torch.allclose(torch.tensor(seq.logprobs), expected, atol=1e-4)


@pytest.mark.parametrize("full_finetune", [False, True], ids=["lora", "full"])
def test_a_trained_step_reaches_the_fallback_as_merged_weights(neox, tokenizer, full_finetune):
    prompt = tokenizer.encode("The capital of France is")
    trainer = Trainer(neox, lora_rank=4, full_finetune=full_finetune)
    tokens = prompt + [11, 12, 13, 14]
    trainer.forward_backward([Datum(input_tokens=tokens[:-1], target_tokens=tokens[1:], weights=[0.0] * (len(prompt) - 1) + [1.0] * 4)], "cross_entropy")
    trainer.optim_step(AdamParams(learning_rate=5e-2))
    with Engine(neox, eos_token_ids=[], max_seq_len=512) as engine:
        before = engine.sample_sync(prompt, 1, GREEDY)[0].tokens
        engine.load_weights(trainer.sampler_state_dict())
        after = engine.sample_sync(prompt, 1, GREEDY)[0].tokens
        if not full_finetune:  # an unmerged adapter needs the native engine: one sentence
            with pytest.raises(HoneError, match="need the native engine"):
                engine.set_adapter("a", get_peft_model_state_dict(trainer.model), trainer.lora_alpha / trainer.lora_rank)
    assert after != before and after == naive_greedy(trainer.model.eval(), prompt, GREEDY.max_tokens)
