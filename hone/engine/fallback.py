"""The engine's slow path: any causal LM transformers can run, through its own forward and cache.

The native runner (hone.engine.llama) reproduces a handful of families exactly and fast. Anything
else transformers loads (GPT-NeoX, OLMo, Falcon, ...) samples here instead of being refused:
correct, but one sequence at a time, with transformers' per-call overhead, in fp32 (the logits
must be fp32, and transformers computes them in the model's dtype). Each slot keeps its own
transformers cache. Unmerged LoRA adapters need the native runner; a model served here takes its
trained weights merged (`load_state_dict`), which is what an in-process LocalBackend does.
"""

from __future__ import annotations

import copy
import inspect

import torch
from transformers import DynamicCache, PreTrainedModel

from hone.errors import HoneError, InvalidRequestError


class TransformersRunner:
    """The runner interface of hone.engine.llama.LlamaRunner over a transformers model."""

    attention_impl = "transformers"

    def __init__(self, model: PreTrainedModel, *, max_seq_len: int, **_unused):
        self.model = copy.deepcopy(model).to(torch.float32).eval()  # the engine's own copy
        self.device = next(self.model.parameters()).device
        self.max_seq_len = max_seq_len
        self.prefill_tokens = 0
        self._caches: dict[int, DynamicCache] = {}
        self._parameters = dict(self.model.state_dict())
        # transformers renamed `past_key_values` to `cache`; pass whichever this model's forward takes
        accepted = inspect.signature(self.model.forward).parameters
        self._cache_arg = "cache" if "cache" in accepted else "past_key_values"
        self._keep_last = {"logits_to_keep": 1} if "logits_to_keep" in accepted else {}  # skip the other positions' logits

    # ------------------------------------------------------------------------ cache
    def reserve(self, slots: int, positions: int) -> None:
        """Nothing to reserve: each slot's transformers cache grows as it decodes."""

    def copy_slots(self, src: list[int], dst: list[int], length: int) -> None:
        caches = [self._caches[s] for s in src]  # read all first: a destination may also be a source
        for slot, cache in zip(dst, caches):
            self._caches[slot] = copy.deepcopy(cache)

    def release(self) -> None:
        self._caches.clear()

    # ------------------------------------------------------------------------ forward passes
    @torch.no_grad()
    def prefill(self, prompts: list[list[int]], slots: list[int], lora=None) -> torch.Tensor:
        """`lora` is always None here: make_adapter refuses to make one."""
        logits = []
        for prompt, slot in zip(prompts, slots):
            cache = DynamicCache(config=self.model.config)
            ids = torch.tensor([prompt], device=self.device)
            logits.append(self._forward(ids, cache, torch.arange(len(prompt), device=self.device).unsqueeze(0)))
            self._caches[slot] = cache
            self.prefill_tokens += len(prompt)
        return torch.stack(logits)

    @torch.no_grad()
    def decode(self, tokens: torch.Tensor, positions: torch.Tensor, lora=None) -> torch.Tensor:
        logits = []
        for slot, (token, position) in enumerate(zip(tokens.tolist(), positions.tolist())):
            ids = torch.tensor([[token]], device=self.device)
            logits.append(self._forward(ids, self._caches[slot], torch.tensor([[position]], device=self.device)))
        return torch.stack(logits)

    def _forward(self, ids: torch.Tensor, cache: DynamicCache, positions: torch.Tensor) -> torch.Tensor:
        out = self.model(input_ids=ids, position_ids=positions, use_cache=True, **self._keep_last, **{self._cache_arg: cache})
        return out.logits[0, -1].float()

    # ------------------------------------------------------------------------ weights
    def make_adapter(self, state_dict, scale: float):
        raise HoneError(
            f"unmerged LoRA adapters need the native engine, and '{self.model.config.model_type}' runs through "
            "transformers; serve this model's LoRA runs with merged weights (LocalBackend without share_base)"
        )

    def check_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        for name, tensor in state_dict.items():
            target = self._parameters.get(name)
            if target is None:
                raise InvalidRequestError(f"load_weights got '{name}', which is not a parameter of this model", param="state_dict")
            if tuple(tensor.shape) != tuple(target.shape):
                raise InvalidRequestError(f"load_weights got '{name}' with shape {tuple(tensor.shape)}, expected {tuple(target.shape)}", param="state_dict")

    @torch.no_grad()
    def load_state_dict(self, state_dict: dict[str, torch.Tensor], repack: bool = True) -> None:
        self.check_state_dict(state_dict)
        for name, tensor in state_dict.items():
            self._parameters[name].copy_(tensor.detach())

    def repack(self) -> None:
        """Nothing is packed here."""

