"""Write a model as one GGUF file (f16 or q8_0) that llama.cpp, Ollama and hone load.

The `gguf` package (the llama.cpp project's own reader and writer) does the file format and the
q8_0 packing; this module decides what goes in: the architecture's hyperparameters, the weights
under llama.cpp's tensor names, and the tokenizer as llama.cpp reads it (vocabulary, token kinds,
BPE merges, special ids, chat template). The weights are merged ones: current Ollama no longer
builds a model from a LoRA-adapter GGUF.

Architectures: llama (SmolLM2 and hone's tiny test model), mistral (written as llama, which is
how llama.cpp runs it), qwen2 and qwen3. llama.cpp rotates llama's query and key heads in
interleaved pairs where Hugging Face rotates halves, so those two weights are permuted on the way
out (transformers' GGUF reader permutes them back); qwen models use the halves layout in both.
Tokenizers: byte-level BPE (GPT-2's kind: SmolLM2, Qwen, Llama 3); SentencePiece-style ones
(Llama 2, Mistral v0.1-0.3, Gemma) are refused in one sentence rather than written wrongly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hone.errors import HoneError

QUANTS = ("f16", "q8_0")
_ARCHES = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}  # HF model_type -> GGUF arch
# llama.cpp picks its pre-tokenizer (how text is split before BPE) by name; these are the ones of
# the tokenizers hone's models use. Others get "default" (GPT-2's splitting), which is said.
_PRE_TOKENIZERS = {"smollm": "smollm", "qwen2": "qwen2", "qwen3": "qwen2", "llama": "llama-bpe"}
_BLOCK = 32  # q8_0 packs rows in blocks of 32 values; a row of another width stays f16


def write_gguf(model: Any, tokenizer: Any, path: str | Path, quant: str = "q8_0", name: str | None = None, pre_tokenizer: str | None = None) -> Path:
    """Write `model` (a transformers causal LM, weights as they should be served) to `path`."""
    import gguf

    if quant not in QUANTS:
        raise HoneError(f"unknown GGUF type '{quant}'; use one of: {', '.join(QUANTS)}")
    config = model.config
    arch = _ARCHES.get(config.model_type)
    if arch is None:
        raise HoneError(f"GGUF export writes {', '.join(sorted(_ARCHES))} models; this one is '{config.model_type}' (export --format hf and convert it with llama.cpp)")
    _check_rope(config)
    path = Path(path)
    writer = gguf.GGUFWriter(str(path), arch)
    writer.add_name(name or "hone export")  # not the family: readers take "mistral" in a name for an architecture
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_Q8_0 if quant == "q8_0" else gguf.LlamaFileType.MOSTLY_F16)
    writer.add_quantization_version(gguf.GGML_QUANT_VERSION)
    _add_hyperparameters(writer, config)
    _add_tokenizer(writer, tokenizer, config.vocab_size, pre_tokenizer or _pre_tokenizer(config))
    for tensor_name, tensor in _tensors(model, arch):
        _add_tensor(writer, tensor_name, tensor, quant)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


# --------------------------------------------------------------------------- metadata
def _head_dim(config: Any) -> int:
    return getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads


def _rope_theta(config: Any) -> float:
    parameters = getattr(config, "rope_parameters", None) or {}
    return float(parameters.get("rope_theta", getattr(config, "rope_theta", 10000.0)))


def _check_rope(config: Any) -> None:
    parameters = getattr(config, "rope_parameters", None) or getattr(config, "rope_scaling", None) or {}
    kind = parameters.get("rope_type", parameters.get("type", "default"))
    if kind != "default":
        raise HoneError(f"GGUF export does not write '{kind}' rope scaling yet; export --format hf and convert it with llama.cpp")


def _add_hyperparameters(writer: Any, config: Any) -> None:
    writer.add_context_length(config.max_position_embeddings)
    writer.add_embedding_length(config.hidden_size)
    writer.add_feed_forward_length(config.intermediate_size)
    writer.add_block_count(config.num_hidden_layers)
    writer.add_head_count(config.num_attention_heads)
    writer.add_head_count_kv(config.num_key_value_heads)
    head_dim = _head_dim(config)
    writer.add_rope_dimension_count(head_dim)
    writer.add_key_length(head_dim)  # always: readers that miss it fall back to their family's default (Qwen3: 128)
    writer.add_value_length(head_dim)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(config.vocab_size)


def _pre_tokenizer(config: Any) -> str:
    name = str(getattr(config, "_name_or_path", "")).lower()
    if "smollm" in name or config.model_type == "llama" and config.vocab_size == 49152:  # SmolLM2's vocabulary
        return "smollm"
    return _PRE_TOKENIZERS.get(config.model_type, "default")


def _add_tokenizer(writer: Any, tokenizer: Any, vocab_size: int, pre: str) -> None:
    """Vocabulary, token kinds and merges as llama.cpp's 'gpt2' (byte-level BPE) tokenizer reads them."""
    import gguf

    spec = json.loads(tokenizer.backend_tokenizer.to_str()) if getattr(tokenizer, "is_fast", False) else None
    if spec is None or not _byte_level_bpe(spec):
        # SentencePiece-style vocabularies (Llama 2, Mistral v0.1-0.3, Gemma) are BPE in transformers
        # too, but llama.cpp must read them as 'llama', not 'gpt2': written as gpt2 they tokenise wrongly
        raise HoneError("GGUF export writes byte-level BPE tokenizers only; export --format hf and convert it with llama.cpp")
    by_id = {index: token for token, index in tokenizer.get_vocab().items()}
    added = {token.content: token.special for token in tokenizer.added_tokens_decoder.values()}
    tokens, kinds = [], []
    for index in range(vocab_size):  # the embedding may have more rows than the tokenizer has tokens
        token = by_id.get(index)
        if token is None:
            tokens.append(f"[PAD{index}]")
            kinds.append(gguf.TokenType.UNUSED)
        else:
            tokens.append(token)
            kinds.append(gguf.TokenType.CONTROL if added.get(token) else gguf.TokenType.USER_DEFINED if token in added else gguf.TokenType.NORMAL)
    merges = [merge if isinstance(merge, str) else " ".join(merge) for merge in spec["model"].get("merges", [])]
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list(tokens)
    writer.add_token_types(kinds)
    writer.add_token_merges(merges)
    for setter, token_id in (
        (writer.add_bos_token_id, tokenizer.bos_token_id),
        (writer.add_eos_token_id, tokenizer.eos_token_id),
        (writer.add_unk_token_id, tokenizer.unk_token_id),
        (writer.add_pad_token_id, tokenizer.pad_token_id),
    ):
        if token_id is not None:
            setter(token_id)
    writer.add_add_bos_token(bool(getattr(tokenizer, "add_bos_token", False)))
    writer.add_add_space_prefix(False)
    if tokenizer.chat_template:
        writer.add_chat_template(tokenizer.chat_template)


def _byte_level_bpe(spec: dict[str, Any]) -> bool:
    """A BPE over bytes (GPT-2's kind): a ByteLevel pre-tokenizer and no byte fallback."""
    model, pre = spec.get("model") or {}, spec.get("pre_tokenizer") or {}
    parts = pre.get("pretokenizers", [pre]) if pre.get("type") == "Sequence" else [pre]
    return model.get("type") == "BPE" and not model.get("byte_fallback") and any(p.get("type") == "ByteLevel" for p in parts)


# --------------------------------------------------------------------------- weights
def _tensors(model: Any, arch: str):
    """(llama.cpp name, fp32 tensor) for every weight, in llama.cpp's order."""
    config = model.config
    state = {name: t.detach().float() for name, t in model.state_dict().items()}
    heads, kv_heads = config.num_attention_heads, config.num_key_value_heads
    yield "token_embd.weight", state["model.embed_tokens.weight"]
    for i in range(config.num_hidden_layers):
        p = f"model.layers.{i}."
        q, k = state[p + "self_attn.q_proj.weight"], state[p + "self_attn.k_proj.weight"]
        if arch == "llama":  # halves -> interleaved pairs, llama.cpp's rotation layout
            q, k = _interleave_heads(q, heads), _interleave_heads(k, kv_heads)
        yield f"blk.{i}.attn_norm.weight", state[p + "input_layernorm.weight"]
        yield f"blk.{i}.attn_q.weight", q
        yield f"blk.{i}.attn_k.weight", k
        yield f"blk.{i}.attn_v.weight", state[p + "self_attn.v_proj.weight"]
        for part in ("q", "k", "v"):
            bias = state.get(p + f"self_attn.{part}_proj.bias")
            if bias is not None:
                yield f"blk.{i}.attn_{part}.bias", bias
        if arch == "qwen3":
            yield f"blk.{i}.attn_q_norm.weight", state[p + "self_attn.q_norm.weight"]
            yield f"blk.{i}.attn_k_norm.weight", state[p + "self_attn.k_norm.weight"]
        yield f"blk.{i}.attn_output.weight", state[p + "self_attn.o_proj.weight"]
        yield f"blk.{i}.ffn_norm.weight", state[p + "post_attention_layernorm.weight"]
        yield f"blk.{i}.ffn_gate.weight", state[p + "mlp.gate_proj.weight"]
        yield f"blk.{i}.ffn_up.weight", state[p + "mlp.up_proj.weight"]
        yield f"blk.{i}.ffn_down.weight", state[p + "mlp.down_proj.weight"]
    yield "output_norm.weight", state["model.norm.weight"]
    if not getattr(config, "tie_word_embeddings", False):
        yield "output.weight", state["lm_head.weight"]


def _interleave_heads(weight: torch.Tensor, n_heads: int) -> torch.Tensor:
    """Reorder each head's output rows from [first half | second half] to pairs (0, E/2), (1, E/2+1), …"""
    rows, cols = weight.shape
    return weight.reshape(n_heads, 2, rows // n_heads // 2, cols).swapaxes(1, 2).reshape(rows, cols)


def _add_tensor(writer: Any, name: str, tensor: torch.Tensor, quant: str) -> None:
    import gguf

    data = tensor.numpy().astype(np.float32)
    if data.ndim == 1:  # norms and biases stay fp32, as llama.cpp's converter keeps them
        writer.add_tensor(name, data)
    elif quant == "q8_0" and data.shape[-1] % _BLOCK == 0:
        packed = gguf.quants.quantize(data, gguf.GGMLQuantizationType.Q8_0)
        writer.add_tensor(name, packed, raw_dtype=gguf.GGMLQuantizationType.Q8_0)
    else:
        writer.add_tensor(name, data.astype(np.float16))
