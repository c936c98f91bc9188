"""The trainer checkpoint on disk: the one module that knows its file names and reads or writes them.

    CKPT/                              made whole in a staging folder, then renamed (hone.files)
        adapter/                       LoRA: the adapter alone, loadable by PeftModel.from_pretrained
            adapter_model.safetensors    PEFT names (base_model.model.….lora_A.weight, lora_B), fp32
            adapter_config.json          the LoraConfig, its base_model_name_or_path the base's hub id
            tokenizer files              when the trainer was given its tokenizer (AutoTokenizer loads them)
        model.safetensors              full fine-tuning: every parameter under the HF model's names
        config.json                    full fine-tuning: the model's config (with model.safetensors, an HF folder)
        tokenizer files                full fine-tuning, when given: with the two above, a self-contained HF folder
        optimizer.pt                   AdamW's state_dict (torch.save; loads with weights_only=True)
        rng.pt                         Python, NumPy, torch (and CUDA) RNG states
        trainer_state.json             {"format", "full_finetune", "lora_rank", "lora_alpha", "step", and
                                       "base_model" when known}, written last: a folder without it is not
                                       a checkpoint (`is_complete`)

Functions take plain values (paths, numbers, dicts of tensors) and know nothing of the Trainer,
PEFT models or backends: `save`/`load` write and read the files (`Trainer.save_state/load_state`
build and apply them), `read_adapter` + `merged_adapter_weights` serve a LoRA checkpoint without
building a trainer. A checkpoint that is missing, unreadable or written by a differently configured
model raises CheckpointError, before anything is changed.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import Tensor

from hone.errors import CheckpointError
from hone.files import write_dir_atomically

FORMAT = 1
STATE_FILE = "trainer_state.json"  # written last: its presence marks a complete checkpoint
ADAPTER_DIR = "adapter"
ADAPTER_FILE = "adapter_model.safetensors"
ADAPTER_CONFIG_FILE = "adapter_config.json"
MODEL_FILE = "model.safetensors"
MODEL_CONFIG_FILE = "config.json"
OPTIMIZER_FILE = "optimizer.pt"
RNG_FILE = "rng.pt"


@dataclass
class TrainerState:
    """What `load` read from a checkpoint, checked against the trainer's identity, not yet applied."""

    step: int
    weights: dict[str, Tensor]  # the adapter's (PEFT names) or every parameter's (HF names)
    optimizer_state: dict[str, Any] | None  # None when loaded without the optimizer
    rng_states: dict[str, Any]


def identity(full_finetune: bool, lora_rank: int | None, lora_alpha: int | None) -> dict[str, Any]:
    """What a checkpoint must agree on to be loaded: format and adapter shape (lora_alpha None = 2 · rank)."""
    if full_finetune:
        return {"format": FORMAT, "full_finetune": True, "lora_rank": None, "lora_alpha": None}
    return {
        "format": FORMAT,
        "full_finetune": False,
        "lora_rank": lora_rank,
        "lora_alpha": 2 * lora_rank if lora_alpha is None else lora_alpha,
    }


def is_complete(path: str | Path) -> bool:
    """A folder holding a whole checkpoint (its state file, written last, is there)."""
    return (Path(path) / STATE_FILE).is_file()


def has_adapter(path: str | Path) -> bool:
    """A LoRA checkpoint: its adapter file is there."""
    return (Path(path) / ADAPTER_DIR / ADAPTER_FILE).is_file()


# --------------------------------------------------------------------------- save and load
def save(
    path: str | Path,
    *,
    full_finetune: bool,
    lora_rank: int | None,
    lora_alpha: int | None,
    step: int,
    weights: dict[str, Tensor],
    model_config: dict[str, Any],
    optimizer_state: dict[str, Any],
    rng_states: dict[str, Any],
    tokenizer: Any = None,
    base_model: str | None = None,
) -> Path:
    """Write a whole checkpoint to `path` (an existing one is replaced): every file in a staging
    folder, fsynced, renamed into place. `weights` are the adapter's under PEFT's names with
    `model_config` the LoraConfig as a dict, or (full) every parameter with the HF config as a dict.
    `tokenizer` (saved beside the weights) and `base_model` (the name it loads by) make the folder
    self-contained: exported, served or inspected without the run that wrote it."""
    path = Path(path)
    with write_dir_atomically(path) as staging:
        folder = staging if full_finetune else staging / ADAPTER_DIR
        folder.mkdir(exist_ok=True)
        weights_file, config_file = (MODEL_FILE, MODEL_CONFIG_FILE) if full_finetune else (ADAPTER_FILE, ADAPTER_CONFIG_FILE)
        tensors = {name: t.detach().contiguous() for name, t in weights.items()}
        save_file(tensors, str(folder / weights_file), metadata={"format": "pt"})
        (folder / config_file).write_text(json.dumps(model_config, indent=2, sort_keys=True) + "\n")
        if tokenizer is not None:
            tokenizer.save_pretrained(folder)
        torch.save(optimizer_state, staging / OPTIMIZER_FILE)
        torch.save(rng_states, staging / RNG_FILE)
        state = identity(full_finetune, lora_rank, lora_alpha) | {"step": step}
        if base_model is not None:
            state["base_model"] = base_model
        (staging / STATE_FILE).write_text(json.dumps(state, indent=2))  # last
    return path


def load(
    path: str | Path,
    *,
    full_finetune: bool,
    lora_rank: int | None,
    lora_alpha: int | None,
    with_optimizer: bool = True,
    device: str | torch.device = "cpu",
) -> TrainerState:
    """Read every file of the checkpoint at `path` and check it was written by a trainer of this
    configuration; CheckpointError (one sentence, the cause chained) if missing, corrupt or not."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"no checkpoint at {path}")
    if not is_complete(path):
        raise CheckpointError(f"{path} is not a complete hone checkpoint (it has no {STATE_FILE})")
    weights_file = path / MODEL_FILE if full_finetune else path / ADAPTER_DIR / ADAPTER_FILE
    if not weights_file.exists():
        raise CheckpointError(f"the checkpoint at {path} has no {weights_file.relative_to(path)}")
    try:
        state = json.loads((path / STATE_FILE).read_text())
        weights = load_file(str(weights_file), device=str(device))
        optimizer_state = torch.load(path / OPTIMIZER_FILE, weights_only=True) if with_optimizer else None
        rng_states = torch.load(path / RNG_FILE, weights_only=True)
        step = int(state["step"])
    except Exception as exc:  # any unreadable or malformed file: one sentence, the cause chained
        raise CheckpointError(f"the checkpoint at {path} is unreadable or corrupt ({type(exc).__name__}: {exc})") from exc
    _check_identity(state, identity(full_finetune, lora_rank, lora_alpha), f"at {path}")
    return TrainerState(step=step, weights=weights, optimizer_state=optimizer_state, rng_states=rng_states)


# --------------------------------------------------------------------------- taking a checkpoint away
def write_weights_archive(path: str | Path, archive: str | Path) -> Path:
    """A zip of the checkpoint at `path` without its optimizer and RNG states: the weights, their
    config, the tokenizer and trainer_state.json; what `hone export` needs, and nothing private to
    the run. Stored, not deflated: safetensors barely compress, and a zip of them is written fast."""
    import zipfile

    path, archive = Path(path), Path(archive)
    if not is_complete(path):
        raise CheckpointError(f"the checkpoint {path.name} is not complete")
    with zipfile.ZipFile(archive, "w", compression=zipfile.ZIP_STORED) as zipped:
        for file in sorted(path.rglob("*")):
            if file.is_file() and file.name not in (OPTIMIZER_FILE, RNG_FILE):
                zipped.write(file, file.relative_to(path).as_posix())
    return archive


# --------------------------------------------------------------------------- serving a LoRA checkpoint
def read_adapter(path: str | Path, lora_rank: int, lora_alpha: int | None) -> tuple[dict[str, Tensor], float]:
    """The PEFT adapter state of a LoRA checkpoint and its scale (alpha / r), on the CPU.

    CheckpointError if unreadable, or saved by a model whose rank or alpha differ from
    `lora_rank`/`lora_alpha` (None = 2 · rank). Messages name the checkpoint by its folder name
    only: they reach a service's tenants, who need not see the server's paths.
    """
    path = Path(path)
    try:
        state = json.loads((path / STATE_FILE).read_text())
        adapter = load_file(str(path / ADAPTER_DIR / ADAPTER_FILE))
    except Exception as exc:  # unreadable files: one sentence, the cause chained
        raise CheckpointError(f"the checkpoint at {path.name} is unreadable or corrupt ({type(exc).__name__})") from exc
    expected = identity(False, lora_rank, lora_alpha)
    _check_identity(state, expected, path.name)
    return adapter, expected["lora_alpha"] / lora_rank


@torch.no_grad()
def merged_adapter_weights(base_state_dict: dict[str, Tensor], adapter: dict[str, Tensor], scale: float) -> dict[str, Tensor]:
    """W + scale · B @ A (fp32) for each layer the adapter adapts, under the plain HF names.

    Only the adapted weights come back; every other weight is the base's. The same fused addmm as
    `Trainer.sampler_state_dict` (~0.1 s on the 135M model, where a throwaway trainer takes ~8 s).
    """
    merged: dict[str, Tensor] = {}
    prefix, a_suffix = "base_model.model.", ".lora_A.weight"
    for key, A in adapter.items():
        if not key.endswith(a_suffix):
            continue
        module = key[len(prefix) : -len(a_suffix)]
        B = adapter[prefix + module + ".lora_B.weight"]
        W = base_state_dict[module + ".weight"]
        merged[module + ".weight"] = torch.addmm(W.float(), B.float(), A.float(), alpha=scale)  # (out, r) @ (r, in)
    return merged


# --------------------------------------------------------------------------- helpers
def _check_identity(state: dict[str, Any], expected: dict[str, Any], where: str) -> None:
    mismatch = {k: (state.get(k), v) for k, v in expected.items() if state.get(k) != v}
    if mismatch:
        raise CheckpointError(
            f"the checkpoint {where} was saved by a differently configured model (saved vs expected: {mismatch})"
        )
