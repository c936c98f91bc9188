"""Samplers: token ids in, sampled token ids with fp32 logprobs out.

The engine knows nothing about chat formats, tokenizers (beyond an optional `decode` callable used
only to spot stop strings), rewards or training: it is purely token id sequences. It keeps its own
copy of the model's weights, which a trainer replaces with `load_weights` after each step.

- `Engine` (engine.py): the torch sampler. Requests from many coroutines are batched in one worker
  thread (dynamic and continuous batching), the n samples of a prompt share one prefill, and the
  logprob of each sampled token is log_softmax of fp32 logits from an fp32 LM head.
- llama.py: the forward pass of Llama-family models (Llama/SmolLM, Mistral, Qwen2, Qwen3, Phi-3,
  Gemma 3) over a slot KV cache (a ring of W positions for sliding-window layers), with fused and
  prepacked weights.
- fallback.py: any other causal LM transformers runs, through its own forward and cache: correct,
  one sequence at a time, several times slower.
- sampling.py: temperature, top-k, top-p, seeds, stop strings, for a batch of rows at once.
- kernels.py: an optional C++ decode-attention kernel (built on first use), with the same
  computation in torch ops as the fallback and the tests' reference.
- prefix_cache.py: finished sequences' keys and values, reused by prompts that continue them.
- speculation.py: drafts copied from a sequence's own n-grams, verified in the decode step.
"""

from hone.engine.engine import Engine, serving_dtype, serving_options
from hone.engine.speculation import SpeculationConfig
from hone.hardware import preferred_dtype

__all__ = ["Engine", "SpeculationConfig", "preferred_dtype", "serving_dtype", "serving_options"]
