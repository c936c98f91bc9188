"""Trainer: Tinker's low-level training calls over one Hugging Face causal LM, LoRA or full.

    trainer = Trainer(load_model("tiny").model, lora_rank=16)
    metrics = trainer.forward_backward(datums, loss="cispo")   # accumulates gradients
    trainer.optim_step(AdamParams(learning_rate=1e-4))         # AdamW, grad clip, zero grads
    trainer.save_state("ckpt/step-1"); trainer.load_state("ckpt/step-1")
    engine_weights = trainer.sampler_state_dict()               # plain HF names, LoRA merged

Knows datums, losses and weights; knows nothing of chat formats, rollouts or the sampler (which
gets weights only through `sampler_state_dict`), nor of the checkpoint's files (save_state and
load_state hand plain values to hone.training.checkpoint). The Trainer trains its own deep copy of
the model it is given; the caller's model is never modified.

How `forward_backward` runs a batch:
1. Validate every datum (lengths agree, length ≤ max_seq_len, token ids in the vocabulary, the
   fields the loss needs) before any compute.
2. Plan (hone.training.plan): datums sharing a long prefix of input tokens (a GRPO group's prompt)
   become one unit whose prefix runs once, its KV cache repeated for the group, and the suffixes
   run on top; gradients flow back through the cache into the prefix. Units are packed into
   micro-batches of at most `micro_batch_tokens` (padded) tokens.
3. Per micro-batch: trunk forward (bf16 autocast if asked), then fp32 logprobs at the LM head for
   the positions with non-zero weight only (other positions get 0.0: no head compute there), loss,
   backward. A built-in loss is a sum over sequences over a batch-wide denominator, so each
   micro-batch's loss is scaled by its share of the whole batch's denominator: the gradients are
   those of one big batch. A custom loss over several micro-batches is done exactly in two passes:
   logprobs without gradient for the whole batch, the loss and its gradient w.r.t. those logprobs,
   then each micro-batch again with that gradient (one extra forward).
"""

from __future__ import annotations

import copy
import inspect
import json
import math
import random
import warnings
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import torch
from torch import Tensor, nn
from transformers import PreTrainedModel

import hone.training.checkpoint as checkpoint
from hone.errors import CheckpointError, InvalidRequestError, SequenceTooLongError
from hone.hardware import bf16_is_native
from hone.models.names import hub_id
from hone.training.head import head_logprobs
from hone.training.losses import (
    LOSS_REQUIRES,
    LossConfig,
    LossFn,
    aggregation_denominator,
    builtin_name,
    check_loss_inputs,
    get_loss,
)
from hone.memory import release_freed_memory
from hone.training.plan import Unit, plan_micro_batches
from hone.types import AdamParams, Datum


def default_micro_batch_tokens(device: torch.device) -> int:
    """Tokens per micro-batch when the caller does not say.

    On a CPU, 1024: measured on the 135M model in fp32 (AMD EPYC, 2 cores; 32 sequences of ~300
    tokens, bench/train_memory.py), a forward_backward took 20.3 s and peaked at 3.5 GB resident;
    with 2048, 22.3 s and 5.3 GB; 512 was ~15% slower. A GPU keeps 2048, where
    larger matmuls pay more and activations live in its own memory."""
    return 1024 if device.type == "cpu" else 2048


class Trainer:
    """One trainable copy of a causal LM: LoRA on every linear layer (PEFT), or all weights.

    `lora_rank`/`lora_alpha`/`lora_dropout` are ignored when `full_finetune`. `max_seq_len` bounds
    a datum's length (longer ones are refused before compute); `micro_batch_tokens` bounds the padded
    tokens run through the trunk at once (gradients are accumulated across micro-batches; a single
    datum longer than it still runs alone). `autocast_bf16` runs the trunk's matmuls in bf16 ("auto":
    where the device multiplies in bf16 natively); the head's logits and logprobs stay fp32. `seed`
    fixes the LoRA init. `min_shared_prefix` is the fewest shared input tokens for which datums
    share one prefix pass (0 turns sharing off).
    `share_frozen_base` (LoRA): the model's modules are copied but not its parameters, which PEFT
    freezes (requires_grad off, in the caller's model too) and which are only read: several LoRA
    trainers then hold one base in memory, each with its own adapter, optimizer and step.
    """

    def __init__(
        self,
        model: PreTrainedModel,
        *,
        lora_rank: int = 16,
        lora_alpha: int | None = None,  # None = 2 * lora_rank
        lora_dropout: float = 0.0,
        full_finetune: bool = False,
        max_seq_len: int = 2048,
        micro_batch_tokens: int | None = None,  # None = 1024 on a CPU, 2048 on a GPU (see default_micro_batch_tokens)
        autocast_bf16: bool | Literal["auto"] = False,
        seed: int = 0,
        min_shared_prefix: int = 16,  # datums sharing at least this many input tokens share one prefix pass; 0 = never
        share_frozen_base: bool = False,  # LoRA only: use the given model's weights (frozen) instead of a copy
    ):
        self.full_finetune = full_finetune
        self.lora_rank = lora_rank
        self.lora_alpha = 2 * lora_rank if lora_alpha is None else lora_alpha
        self.lora_dropout = lora_dropout
        self.max_seq_len = max_seq_len
        self.seed = seed
        self.min_shared_prefix = min_shared_prefix
        self.step = 0

        # the caller's model (often the sampler's) stays untouched: a deep copy, whose parameters
        # are the caller's own (frozen, never written) when LoRA trainers share one base in memory
        share = share_frozen_base and not full_finetune
        model = copy.deepcopy(model, memo={id(p): p for p in model.parameters()} if share else None)
        model.eval()  # dropout off; LoRA dropout, if asked for, is switched on around forward_backward
        with _seeded(seed):  # LoRA's A init draws from torch's RNG: same seed, same adapter
            if full_finetune:
                for p in model.parameters():
                    p.requires_grad_(True)
            else:
                from peft import LoraConfig, get_peft_model

                config = LoraConfig(
                    r=lora_rank,
                    lora_alpha=self.lora_alpha,
                    lora_dropout=lora_dropout,
                    target_modules="all-linear",
                    bias="none",
                )
                with warnings.catch_warnings():  # peft calls a deprecated transformers property
                    warnings.simplefilter("ignore", FutureWarning)
                    model = get_peft_model(model, config)
        self.model = model
        self._causal_lm: PreTrainedModel = model.get_base_model() if not full_finetune else model
        self._trunk: nn.Module = self._causal_lm.get_decoder()
        head = self._causal_lm.get_output_embeddings()
        if not isinstance(head, nn.Linear):
            raise InvalidRequestError(f"hone's trainer needs a plain linear LM head; this model's is {type(head).__name__}")
        config = self._causal_lm.config
        for attribute in ("final_logit_softcapping", "logit_scale", "logits_scaling"):
            if getattr(config, attribute, None) not in (None, 1.0):
                raise InvalidRequestError(
                    f"hone's trainer computes logits as hidden @ lm_head, but this model sets {attribute}; it is not supported yet"
                )
        self._head: nn.Linear = head
        self._device = next(model.parameters()).device
        self.autocast_bf16 = bf16_is_native(self._device) if autocast_bf16 == "auto" else bool(autocast_bf16)
        self.micro_batch_tokens = micro_batch_tokens or default_micro_batch_tokens(self._device)
        self._vocab = min(head.weight.shape[0], self._causal_lm.get_input_embeddings().weight.shape[0])
        self._trainable = [p for p in model.parameters() if p.requires_grad]
        self.optimizer = self._new_optimizer()
        self._can_share_prefix = min_shared_prefix > 0 and self._cache_is_plain()

    # ------------------------------------------------------------------ public API
    def forward_backward(
        self, datums: list[Datum], loss: str | LossFn = "cispo", loss_config: LossConfig | None = None
    ) -> dict[str, float]:
        """Accumulate the gradient of `loss` over `datums` (add to any earlier call's); return metrics."""
        loss_fn = get_loss(loss)
        config = _loss_config(loss_config)
        name = builtin_name(loss_fn)
        # 1) refuse a bad batch before any compute
        self._validate(datums)
        if name is not None:
            check_loss_inputs(datums, LOSS_REQUIRES[name], name)
        # 2) shared-prefix groups and micro-batches, then forward + backward
        plan = self._plan(datums)
        with self._training_mode():
            if name is not None or len(plan) == 1:
                lps, entropy = self._backward_in_one_pass(plan, datums, loss_fn, config, scale_parts=name is not None)
            else:
                lps, entropy = self._backward_in_two_passes(plan, datums, loss_fn, config)

        # 3) metrics of the whole batch, from the logprobs already computed
        with torch.no_grad():
            total, metrics = loss_fn([lp.detach() for lp in lps], datums, config)
        metrics = {k: float(v) for k, v in metrics.items()}
        metrics["loss"] = float(total)
        metrics["tokens"] = float(sum(sum(1 for w in d.weights if w != 0) for d in datums))
        metrics["sequences"] = float(len(datums))
        metrics["entropy"] = float(entropy.mean()) if entropy.numel() else 0.0
        metrics["micro_batches"] = float(len(plan))
        metrics["prefix_tokens_shared"] = float(
            sum((len(u.indices) - 1) * u.prefix_len for mb in plan for u in mb)
        )  # tokens the trunk did not recompute thanks to prefix sharing
        # a step's activations are freed by reference counting, not by the cycle collector (on the
        # embedded model a full collection after each of 6 steps found 0 unreachable objects), and
        # a collection cost 0.2-0.8 s a step (0.22 s of a tiny model's 0.24 s step)
        release_freed_memory(collect_cycles=False)
        return metrics

    def _backward_in_one_pass(
        self, plan: list[list[Unit]], datums: list[Datum], loss_fn: LossFn, config: LossConfig, scale_parts: bool
    ) -> tuple[list[Tensor], Tensor]:
        """Loss and backward per micro-batch, each scaled by its share of the whole batch's denominator
        (exact for the built-in losses, which are sums over sequences; any loss if there is one part)."""
        lps: list[Tensor | None] = [None] * len(datums)
        entropies = []
        whole = aggregation_denominator(datums, config) if scale_parts else 1.0
        for micro_batch in plan:
            indices = [i for unit in micro_batch for i in unit.indices]
            sub = [datums[i] for i in indices]
            lp_list, entropy = self._forward(micro_batch, datums, weighted_only=True)
            part, _ = loss_fn(lp_list, sub, config)
            scale = aggregation_denominator(sub, config) / whole if scale_parts and len(plan) > 1 else 1.0
            if part.requires_grad and scale != 0.0:
                (part * scale).backward()
            for i, lp in zip(indices, lp_list):
                lps[i] = lp.detach()
            entropies.append(entropy)
        return lps, torch.cat(entropies)

    def _backward_in_two_passes(
        self, plan: list[list[Unit]], datums: list[Datum], loss_fn: LossFn, config: LossConfig
    ) -> tuple[list[Tensor], Tensor]:
        """Any loss over several micro-batches: 1) logprobs of the whole batch without a graph,
        2) the loss and d loss / d logprobs, 3) each micro-batch again, backpropagating that gradient."""
        lps: list[Tensor | None] = [None] * len(datums)
        entropies = []
        with torch.no_grad():
            for micro_batch in plan:
                indices = [i for unit in micro_batch for i in unit.indices]
                lp_list, entropy = self._forward(micro_batch, datums, weighted_only=True)
                for i, lp in zip(indices, lp_list):
                    lps[i] = lp
                entropies.append(entropy)
        leaves = [lp.clone().requires_grad_(True) for lp in lps]
        total, _ = loss_fn(leaves, datums, config)
        if total.requires_grad:
            grads = torch.autograd.grad(total, leaves, allow_unused=True)
            for micro_batch in plan:
                indices = [i for unit in micro_batch for i in unit.indices]
                lp_list, _ = self._forward(micro_batch, datums, weighted_only=True)
                terms = [(lp * grads[i]).sum() for i, lp in zip(indices, lp_list) if grads[i] is not None]
                if terms:
                    torch.stack(terms).sum().backward()
        return lps, torch.cat(entropies)

    def optim_step(self, adam: AdamParams) -> dict[str, float]:
        """AdamW on the accumulated gradients (clipped by global norm), then zero them; step += 1."""
        max_norm = adam.grad_clip_norm if adam.grad_clip_norm > 0 else math.inf
        grad_norm = float(torch.nn.utils.clip_grad_norm_(self._trainable, max_norm))  # norm before clipping
        for group in self.optimizer.param_groups:
            group.update(
                lr=adam.learning_rate, betas=(adam.beta1, adam.beta2), eps=adam.eps, weight_decay=adam.weight_decay
            )
        skipped = not math.isfinite(grad_norm)
        if not skipped:  # a NaN/inf gradient would poison Adam's moments for good: drop this update
            self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        return {
            "grad_norm": grad_norm,
            "lr": adam.learning_rate,
            "step": float(self.step),
            "skipped_nonfinite": float(skipped),
        }

    def logprobs(self, datums: list[Datum]) -> list[Tensor]:
        """(T_i,) fp32 logprobs of every target token, without gradient (for evaluation and tests)."""
        self._validate(datums)
        plan = self._plan(datums)
        out: list[Tensor | None] = [None] * len(datums)
        with torch.no_grad():
            for micro_batch in plan:
                indices = [i for unit in micro_batch for i in unit.indices]
                lp_list, _ = self._forward(micro_batch, datums, weighted_only=False)
                for i, lp in zip(indices, lp_list):
                    out[i] = lp
        return out

    @torch.no_grad()
    def sampler_state_dict(self) -> dict[str, Tensor]:
        """Fresh fp32 tensors of the current weights, LoRA merged, under the plain HF model's names.

        The caller owns the tensors (the trainer keeps no reference); tied weights come back as one
        tensor under both names, as in the plain model. Nothing in the trainer's model is changed:
        each LoRA target is computed as W + scale · B @ A into a new tensor, never merged in place.
        """
        lora_modules = {}
        if not self.full_finetune:
            from peft.tuners.lora import LoraLayer

            lora_modules = {n: m for n, m in self._causal_lm.named_modules() if isinstance(m, LoraLayer)}
        copies: dict[tuple, Tensor] = {}  # tied weights (embeddings = head) are copied once and shared
        out: dict[str, Tensor] = {}
        for name, t in self._causal_lm.state_dict().items():
            if "lora_" in name:
                continue
            plain = name.replace(".base_layer.", ".")
            module_name = name.rsplit(".base_layer.", 1)[0] if ".base_layer." in name else None
            if module_name in lora_modules and name.endswith(".base_layer.weight"):
                out[plain] = _merged_weight(lora_modules[module_name], t)
                continue
            key = (t.data_ptr(), tuple(t.shape), tuple(t.stride()))
            if key not in copies:
                copies[key] = t.detach().float().clone()
            out[plain] = copies[key]
        return out

    def save_state(self, path: str | Path, *, tokenizer: Any = None, base_model: str | None = None) -> Path:
        """Weights (adapter or full), optimizer, step and RNG states, written whole or not at all
        (the layout: hone.training.checkpoint); with the tokenizer and the base model's name when
        given, so the folder is self-contained."""
        if self.full_finetune:
            weights = dict(self._causal_lm.named_parameters())
            model_config = json.loads(self._causal_lm.config.to_json_string())
        else:
            from peft import get_peft_model_state_dict

            weights = get_peft_model_state_dict(self.model)
            model_config = self._adapter_config()
            if base_model is not None:  # portable, not a path of this machine's cache
                model_config["base_model_name_or_path"] = hub_id(base_model)
        return checkpoint.save(
            path,
            full_finetune=self.full_finetune,
            lora_rank=self.lora_rank,
            lora_alpha=self.lora_alpha,
            step=self.step,
            weights=weights,
            model_config=model_config,
            optimizer_state=self.optimizer.state_dict(),
            rng_states=_rng_states(),
            tokenizer=tokenizer,
            base_model=base_model,
        )

    def load_state(self, path: str | Path, with_optimizer: bool = True) -> None:
        """Restore weights, step and RNG states (and the optimizer) exactly; CheckpointError if unusable."""
        # 1) read and check everything before changing anything
        state = checkpoint.load(
            path,
            full_finetune=self.full_finetune,
            lora_rank=self.lora_rank,
            lora_alpha=self.lora_alpha,
            with_optimizer=with_optimizer,
            device=self._device,
        )
        # 2) apply
        try:
            self._apply_weights(state.weights)
            if state.optimizer_state is not None:
                self.optimizer.load_state_dict(state.optimizer_state)
            else:
                self.optimizer = self._new_optimizer()
            _set_rng_states(state.rng_states)
        except Exception as exc:
            raise CheckpointError(f"the checkpoint at {path} does not fit this trainer ({type(exc).__name__}: {exc})") from exc
        self.optimizer.zero_grad(set_to_none=True)
        self.step = state.step

    @property
    def num_trainable_parameters(self) -> int:
        return sum(p.numel() for p in self._trainable)

    # ------------------------------------------------------------------ validation and planning
    def _validate(self, datums: list[Datum]) -> None:
        if not datums:
            raise InvalidRequestError("the batch is empty; pass at least one datum")
        for i, datum in enumerate(datums):
            try:
                datum.check()
            except ValueError as exc:
                raise InvalidRequestError(f"datum {i}: {exc}") from exc
            T = len(datum.input_tokens)
            if T == 0:
                raise InvalidRequestError(f"datum {i} has no tokens")
            if T > self.max_seq_len:
                raise SequenceTooLongError(
                    f"datum {i} has {T} tokens, more than this trainer's max_seq_len of {self.max_seq_len}; "
                    "shorten it or make the Trainer with a larger max_seq_len"
                )
            for field in ("input_tokens", "target_tokens"):
                ids = getattr(datum, field)
                if min(ids) < 0 or max(ids) >= self._vocab:
                    raise InvalidRequestError(f"datum {i} has a token id in {field} outside the vocabulary [0, {self._vocab})")

    def _plan(self, datums: list[Datum]) -> list[list[Unit]]:
        """Shared-prefix groups and single datums packed into micro-batches (hone.training.plan)."""
        min_shared_prefix = self.min_shared_prefix if self._can_share_prefix else 0
        return plan_micro_batches(datums, self.micro_batch_tokens, min_shared_prefix)

    # ------------------------------------------------------------------ forward
    def _forward(self, micro_batch: list[Unit], datums: list[Datum], weighted_only: bool) -> tuple[list[Tensor], Tensor]:
        """Per-datum (T_i,) fp32 logprobs (in micro-batch order) and the (M,) entropies at the positions used."""
        device = self._device
        pieces: list[Tensor] = []  # (N_k, H) hidden rows; `rows[i]` indexes their concatenation
        rows: dict[int, Tensor] = {}
        offset = 0
        with self._autocast():
            # 1) datums on their own: one right-padded batch (causal attention never sees the padding)
            singles = [u.indices[0] for u in micro_batch if u.prefix_len == 0]
            if singles:
                L = max(len(datums[i].input_tokens) for i in singles)
                ids = torch.zeros(len(singles), L, dtype=torch.long, device=device)  # (B, T)
                for r, i in enumerate(singles):
                    ids[r, : len(datums[i].input_tokens)] = torch.tensor(datums[i].input_tokens, device=device)
                hidden = self._trunk(input_ids=ids, use_cache=False).last_hidden_state  # (B, T, H)
                pieces.append(hidden.reshape(-1, hidden.shape[-1]))
                for r, i in enumerate(singles):
                    rows[i] = offset + r * L + torch.arange(len(datums[i].input_tokens), device=device)
                offset += len(singles) * L
            # 2) groups: the prefix once, its cache repeated per member, the suffixes on top
            for unit in (u for u in micro_batch if u.prefix_len > 0):
                P, G = unit.prefix_len, len(unit.indices)
                prefix_ids = torch.tensor([datums[unit.indices[0]].input_tokens[:P]], device=device)  # (1, P)
                out = self._trunk(input_ids=prefix_ids, use_cache=True)
                cache = _output_cache(out)
                cache.batch_repeat_interleave(G)  # (1, heads, P, d) -> (G, heads, P, d), differentiable
                S = max(len(datums[i].input_tokens) - P for i in unit.indices)
                suffix_ids = torch.zeros(G, S, dtype=torch.long, device=device)  # (G, S)
                for r, i in enumerate(unit.indices):
                    suffix = datums[i].input_tokens[P:]
                    suffix_ids[r, : len(suffix)] = torch.tensor(suffix, device=device)
                positions = (P + torch.arange(S, device=device)).expand(G, S)
                suffix_hidden = self._trunk(
                    input_ids=suffix_ids, position_ids=positions, use_cache=True, **{_cache_argument(self._trunk): cache}
                ).last_hidden_state  # (G, S, H)
                H = suffix_hidden.shape[-1]
                pieces.append(out.last_hidden_state.reshape(P, H))
                prefix_rows = offset + torch.arange(P, device=device)
                offset += P
                pieces.append(suffix_hidden.reshape(G * S, H))
                for r, i in enumerate(unit.indices):
                    suffix_rows = offset + r * S + torch.arange(len(datums[i].input_tokens) - P, device=device)
                    rows[i] = torch.cat([prefix_rows, suffix_rows])
                offset += G * S
        flat = torch.cat(pieces) if len(pieces) > 1 else pieces[0]  # (N, H)

        # 3) fp32 logprobs at the head, only where a loss will read them
        order = [i for unit in micro_batch for i in unit.indices]
        positions_used, rows_used, targets = [], [], []
        for i in order:
            datum = datums[i]
            if weighted_only:
                used = torch.tensor([t for t, w in enumerate(datum.weights) if w != 0], dtype=torch.long, device=device)
            else:
                used = torch.arange(len(datum.input_tokens), device=device)
            positions_used.append(used)
            rows_used.append(rows[i][used])
            targets.append(torch.tensor(datum.target_tokens, device=device)[used])
        hidden_used = flat.index_select(0, torch.cat(rows_used))  # (M, H)
        lp_used, entropy = head_logprobs(hidden_used, self._head.weight, self._head.bias, torch.cat(targets))
        lp_list, start = [], 0
        for i, used in zip(order, positions_used):
            T = len(datums[i].input_tokens)
            piece = lp_used[start : start + len(used)]
            start += len(used)
            lp_list.append(torch.zeros(T, dtype=torch.float32, device=device).index_copy(0, used, piece))
        return lp_list, entropy

    @contextmanager
    def _training_mode(self) -> Iterator[None]:
        if self.lora_dropout > 0:  # dropout only when asked for; the model otherwise stays in eval mode
            self.model.train()
        try:
            yield
        finally:
            self.model.eval()

    def _autocast(self):
        if not self.autocast_bf16:
            return nullcontext()
        return torch.autocast(device_type=self._device.type, dtype=torch.bfloat16)

    def _cache_is_plain(self) -> bool:
        """Prefix sharing needs a cache that keeps every past key (no sliding window, no recurrent state)."""
        from transformers.cache_utils import DynamicCache, DynamicLayer

        with torch.no_grad():
            out = self._trunk(input_ids=torch.zeros(1, 2, dtype=torch.long, device=self._device), use_cache=True)
        cache = _output_cache(out)
        return isinstance(cache, DynamicCache) and all(type(layer) is DynamicLayer for layer in cache.layers)

    # ------------------------------------------------------------------ optimizer and checkpoints
    def _new_optimizer(self) -> torch.optim.Optimizer:
        defaults = AdamParams()
        return torch.optim.AdamW(
            self._trainable,
            lr=defaults.learning_rate,
            betas=(defaults.beta1, defaults.beta2),
            eps=defaults.eps,
            weight_decay=defaults.weight_decay,
        )

    def _adapter_config(self) -> dict[str, Any]:
        """The LoraConfig as PEFT's save_pretrained writes it (sets as lists, inference mode on)."""
        config = self.model.peft_config["default"].to_dict()
        config = {k: sorted(v) if isinstance(v, set) else v for k, v in config.items()}
        config["inference_mode"] = True
        if config.get("base_model_name_or_path") is None:
            config["base_model_name_or_path"] = getattr(self._causal_lm, "name_or_path", None)
        return config

    def _apply_weights(self, weights: dict[str, Tensor]) -> None:
        if self.full_finetune:
            expected = {n: p for n, p in self._causal_lm.named_parameters()}
        else:
            from peft import get_peft_model_state_dict

            expected = get_peft_model_state_dict(self.model)
        missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
        wrong_shape = [n for n in expected if n in weights and weights[n].shape != expected[n].shape]
        if missing or unexpected or wrong_shape:
            raise ValueError(f"missing {missing[:3]}, unexpected {unexpected[:3]}, wrong shape {wrong_shape[:3]}")
        with torch.no_grad():
            if self.full_finetune:
                for name, param in expected.items():
                    param.copy_(weights[name])
            else:
                from peft import set_peft_model_state_dict

                set_peft_model_state_dict(self.model, weights)


# --------------------------------------------------------------------------- helpers
def _merged_weight(module: Any, base: Tensor) -> Tensor:
    """W + Σ_adapters scale · B @ A as a new fp32 tensor (one fused addmm in the plain LoRA case)."""
    merged = None
    for adapter in module.active_adapters:
        plain = (
            not getattr(module, "fan_in_fan_out", False)
            and not module.use_dora.get(adapter, False)
            and adapter in module.lora_A
        )
        if plain and merged is None:
            A, B = module.lora_A[adapter].weight.float(), module.lora_B[adapter].weight.float()
            merged = torch.addmm(base.float(), B, A, alpha=module.scaling[adapter])  # (out, r) @ (r, in)
        else:
            merged = (base.float().clone() if merged is None else merged) + module.get_delta_weight(adapter).float()
    return base.detach().float().clone() if merged is None else merged


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's RNGs inside the block and give the caller's RNG state back after it."""
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_available() else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


def _rng_states() -> dict[str, Any]:
    """Every RNG hone's training touches, as plain lists and tensors (loadable with weights_only)."""
    version, python_state, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state(legacy=True)
    return {
        "python": [version, list(python_state), gauss],
        "numpy": [kind, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def _set_rng_states(states: dict[str, Any]) -> None:
    version, python_state, gauss = states["python"]
    random.setstate((version, tuple(python_state), gauss))
    kind, keys, pos, has_gauss, cached = states["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if states["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(states["cuda"])


def _loss_config(value: LossConfig | dict[str, Any] | None) -> LossConfig:
    """A LossConfig from itself, from a plain dict (a remote request's JSON), or the defaults."""
    if value is None:
        return LossConfig()
    if isinstance(value, LossConfig):
        return value
    if isinstance(value, dict):
        try:
            return LossConfig(**value)
        except TypeError as exc:
            raise InvalidRequestError(f"loss_config has an unknown field: {exc}", param="loss_config") from exc
    raise InvalidRequestError(f"loss_config must be a LossConfig or a dict, not {type(value).__name__}", param="loss_config")


def _cache_argument(module: nn.Module) -> str:
    """transformers renamed `past_key_values` to `cache` (the old name warns); the one `module` takes."""
    return "cache" if "cache" in inspect.signature(module.forward).parameters else "past_key_values"


def _output_cache(out: Any) -> Any:
    cache = getattr(out, "cache", None)
    return cache if cache is not None else out.past_key_values
