"""hone's low-level API with a loss of your own: sample, score, forward_backward, optim_step.

The task is deliberately tiny: answer "Name a fruit." with a real fruit, in at most five words. Each step samples a
group of completions from the engine, scores them in plain Python, turns them into Datums (token
ids, which tokens to train, the sampler's logprobs, the advantage) and trains with a custom
REINFORCE loss passed as a callable. Custom callables run in-process (LocalBackend); over
`hone serve`, use a built-in loss by name.

    .venv/bin/python examples/custom_loss.py

Measured on the embedded model (2-core CPU, about 2 minutes): with brevity alone as the reward,
the mean reward rose 0.25 -> 1.0 in 6 steps and the answers became 'Gronk.' and 'Aruba.'; with
the reward below, 8 steps stay in the noise (0.06-0.31). A real run needs more steps than this
sketch takes; what it shows is the four calls.
"""

from __future__ import annotations

import argparse
import asyncio

import torch

from hone.backends import LocalBackend
from hone.types import AdamParams, Datum, SamplingParams

PROMPT = [{"role": "user", "content": "Name a fruit."}]


def reinforce(logprobs: list[torch.Tensor], datums: list[Datum], config) -> tuple[torch.Tensor, dict[str, float]]:
    """-A·log p on sampled tokens, averaged per sequence: plain REINFORCE, no ratio, no clipping.

    `logprobs[i]` holds the trainer's fp32 log-probability of each of datum i's target tokens.
    """
    losses = []
    for lp, datum in zip(logprobs, datums):
        weights = torch.tensor(datum.weights, dtype=lp.dtype)
        advantages = torch.tensor(datum.advantages, dtype=lp.dtype)
        losses.append(-(weights * advantages * lp).sum() / weights.sum().clamp(min=1))
    loss = torch.stack(losses).mean()
    return loss, {"loss": float(loss.detach())}


FRUITS = set("apple banana orange mango grape grapes pear peach cherry strawberry lemon lime kiwi plum pineapple watermelon".split())


def reward(text: str) -> float:
    """Half for brevity, half for naming a real fruit. Brevity alone was gamed within 6 steps:
    the model learned to answer 'Gronk.' and 'Aruba.'."""
    words = [w.strip(".,!?*").lower() for w in text.split()]
    return 0.5 * (0 < len(words) <= 5) + 0.5 * any(w in FRUITS for w in words)


async def main(args: argparse.Namespace) -> None:
    backend = LocalBackend()
    backend.add_model("fruit", args.model, lora_rank=16)
    tokenizer = backend.tokenizer("fruit")
    prompt = tokenizer.apply_chat_template(PROMPT, add_generation_prompt=True, tokenize=True, return_dict=False)
    params = SamplingParams(max_tokens=32, temperature=1.0)

    for step in range(args.steps):
        samples = await backend.sample("fruit", prompt, args.group_size, SamplingParams(**{**params.__dict__, "seed": step}))
        texts = [tokenizer.decode(s.tokens, skip_special_tokens=True) for s in samples]
        rewards = [reward(t) for t in texts]
        mean = sum(rewards) / len(rewards)
        datums = [
            Datum.from_sequence(
                prompt + s.tokens,
                weights=[0.0] * len(prompt) + [1.0] * len(s.tokens),  # train the completion, not the prompt
                sampler_logprobs=[0.0] * len(prompt) + s.logprobs,
                advantages=[r - mean] * (len(prompt) + len(s.tokens)),
            )
            for s, r in zip(samples, rewards)
        ]
        metrics = await backend.forward_backward("fruit", datums, loss=reinforce)
        await backend.optim_step("fruit", AdamParams(learning_rate=args.lr))
        print(f"step {step + 1}: reward {mean:.2f}, loss {metrics['loss']:+.4f}, e.g. {texts[0][:60]!r}")

    path = await backend.save_state("fruit", args.out)
    print(f"saved the adapter and optimizer state to {path}")
    backend.close()


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="hone's low-level API with a custom loss.")
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--group-size", type=int, default=8)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--out", default="runs/custom-loss")
    return parser.parse_args()


if __name__ == "__main__":
    asyncio.run(main(parse_args()))
