"""Benchmark: how far each engine precision moves the logprobs from the fp32 engine's.

The fp32 engine (fp32 layers, fp32 LM head) writes greedy replies to a few chat prompts; every
other precision is then fed the same tokens (teacher forcing) and reports the logprob of each.
The figure is |logprob - fp32 logprob| per token, mean and max, for:
- bf16 layers, fp32 head (the default engine on CPUs with native bf16);
- bf16 layers, bf16 head (what `hone serve` computes with on an AVX2 CPU, engine.serving_options:
  there the bf16 head runs on hone's kernel with fp32 activations and sums, so logits stay fp32);
- fp32 layers, bf16 head (the head's rounding alone).
Where oneDNN multiplies bf16 natively, a bf16 head rounds the logits themselves to bf16, which
the figure then includes.

Run: .venv/bin/python bench/logprob_drift.py [--tokens 64]
Writes bench/results/logprob_drift.json.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch

from common import machine
from hone.engine.llama import LlamaRunner
from hone.models import load_model

RESULTS = Path(__file__).parent / "results" / "logprob_drift.json"
PROMPTS = [
    "What is the capital of France? Answer in one sentence.",
    "Write a short poem about the sea.",
    "List three prime numbers and explain why they are prime.",
    "Search my inbox for the invoice from March and tell me its total.",
]
VARIANTS = {  # name -> (layers' dtype, LM head's dtype)
    "bf16 layers, fp32 head": (torch.bfloat16, torch.float32),
    "bf16 layers, bf16 head": (torch.bfloat16, torch.bfloat16),
    "fp32 layers, bf16 head": (torch.float32, torch.bfloat16),
}


@torch.no_grad()
def logprobs(model, prompts: list[list[int]], dtype, head_dtype, tokens: int, forced: list[list[int]] | None = None):
    """Per prompt: the tokens fed after it (greedy unless `forced`) and the logprob of each."""
    runner = LlamaRunner(model, dtype=dtype, head_dtype=head_dtype, max_slots=1, max_seq_len=1024)
    out = []
    for k, prompt in enumerate(prompts):
        runner.reserve(1, len(prompt) + tokens + 1)
        logits, fed, lps = runner.prefill([prompt], [0]), [], []
        for t in range(tokens):
            lp = logits.log_softmax(-1)[0]
            token = int(lp.argmax()) if forced is None else forced[k][t]
            fed.append(token)
            lps.append(lp[token].item())
            logits = runner.decode(torch.tensor([token]), torch.tensor([len(prompt) + t]))
        out.append((fed, lps))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tokens", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(2)
    loaded = load_model("smollm2-135m")
    tokenizer = loaded.tokenizer
    prompts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False) for p in PROMPTS]
    prompts = [tokenizer(p, add_special_tokens=False)["input_ids"] for p in prompts]
    reference = logprobs(loaded.model, prompts, torch.float32, torch.float32, args.tokens)
    forced = [fed for fed, _ in reference]
    result = {"machine": machine(), "tokens_per_prompt": args.tokens, "prompts": PROMPTS, "drift_nats": {}}
    for name, (dtype, head_dtype) in VARIANTS.items():
        got = logprobs(loaded.model, prompts, dtype, head_dtype, args.tokens, forced)
        diffs = torch.tensor([a - b for (_, ref), (_, lps) in zip(reference, got) for a, b in zip(ref, lps)]).abs()
        result["drift_nats"][name] = {"mean": round(diffs.mean().item(), 4), "max": round(diffs.max().item(), 4)}
        print(f"{name}: |logprob - fp32 logprob| mean {diffs.mean():.4f}, max {diffs.max():.4f} nats", flush=True)
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2) + "\n")
    print(f"wrote {RESULTS}")


if __name__ == "__main__":
    main()
