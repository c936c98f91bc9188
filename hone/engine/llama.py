"""A decode-only forward pass for Llama-family models (Llama, SmolLM, Mistral, Qwen2, Qwen3, Phi-3, Gemma 3) over a slot KV cache.

They share one computation: pre-norm (RMSNorm) blocks of rotary grouped-query attention and a
gated MLP. They differ in naming and small options: Phi-3 stores q|k|v and gate|up already fused
(`qkv_proj`, `gate_up_proj`), Qwen2 has q/k/v biases, Qwen3 and Gemma 3 normalise each query and
key head. Gemma 3 also scales the embeddings by sqrt(D), stores norm weights as offsets from 1,
normalises each block's output before the residual add, uses a tanh-GELU MLP and its own attention
scale, and interleaves sliding-window layers (their own rotary base) with global ones. Mistral and
Phi-3 may declare one window for every layer.

A sliding-window layer's cache holds only the window: a ring of W positions, position p at p % W
(hone.engine.kernels), so its memory is bounded whatever the sequence length.

The engine's own copy of the weights lives here, fused for fewer matmuls (q|k|v in one, gate|up in
one) and cast to the engine's dtype, except the LM head, which is kept in its own dtype (fp32 by
default) so logprobs are computed from fp32 logits. Nothing here knows about requests or sampling:
`prefill` and `decode` take token ids and cache slots and return fp32 logits.

The KV cache is a set of slots, one per sampled sequence (B), each with its own length. A decode
step feeds one token per active slot at that slot's own position; slots need not be in step, which
is what lets new requests join a running decode (continuous batching) and lets n samples copy one
prompt's prefill into n slots.

Shapes: L layers, B slots/rows, T tokens, H query heads, K key/value heads, E head dim, D hidden,
V vocabulary, S cache length.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import PreTrainedModel

from hone.engine.kernels import NO_SHARING, decode_attention_reference, load_kernels, verify_attention_reference
from hone.errors import HoneError, InvalidRequestError

SUPPORTED_MODEL_TYPES = ("llama", "mistral", "qwen2", "qwen3", "phi3", "gemma3_text")
_ACTIVATIONS = {"silu": F.silu, "gelu_pytorch_tanh": lambda x: F.gelu(x, approximate="tanh")}
_CACHE_CHUNK = 32  # cache capacity is a multiple of this many positions
# From this many rows (a prefill), a bf16 weight on hone's kernel is widened to fp32 for the call
# and multiplied by torch's fp32 matmul (oneDNN's fp32 tiles outrun the kernel's on many rows):
# measured on SmolLM2's three weight shapes, the kernel took 0.65-0.79x the widened call's time at
# 32 rows, 1.01-1.10x at 128 and 1.25-1.35x at 256 (2-core AMD EPYC, Zen 3, AVX2;
# bench/linear_bf16.py). The widened copy lives only for the call, and is made a slice of rows at
# a time (WIDEN_SLICE_BYTES of fp32 each): the LM head (49152 x 576) widened whole was a transient
# 113 MB, for a call with 128+ rows of logits (prompt logprobs, a wide verification).
KERNEL_MAX_ROWS = 128
WIDEN_SLICE_BYTES = 16 << 20
# Below this many rows a bf16 linear runs on hone's kernel where it has AVX512-BF16 dot products,
# though oneDNN packs bf16 there: measured on SmolLM2's layer shapes (2-core AMD EPYC, Zen 5), the
# kernel took 0.3-0.5x oneDNN's time for 1 row, 0.5-0.7x for 4, 0.7-0.9x for 8, 0.7-1.2x for 16 and
# 1.1-1.6x for 32 (bench/linear_bf16.py, weights in cache); a batch-1 decode step 1.3-1.5x faster.
DOT_KERNEL_MAX_ROWS = 16
# a PEFT adapter state key: [base_model.model.]model.layers.{i}.{self_attn|mlp}.{x}_proj.lora_{A|B}.weight
_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?model\.layers\.(\d+)\.(?:self_attn|mlp)\.(\w+_proj)\.lora_([AB])(?:\.\w+)?\.weight$")
# the runner's fused projections -> the model's own linear layers they are made of, in order
_FUSED = {"qkv": ("q_proj", "k_proj", "v_proj"), "o": ("o_proj",), "gate_up": ("gate_proj", "up_proj"), "down": ("down_proj",)}
_FUSED_PHI3 = {"qkv": ("qkv_proj",), "o": ("o_proj",), "gate_up": ("gate_up_proj",), "down": ("down_proj",)}


@dataclass
class LoraAdapter:
    """One adapter's LoRA matrices, unmerged, in the runner's fused layout; applied as y += (x @ A.T) @ B.T.

    Per layer and fused projection (qkv, o, gate_up, down): A (r·parts, D_in) stacks the parts' A
    matrices, B (D_out, r·parts) is block-diagonal with the scale (alpha / r) folded in; None where
    no part of that projection is adapted. fp32, whatever the engine's dtype: the delta is small
    and cheap (rank r), and fp32 keeps it close to the merged fp32 weights. An adapter with no
    matrices (`empty`) samples the base weights exactly. Immutable once built: new weights are a
    new LoraAdapter, so rows admitted earlier finish on the one they started with.
    """

    qkv: list[tuple[torch.Tensor, torch.Tensor] | None] = field(default_factory=list)
    o: list[tuple[torch.Tensor, torch.Tensor] | None] = field(default_factory=list)
    gate_up: list[tuple[torch.Tensor, torch.Tensor] | None] = field(default_factory=list)
    down: list[tuple[torch.Tensor, torch.Tensor] | None] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return all(pair is None for pairs in (self.qkv, self.o, self.gate_up, self.down) for pair in pairs)

    def num_parameters(self) -> int:
        pairs = [pair for pairs in (self.qkv, self.o, self.gate_up, self.down) for pair in pairs if pair is not None]
        return sum(A.numel() + B.numel() for A, B in pairs)


class Linear:
    """y = x @ W.T (+ b) (+ residual), with W prepacked for oneDNN where torch can.

    oneDNN otherwise re-lays-out the weight on every call; prepacked, a decode step's matmuls take
    ~25-35% less time here. fp32 goes through oneDNN too, not MKL: on a 2-core AMD EPYC, MKL ran
    the fp32 LM head (576 -> 49152) 2-4x slower than oneDNN (10.5 vs 5.4 ms for 1 row, 47 vs 4.8 ms
    for 3, 28 vs 11 ms for 32), and the layers' fp32 matmuls 1.2-3x slower; MKL is kept only where
    oneDNN is missing. bf16 weights where oneDNN cannot pack them (AVX2 without AVX-512) go
    through hone's own kernel (`linear_bf16` in hone.engine.kernels), not torch's much slower bf16
    matmul there. Where oneDNN does pack bf16 and the kernel has AVX512-BF16's dot products, calls
    of fewer than `DOT_KERNEL_MAX_ROWS` rows (a decode step of a few sequences) run on the kernel
    too: it reads the weights faster than oneDNN there. `weight` stays the plain (N, K) tensor that
    `load_weights` writes into; `repack()` must follow any write.

    `fp32_out`: the output is fp32 whatever x's dtype (the LM head: logits must not be rounded to
    bf16). A bf16 weight then always runs on the kernel, which sums in fp32 and writes fp32, never
    on oneDNN's bf16 matmul, which rounds its output to bf16.
    """

    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None = None, batch_hint: int = 32, fp32_out: bool = False):
        self.weight = weight
        self.bias = bias
        self.batch_hint = batch_hint
        self.fp32_out = fp32_out
        self.out_features = weight.shape[0]
        self.repack()

    def repack(self) -> None:
        if self.weight is None:
            raise HoneError("this weight kept only its packed copy (serve_only) and cannot be repacked")
        self.mode, self.packed, self.kernel_rows = "plain", None, 0  # kernel_rows: calls of fewer rows run on the kernel
        if self.weight.device.type != "cpu":
            return
        module = _bf16_kernel() if self.weight.dtype == torch.bfloat16 else None
        if module is not None and self.fp32_out:
            self.mode, self._rows, self.kernel_rows = "kernel", module.linear_bf16, KERNEL_MAX_ROWS
            return
        try:
            if self.weight.dtype in (torch.bfloat16, torch.float32) and torch.backends.mkldnn.is_available():
                self.packed = torch.ops.mkldnn._reorder_linear_weight(self.weight, self.batch_hint)
                self.mode = "onednn"
            elif self.weight.dtype == torch.float32 and torch.backends.mkl.is_available():
                self.packed = torch.ops.mkl._mkl_reorder_linear_weight(self.weight, self.batch_hint)
                self.mode = "mkl"
        except (AttributeError, RuntimeError, NotImplementedError):  # a torch build without these ops, or a CPU
            self.mode, self.packed = "plain", None
        if module is None:
            return
        if self.mode == "plain":  # AVX2 without AVX-512: the kernel, widened fp32 from KERNEL_MAX_ROWS
            self.mode, self._rows, self.kernel_rows = "kernel", module.linear_bf16, KERNEL_MAX_ROWS
        elif self.mode == "onednn" and module.bf16_dot_products():
            self._rows, self.kernel_rows = module.linear_bf16, DOT_KERNEL_MAX_ROWS

    def drop_plain(self) -> None:
        """Keep one copy of the weight, for a process that only serves: the packed one where oneDNN
        computes from it alone; where the kernel also runs (AVX512-BF16: it reads the plain weight)
        the plain one, and calls of 16 rows and more go to torch's bf16 matmul on it, ~20-40%
        slower than on the packed copy at 16-64 rows and as fast for a prefill's hundreds. Keeping
        both cost SmolLM2-135M 195 MB: `hone serve` held 1.93x llama.cpp's resident memory idle and
        2.14x under 32 requests, one copy 1.53x and 1.76x (bench/serve_memory.py, Zen 5)."""
        if self.mode == "onednn" and self.kernel_rows:
            self.mode, self.packed = "plain", None
        elif self.mode == "onednn":
            self.weight = None

    def __call__(self, x: torch.Tensor, residual: torch.Tensor | None = None) -> torch.Tensor:
        if x.dim() == 2 and (residual is None or residual.dim() == 2):  # a decode step's rows: no reshaping
            return self._rows2d(x, residual)
        lead = x.shape[:-1]
        r = residual.reshape(-1, self.out_features) if residual is not None else None
        return self._rows2d(x.reshape(-1, x.shape[-1]), r).view(*lead, self.out_features)

    def _rows2d(self, x: torch.Tensor, residual: torch.Tensor | None) -> torch.Tensor:
        """(B, K) rows -> (B, N), plus a (B, N) residual if given."""
        if x.shape[0] < self.kernel_rows:
            return self._rows(x.contiguous(), self.weight, self.bias, residual.contiguous() if residual is not None else None, self.fp32_out)
        out_dtype = torch.float32 if self.fp32_out else x.dtype
        if self.mode == "onednn":
            if residual is not None:  # the residual add fused into the matmul
                y = torch.ops.mkldnn._linear_pointwise.binary(x, residual, self.packed, self.bias, "add")
            else:
                y = torch.ops.mkldnn._linear_pointwise(x, self.packed, self.bias, "none", [], "")
            return y.to(out_dtype)
        if self.mode == "kernel":  # a prefill's rows: widen the weights, multiply in fp32 (see KERNEL_MAX_ROWS)
            y = self._widened(x.float())
        elif self.mode == "mkl":
            y = torch.ops.mkl._mkl_linear(x, self.packed, self.weight, self.bias, self.batch_hint)
        else:
            y = F.linear(x, self.weight, self.bias)
        if residual is not None:
            y += residual
        return y.to(out_dtype)  # a no-op but for widened bf16, rounded once as the kernel rounds

    def _widened(self, x: torch.Tensor) -> torch.Tensor:
        """fp32 x (B, K) times the bf16 weight widened to fp32, a slice of its rows at a time."""
        n, k = self.weight.shape
        rows = max(1, WIDEN_SLICE_BYTES // (4 * k))
        if rows >= n:
            return F.linear(x, self.weight.float(), self.bias.float() if self.bias is not None else None)
        y = torch.empty(x.shape[0], n, dtype=torch.float32)
        for start in range(0, n, rows):
            part = slice(start, min(n, start + rows))
            y[:, part] = F.linear(x, self.weight[part].float(), self.bias[part].float() if self.bias is not None else None)
        return y


class LlamaRunner:
    """Fused weights, a growable slot KV cache, and the two forward passes the engine needs."""

    def __init__(
        self,
        model: PreTrainedModel,
        *,
        dtype: torch.dtype,
        head_dtype: torch.dtype = torch.float32,
        max_slots: int,
        max_seq_len: int,
    ):
        check_supported(model)
        config = model.config
        self.fused_names = _FUSED_PHI3 if config.model_type == "phi3" else _FUSED
        self.dtype = dtype
        self.head_dtype = head_dtype
        self.max_slots = max_slots
        self.max_seq_len = max_seq_len
        self.n_layers = config.num_hidden_layers
        self.n_heads = config.num_attention_heads
        self.n_kv_heads = config.num_key_value_heads
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
        self.hidden = config.hidden_size
        self.intermediate = config.intermediate_size
        self.vocab_size = config.vocab_size
        self.eps = float(config.rms_norm_eps)
        self.gemma = config.model_type == "gemma3_text"
        # Gemma scales attention by its own constant, and its embeddings by sqrt(D)
        self.scale = float(config.query_pre_attn_scalar) ** -0.5 if self.gemma else self.head_dim**-0.5
        self.embed_scale = self.hidden**0.5 if self.gemma else None
        self.softcap = getattr(config, "final_logit_softcapping", None) if self.gemma else None
        self.act = _ACTIVATIONS[_activation(config)]
        self.layer_types = list(getattr(config, "layer_types", None) or ["full_attention"] * self.n_layers)
        self.window = [_window(config, kind) for kind in self.layer_types]  # per layer: W, or None for global attention
        self.q_dim = self.n_heads * self.head_dim
        self.kv_dim = self.n_kv_heads * self.head_dim
        self.tied = bool(getattr(config, "tie_word_embeddings", False))
        self.prefill_tokens = 0  # rows x positions run through prefill, for tests and stats
        # adapters of the forward running now: (adapter, first, end) over the rows in `_lora_order`
        # (row indices grouped by adapter; None = every row, all of one adapter)
        self._lora_groups: list[tuple[LoraAdapter, int, int]] = []
        self._lora_order: torch.Tensor | None = None

        # ---------------------------------------------------------------- own copy of the weights
        base = model.model
        layers = base.layers
        first = layers[0].self_attn
        self.device = next(model.parameters()).device
        self.has_qkv_bias = getattr(first, "q_proj", getattr(first, "qkv_proj", None)).bias is not None
        self.has_qk_norm = hasattr(first, "q_norm")
        hint = min(max_slots, 32)  # batch size the packed layouts are tuned for; any size works
        norm = self._norm_weight
        with torch.no_grad():
            self.embed = _own(base.embed_tokens.weight, dtype)  # (V, D)
            self.norm = norm(base.norm.weight)
            # the head gets its own copy in head_dtype (fp32 by default) even when tied to the embedding,
            # unless the two dtypes agree: then a tied head and the embedding are one tensor
            shared = self.tied and head_dtype == dtype
            head = self.embed if shared else _own(model.get_output_embeddings().weight, head_dtype)
            self.head = Linear(head, batch_hint=hint, fp32_out=True)  # (V, D)
            self.ln1, self.ln2, self.qkv, self.o, self.gate_up, self.down = [], [], [], [], [], []
            self.q_norm, self.k_norm = [], []
            self.attn_out_norm, self.mlp_out_norm = [], []  # Gemma: norms of each block's output
            for layer in layers:
                attn, mlp = layer.self_attn, layer.mlp
                self.ln1.append(norm(layer.input_layernorm.weight))
                if self.gemma:  # its post_attention_layernorm normalises the attention's output
                    self.ln2.append(norm(layer.pre_feedforward_layernorm.weight))
                    self.attn_out_norm.append(norm(layer.post_attention_layernorm.weight))
                    self.mlp_out_norm.append(norm(layer.post_feedforward_layernorm.weight))
                else:
                    self.ln2.append(norm(layer.post_attention_layernorm.weight))
                fused = {}  # the runner's fused weights (and biases), concatenated from the model's own layers
                for which, members in self.fused_names.items():
                    module = mlp if which in ("gate_up", "down") else attn
                    parts = [getattr(module, m) for m in members]
                    bias = torch.cat([p.bias for p in parts]).to(dtype) if parts[0].bias is not None else None
                    fused[which] = Linear(_own(torch.cat([p.weight for p in parts]), dtype), bias, hint)
                self.qkv.append(fused["qkv"])  # (H*E + 2*K*E, D)
                self.o.append(fused["o"])
                self.gate_up.append(fused["gate_up"])  # (2*I, D): gate rows, then up rows
                self.down.append(fused["down"])
                if self.has_qk_norm:
                    self.q_norm.append(norm(attn.q_norm.weight))
                    self.k_norm.append(norm(attn.k_norm.weight))
            # rotary tables from the model's own rotary module, so every rope variant it knows is
            # honoured; one per layer type where the types rotate differently (Gemma 3)
            positions = torch.arange(max_seq_len, device=self.device).unsqueeze(0)
            probe = torch.zeros(1, dtype=torch.float32, device=self.device)
            self.rope: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
            for kind in sorted(set(self.layer_types)):
                cos, sin = base.rotary_emb(probe, positions, kind) if self.gemma else base.rotary_emb(probe, positions)  # (1, S, E) fp32
                self.rope[kind] = (cos[0].to(dtype).contiguous(), sin[0].to(dtype).contiguous())
        self._names = self._parameter_map()
        module = load_kernels() if self.device.type == "cpu" else None
        self._attend = module.decode_attention if module is not None else decode_attention_reference
        self._verify = module.verify_attention if module is not None else verify_attention_reference
        self._rms_kernel = module.rms_norm if module is not None else None
        self.attention_impl = "cpp" if module is not None else "torch"
        # the kernel can read samples of one prompt from one slot's copy of it (`decode(shared=)`);
        # not through a sliding window's ring, where a position's entry moves
        self.shares_prefixes = module is not None and all(w is None for w in self.window)

        # ---------------------------------------------------------------- slot KV cache, grown on demand
        # one cache tensor per group of layers of one window (None: global attention, the usual cache)
        self._groups = sorted(set(self.window), key=lambda w: (w is not None, w or 0))
        self._group_of = [(self._groups.index(w), self.window[:i].count(w)) for i, w in enumerate(self.window)]  # (group, index in it)
        self.k_groups: list[torch.Tensor] = []
        self.v_groups: list[torch.Tensor] = []
        self.capacity = 0  # positions per slot (a sliding group keeps at most its window of them)
        self.slots = 0

    # ------------------------------------------------------------------------ cache
    def reserve(self, slots: int, positions: int) -> None:
        """Make the cache hold at least `slots` rows of `positions` tokens, keeping what it holds."""
        if slots <= self.slots and positions <= self.capacity:
            return
        if positions > self.capacity:  # grow by half again at least: a regrowth copies the whole cache
            positions = max(positions, self.capacity * 3 // 2)
        positions = min(self.max_seq_len, -(-positions // _CACHE_CHUNK) * _CACHE_CHUNK)
        slots = max(slots, self.slots)
        positions = max(positions, self.capacity)
        K, E = self.n_kv_heads, self.head_dim
        k_groups, v_groups = [], []
        for g, window in enumerate(self._groups):
            L = self.window.count(window)
            S = self._group_capacity(g, positions)
            # keys are stored transposed, (L, B, K, E, S): a query's scores are then sums of rows
            # that run along positions, with no per-position reductions; values stay (L, B, K, S, E).
            # zeros, not empty: masked positions are multiplied by 0 and must not hold NaN garbage
            k_new = torch.zeros((L, slots, K, E, S), dtype=self.dtype, device=self.device)
            v_new = torch.zeros((L, slots, K, S, E), dtype=self.dtype, device=self.device)
            if self.slots and self.capacity:
                # a ring below its window holds position p at p: growing keeps every index
                old = self._group_capacity(g, self.capacity)
                k_new[:, : self.slots, :, :, :old] = self.k_groups[g]
                v_new[:, : self.slots, :, :old] = self.v_groups[g]
            k_groups.append(k_new)
            v_groups.append(v_new)
        self.k_groups, self.v_groups = k_groups, v_groups
        self.slots, self.capacity = slots, positions

    def release_cache(self) -> None:
        """Free the whole KV cache (nothing may be in flight); the next `reserve` allocates anew."""
        self.k_groups, self.v_groups = [], []
        self.slots = self.capacity = 0

    def _group_capacity(self, group: int, positions: int) -> int:
        window = self._groups[group]
        return positions if window is None else min(positions, window)

    def _cache(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Layer i's (k, v) cache: (B, K, E, S) and (B, K, S, E)."""
        g, j = self._group_of[i]
        return self.k_groups[g][j], self.v_groups[g][j]

    def copy_slots(self, src: list[int], dst: list[int], length: int) -> None:
        """Copy the first `length` cached positions of slots `src` into slots `dst` (pairwise)."""
        if not dst:
            return
        src_t = torch.tensor(src, device=self.device)
        dst_t = torch.tensor(dst, device=self.device)
        for g in range(len(self._groups)):
            n = min(length, self.k_groups[g].shape[-1])  # a full ring is copied whole
            self.k_groups[g][:, dst_t, :, :, :n] = self.k_groups[g][:, src_t, :, :, :n]
            self.v_groups[g][:, dst_t, :, :n] = self.v_groups[g][:, src_t, :, :n]

    @property
    def reuses_prefixes(self) -> bool:
        """Whether cached prefixes can be read back and continued (not through a sliding window's ring)."""
        return all(w is None for w in self.window)

    @property
    def verifies_drafts(self) -> bool:
        """Whether `decode` can feed several tokens per slot (not through a sliding window's ring,
        where a later token's key would overwrite one an earlier token still sees)."""
        return all(w is None for w in self.window)

    def read_slot(self, slot: int, length: int) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Copies of the first `length` cached positions of `slot`: per cache group, keys (L, K, E, n) and values (L, K, n, E)."""
        keys = [k[:, slot, :, :, :length].clone() for k in self.k_groups]
        values = [v[:, slot, :, :length].clone() for v in self.v_groups]
        return keys, values

    def write_slot(self, slot: int, keys: list[torch.Tensor], values: list[torch.Tensor], length: int) -> None:
        """Put the first `length` positions of `read_slot`'s copies into `slot` (reserved by the caller)."""
        for g, (k, v) in enumerate(zip(keys, values)):
            self.k_groups[g][:, slot, :, :, :length] = k[..., :length]
            self.v_groups[g][:, slot, :, :length] = v[:, :, :length]

    def prefill_after(self, slots: list[int], suffixes: list[list[int]], starts: list[int], lora: LoraAdapter | None = None) -> torch.Tensor:
        """Continue each slot, whose first `starts[r]` positions are cached, with `suffixes[r]`; return
        each row's last-token logits (R, V) fp32. `prefill`'s computation with the prefixes read from the
        cache; rows are right-padded into one batch (a padded query's output is never used)."""
        if not self.reuses_prefixes:
            raise HoneError("this model's sliding-window layers cannot continue a cached prefix")
        n_rows, T = len(suffixes), max(len(x) for x in suffixes)
        self._set_lora([(lora, None)] if lora is not None else [], n_rows=n_rows)
        H, K, E = self.n_heads, self.n_kv_heads, self.head_dim
        lengths = [len(x) for x in suffixes]
        ends = [a + n for a, n in zip(starts, lengths)]
        S = max(ends)
        tokens = torch.zeros(n_rows, T, dtype=torch.long)
        for r, suffix in enumerate(suffixes):
            tokens[r, : len(suffix)] = torch.tensor(suffix)
        positions = (torch.tensor(starts).view(-1, 1) + torch.arange(T).view(1, -1)).clamp(max=self.max_seq_len - 1).to(self.device)
        self.prefill_tokens += n_rows * T
        rope = {kind: (cos[positions].unsqueeze(2), sin[positions].unsqueeze(2)) for kind, (cos, sin) in self.rope.items()}  # (R, T, 1, E)
        # query t of row r sits at starts[r] + t and sees every key of its slot up to there
        mask = (torch.arange(S, device=self.device).view(1, 1, 1, S) <= positions.view(n_rows, 1, T, 1))
        slot_t = torch.tensor(slots, device=self.device)
        x = self._embed(tokens.to(self.device))  # (R, T, D)
        for i in range(self.n_layers):
            h = self._norm(x, self.ln1[i])
            qkv = self._lora_add(self.qkv[i](h), h, "qkv", i)
            q, k = self._rope_qk(qkv, (n_rows, T), *rope[self.layer_types[i]], i)  # (R, T, H, E), (R, T, K, E)
            v = qkv[..., self.q_dim + self.kv_dim :].view(n_rows, T, K, E)
            k_cache, v_cache = self._cache(i)
            for r, (slot, start, end) in enumerate(zip(slots, starts, ends)):  # real positions only: padding could run past the slot
                k_cache[slot, :, :, start:end] = k[r, : end - start].permute(1, 2, 0)  # (K, E, T_r)
                v_cache[slot, :, start:end] = v[r, : end - start].transpose(0, 1)  # (K, T_r, E)
            # (R, K, S, E), made contiguous: SDPA given the transposed view ran ~2.8x slower here
            keys = k_cache[slot_t, :, :, :S].transpose(-1, -2).contiguous()
            values = v_cache[slot_t, :, :S]
            a = F.scaled_dot_product_attention(q.transpose(1, 2), keys, values, attn_mask=mask, scale=self.scale, enable_gqa=K != H)
            x = self._block_outputs(x, a.transpose(1, 2).reshape(n_rows, T, self.q_dim), i)
        x = x[torch.arange(n_rows, device=self.device), torch.tensor(lengths, device=self.device) - 1]
        return self._logits(x)

    def release(self) -> None:
        """Free the cache; it is regrown by the next batch."""
        self.k_groups, self.v_groups = [], []
        self.slots = self.capacity = 0

    # ------------------------------------------------------------------------ forward passes
    def prefill(self, prompts: list[list[int]], slots: list[int], lora: LoraAdapter | None = None) -> torch.Tensor:
        """Run whole prompts, write their keys and values into `slots`, return last-token logits (R, V) fp32.

        Prompts are right-padded into one (R, T) batch: causal attention means a padded tail never
        affects the real tokens before it, and the garbage cached past each prompt's end is never
        read (attention masks by each slot's position) and is overwritten as the slot decodes.
        The caller reserves the slots first. `lora`: the adapter every prompt of this batch runs with.
        """
        self._set_lora([(lora, None)] if lora is not None else [], n_rows=len(prompts))
        n_rows, T = len(prompts), max(len(p) for p in prompts)
        H, K, E = self.n_heads, self.n_kv_heads, self.head_dim
        tokens = torch.zeros(n_rows, T, dtype=torch.long)
        for i, p in enumerate(prompts):
            tokens[i, : len(p)] = torch.tensor(p)
        tokens = tokens.to(self.device)
        last = torch.tensor([len(p) - 1 for p in prompts], device=self.device)
        slot_t = torch.tensor(slots, device=self.device)
        self.prefill_tokens += n_rows * T
        rope = {kind: (cos[:T].view(1, T, 1, E), sin[:T].view(1, T, 1, E)) for kind, (cos, sin) in self.rope.items()}
        lengths = [len(p) for p in prompts]

        x = self._embed(tokens)  # (R, T, D)
        for i in range(self.n_layers):
            h = self._norm(x, self.ln1[i])
            qkv = self._lora_add(self.qkv[i](h), h, "qkv", i)  # (R, T, H*E + 2*K*E)
            q, k = self._rope_qk(qkv, (n_rows, T), *rope[self.layer_types[i]], i)  # (R, T, H, E), (R, T, K, E)
            v = qkv[..., self.q_dim + self.kv_dim :].view(n_rows, T, K, E)
            q, k, v = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)  # (R, heads, T, E)
            self._write_prefill(i, slot_t, k, v, lengths)
            window = self.window[i]
            if window is None or T <= window:
                a = F.scaled_dot_product_attention(q, k, v, is_causal=True, scale=self.scale, enable_gqa=K != H)
            else:  # query t sees keys t-W+1..t
                t = torch.arange(T, device=self.device)
                mask = (t.view(T, 1) >= t.view(1, T)) & (t.view(T, 1) - t.view(1, T) < window)
                a = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=self.scale, enable_gqa=K != H)
            a = a.transpose(1, 2).reshape(n_rows, T, self.q_dim)
            x = self._block_outputs(x, a, i)
        x = x[torch.arange(n_rows, device=self.device), last]  # (R, D): only the last position is sampled from
        return self._logits(x)

    def _write_prefill(self, i: int, slot_t: torch.Tensor, k: torch.Tensor, v: torch.Tensor, lengths: list[int]) -> None:
        """Cache a prefill's keys (R, K, T, E) and values of layer i. A ring (a window's cache)
        takes each row's own last positions only: a padded tail would land on real entries."""
        k_cache, v_cache = self._cache(i)
        S, T = k_cache.shape[-1], k.shape[2]
        if T <= S:  # every position has its own entry; garbage past a row's end is never read
            k_cache[slot_t, :, :, :T] = k.transpose(2, 3)  # (R, K, E, T)
            v_cache[slot_t, :, :T] = v
            return
        for r, length in enumerate(lengths):
            kept = torch.arange(max(0, length - S), length, device=self.device)
            k_cache[slot_t[r], :, :, kept % S] = k[r][:, kept].transpose(1, 2)
            v_cache[slot_t[r], :, kept % S] = v[r][:, kept]

    def _block_outputs(self, x: torch.Tensor, a: torch.Tensor, i: int) -> torch.Tensor:
        """The rest of layer i after attention `a`: output projection, residual, MLP, residual."""
        if not self.gemma:
            x = self._lora_add(self.o[i](a, residual=x), a, "o", i)  # the residual add fused into the matmul
            return self._mlp(self._norm(x, self.ln2[i]), i, residual=x)
        # Gemma normalises each block's output before adding it to the residual stream
        y = self._lora_add(self.o[i](a), a, "o", i)
        x = x + self._norm(y, self.attn_out_norm[i])
        y = self._mlp(self._norm(x, self.ln2[i]), i, residual=None)
        return x + self._norm(y, self.mlp_out_norm[i])

    def _embed(self, tokens: torch.Tensor) -> torch.Tensor:
        x = F.embedding(tokens, self.embed)
        if self.embed_scale is not None:  # in the weights' dtype, as Gemma's own embedding does
            x = x * torch.tensor(self.embed_scale, dtype=self.dtype)
        return x

    def decode(
        self,
        tokens: torch.Tensor,
        positions: torch.Tensor,
        lora: list[tuple[LoraAdapter, torch.Tensor | None]] | None = None,
        runs: tuple[torch.Tensor, torch.Tensor] | None = None,
        shared: tuple[torch.Tensor, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """One step for slots 0..B-1: token b sits at position positions[b]. Returns logits (B, V) fp32.

        The caller reserves capacity past the largest position first. Attention is the C++ kernel
        of `kernels.py` where it could be built, else the same computation in torch ops. `lora`:
        (adapter, row indices) per adapter present, indices None = every row. The base matmuls run
        over all rows (same weights); each adapter's delta runs over its own rows only.

        `runs` = (slots (B,), starts (R+1,)) feeds several tokens per slot (speculative verification,
        `verifies_drafts` models only): row b is a token of slot slots[b], each slot's rows are
        consecutive at consecutive positions, and each row attends causally over its own slot.

        `shared` = (owners (B,), lengths (B,)), `shares_prefixes` runners only, one token per slot:
        slot b's first lengths[b] cached positions equal those of slot owners[b] (samples of one
        prompt, whose caches are copies), and attention reads them there. The outputs are the same;
        a batch's samples of a prompt read its keys and values from one place, once from memory.
        """
        B = tokens.shape[0]
        self._set_lora(lora or [], n_rows=B)
        tokens, positions = tokens.to(self.device), positions.to(self.device)
        if runs is not None and not self.verifies_drafts:
            raise HoneError("this model's sliding-window layers cannot verify several tokens per slot")
        slots, starts = (runs[0].to(self.device), runs[1].to(self.device)) if runs is not None else (None, None)
        if shared is not None and not (self.shares_prefixes and runs is None):
            raise HoneError("shared prefixes need the attention kernel and one token per slot")
        sharing = tuple(t.to(self.device) for t in shared) if shared is not None else NO_SHARING
        H, K = self.n_heads, self.n_kv_heads
        rope = {kind: (cos[positions], sin[positions]) for kind, (cos, sin) in self.rope.items()}  # (B, E) each
        x = self._embed(tokens)  # (B, D)
        for i in range(self.n_layers):
            h = self._norm(x, self.ln1[i])
            qkv = self._lora_add(self.qkv[i](h), h, "qkv", i)  # (B, H*E + 2*K*E)
            if self.has_qk_norm:
                qkv = self._norm_qk(qkv, i)
            # rotate q and k, write k and v at each slot's position, attend over the slot's positions
            if runs is None:
                a = self._attend(qkv, *rope[self.layer_types[i]], *self._cache(i), positions, H, K, self.scale, *sharing)  # (B, H*E)
            else:
                a = self._verify(qkv, *rope[self.layer_types[i]], *self._cache(i), slots, positions, starts, H, K, self.scale)
            x = self._block_outputs(x, a, i)
        return self._logits(x)

    # ------------------------------------------------------------------------ pieces
    def _norm(self, x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
        """RMSNorm over the hidden size: the C++ kernel where built (one pass per row; torch runs six
        ops, ~45 us per call at batch 1, 2.8 ms of a 26 ms step), torch's own otherwise."""
        if self._rms_kernel is not None and x.dtype == weight.dtype and x.is_contiguous():
            return self._rms_kernel(x, weight, self.eps)
        return F.rms_norm(x, (self.hidden,), weight, self.eps)

    def _norm_qk(self, qkv: torch.Tensor, i: int) -> torch.Tensor:
        """Qwen3 normalises each query and key head before the rotation: (B, H*E + 2*K*E) -> same."""
        H, K, E = self.n_heads, self.n_kv_heads, self.head_dim
        B = qkv.shape[0]
        q = F.rms_norm(qkv[:, : self.q_dim].view(B, H, E), (E,), self.q_norm[i], self.eps)
        k = F.rms_norm(qkv[:, self.q_dim : self.q_dim + self.kv_dim].view(B, K, E), (E,), self.k_norm[i], self.eps)
        return torch.cat([q.reshape(B, -1), k.reshape(B, -1), qkv[:, self.q_dim + self.kv_dim :]], dim=1)

    def _rope_qk(self, qkv, lead: tuple[int, ...], cos, sin, i: int):
        """Rotate q and k together (they sit side by side in qkv); (..., H, E) and (..., K, E)."""
        H, K, E = self.n_heads, self.n_kv_heads, self.head_dim
        qk = qkv[..., : self.q_dim + self.kv_dim].view(*lead, H + K, E)
        if self.has_qk_norm:  # Qwen3 normalises each head before the rotation
            q = F.rms_norm(qk[..., :H, :], (E,), self.q_norm[i], self.eps)
            k = F.rms_norm(qk[..., H:, :], (E,), self.k_norm[i], self.eps)
            qk = torch.cat([q, k], dim=-2)
        half = E // 2
        rotated = torch.cat([-qk[..., half:], qk[..., :half]], dim=-1)  # rotate_half
        qk = qk * cos + rotated * sin
        return qk[..., :H, :], qk[..., H:, :]

    def _mlp(self, h: torch.Tensor, i: int, residual: torch.Tensor | None) -> torch.Tensor:
        gu = self._lora_add(self.gate_up[i](h), h, "gate_up", i)  # (..., 2*I)
        a = self.act(gu[..., : self.intermediate]) * gu[..., self.intermediate :]
        return self._lora_add(self.down[i](a, residual=residual), a, "down", i)

    def _set_lora(self, lora: list[tuple[LoraAdapter | None, torch.Tensor | None]], n_rows: int) -> None:
        """Plan this forward's LoRA deltas: each adapter's rows gathered into one contiguous run."""
        live = [(a, rows) for a, rows in lora if a is not None and not a.empty]
        self._lora_groups, self._lora_order = [], None
        if len(live) == 1 and live[0][1] is None:  # one adapter over every row: no gather
            self._lora_groups = [(live[0][0], 0, n_rows)]
        elif live:
            first = 0
            for adapter, rows in live:
                self._lora_groups.append((adapter, first, first + len(rows)))
                first += len(rows)
            self._lora_order = torch.cat([rows for _, rows in live])

    def _lora_add(self, y: torch.Tensor, x: torch.Tensor, which: str, i: int) -> torch.Tensor:
        """y += scale · (x @ A.T) @ B.T for each adapter of this forward, over that adapter's rows only:
        one gather of the adapted rows, two small matmuls per adapter on its own run, one scatter-add."""
        pairs = [(getattr(adapter, which)[i], first, end) for adapter, first, end in self._lora_groups]
        if all(pair is None for pair, _, _ in pairs):
            return y
        if self._lora_order is None:  # one adapter, every row
            A, B = pairs[0][0]  # (r, D_in), (D_out, r), scale folded into B
            y += ((x.to(A.dtype) @ A.T) @ B.T).to(y.dtype)
            return y
        order = self._lora_order
        xs = x.index_select(0, order).to(torch.float32)  # (n, D_in), rows grouped by adapter
        delta = torch.zeros(order.shape[0], y.shape[-1], dtype=torch.float32, device=y.device)  # (n, D_out)
        for pair, first, end in pairs:
            if pair is not None:
                A, B = pair
                torch.mm(torch.mm(xs[first:end], A.T), B.T, out=delta[first:end])
        y.index_add_(0, order, delta.to(y.dtype))
        return y

    # ------------------------------------------------------------------------ adapters
    def make_adapter(self, state_dict: dict[str, torch.Tensor], scale: float) -> LoraAdapter:
        """A LoraAdapter from a PEFT adapter state (`get_peft_model_state_dict` or an adapter file's
        names); `scale` is lora_alpha / r. Copies every tensor: the caller may go on training its own."""
        parts: dict[tuple[int, str], dict[str, torch.Tensor]] = {}
        for name, tensor in state_dict.items():
            match = _LORA_KEY.match(name)
            if match is None or int(match.group(1)) >= self.n_layers:
                raise InvalidRequestError(
                    f"the adapter has '{name}', which is not a LoRA matrix of this model's layers", param="adapter"
                )
            parts.setdefault((int(match.group(1)), match.group(2)), {})[match.group(3)] = tensor
        sizes = {  # output rows of each projection
            "q_proj": self.q_dim, "k_proj": self.kv_dim, "v_proj": self.kv_dim, "o_proj": self.hidden,
            "gate_proj": self.intermediate, "up_proj": self.intermediate, "down_proj": self.hidden,
            "qkv_proj": self.q_dim + 2 * self.kv_dim, "gate_up_proj": 2 * self.intermediate,
        }
        known = {member for members in self.fused_names.values() for member in members}
        for _, member in parts:
            if member not in known:
                raise InvalidRequestError(f"the adapter adapts '{member}', which this model does not have", param="adapter")
        adapter = LoraAdapter()
        with torch.no_grad():
            for fused, members in self.fused_names.items():
                for i in range(self.n_layers):
                    blocks = []  # (out rows, A or None, scaled B or None) per part, in fused order
                    for member in members:
                        ab = parts.get((i, member))
                        if ab is None:
                            blocks.append((sizes[member], None, None))
                            continue
                        if set(ab) != {"A", "B"} or ab["B"].shape[0] != sizes[member] or ab["A"].shape[0] != ab["B"].shape[1]:
                            raise InvalidRequestError(f"the adapter's layer {i} {member} matrices are missing or misshapen", param="adapter")
                        A = ab["A"].detach().to(self.device, torch.float32)
                        blocks.append((sizes[member], A, ab["B"].detach().to(self.device, torch.float32) * scale))
                    if all(A is None for _, A, _ in blocks):
                        getattr(adapter, fused).append(None)
                        continue
                    A = torch.cat([A for _, A, _ in blocks if A is not None]).contiguous()  # (r·parts, D_in), a copy
                    B = torch.zeros(sum(n for n, _, _ in blocks), A.shape[0], device=self.device)  # (D_out, r·parts)
                    row = col = 0
                    for n, a, b in blocks:  # block-diagonal: each part's output rows see only its own A rows
                        if b is not None:
                            B[row : row + n, col : col + b.shape[1]] = b
                            col += b.shape[1]
                        row += n
                    getattr(adapter, fused).append((A, B))
        return adapter

    def _logits(self, x: torch.Tensor) -> torch.Tensor:
        """Final norm, then the LM head in the head's dtype (fp32 by default); always returns fp32."""
        x = self._norm(x, self.norm)
        if self.head.mode == "kernel":  # bf16 weights on the kernel, fp32 sums: logits never rounded to bf16
            logits = self.head(x)
        else:
            logits = self.head(x.to(self.head_dtype)).float()
        if self.softcap:  # Gemma's optional cap: cap · tanh(logits / cap)
            logits = torch.tanh(logits / self.softcap) * self.softcap
        return logits

    # ------------------------------------------------------------------------ weights
    def _norm_weight(self, weight: torch.Tensor) -> torch.Tensor:
        """An RMSNorm's multiplier: Gemma's weights are offsets from 1 (it multiplies by 1 + w)."""
        return _own(weight.float() + 1.0 if self.gemma else weight, self.dtype)

    def _parameter_map(self) -> dict[str, list[torch.Tensor]]:
        """Hugging Face parameter name -> the views of our tensors that hold it."""
        separate_head = self.tied and self.head.weight is not self.embed  # a tied head of its own dtype: both copies
        names: dict[str, list[torch.Tensor]] = {
            "model.embed_tokens.weight": [self.embed] + ([self.head.weight] if separate_head else []),
            "model.norm.weight": [self.norm],
            "lm_head.weight": [self.head.weight] + ([self.embed] if separate_head else []),
        }
        sizes = {"q_proj": self.q_dim, "k_proj": self.kv_dim, "v_proj": self.kv_dim, "gate_proj": self.intermediate}
        for i in range(self.n_layers):
            p = f"model.layers.{i}."
            names[p + "input_layernorm.weight"] = [self.ln1[i]]
            if self.gemma:
                names[p + "pre_feedforward_layernorm.weight"] = [self.ln2[i]]
                names[p + "post_attention_layernorm.weight"] = [self.attn_out_norm[i]]
                names[p + "post_feedforward_layernorm.weight"] = [self.mlp_out_norm[i]]
            else:
                names[p + "post_attention_layernorm.weight"] = [self.ln2[i]]
            if self.has_qk_norm:
                names[p + "self_attn.q_norm.weight"] = [self.q_norm[i]]
                names[p + "self_attn.k_norm.weight"] = [self.k_norm[i]]
            for which, members in self.fused_names.items():  # each member is a run of the fused rows
                module = "mlp" if which in ("gate_up", "down") else "self_attn"
                linear, row = getattr(self, which)[i], 0
                for member in members:
                    end = row + sizes[member] if member in sizes else linear.weight.shape[0]
                    names[f"{p}{module}.{member}.weight"] = [linear.weight[row:end]]
                    if linear.bias is not None:
                        names[f"{p}{module}.{member}.bias"] = [linear.bias[row:end]]
                    row = end
        return names

    def check_state_dict(self, state_dict: dict[str, torch.Tensor]) -> None:
        """Raise before copying anything if a name is unknown or a shape is wrong."""
        if self._names is None:
            raise HoneError("this engine serves fixed weights (serve_only=True): it keeps only their packed copies and cannot load new ones")
        for name, tensor in state_dict.items():
            targets = self._names.get(name)
            if targets is None:
                raise InvalidRequestError(
                    f"load_weights got '{name}', which is not a parameter of this model; pass plain "
                    "Hugging Face parameter names (merge any adapter first)",
                    param="state_dict",
                )
            if tuple(tensor.shape) != tuple(targets[0].shape):
                raise InvalidRequestError(
                    f"load_weights got '{name}' with shape {tuple(tensor.shape)}, expected {tuple(targets[0].shape)}",
                    param="state_dict",
                )

    @torch.no_grad()
    def load_state_dict(self, state_dict: dict[str, torch.Tensor], repack: bool = True) -> None:
        """Copy (and cast) each given parameter into our tensors; names not given keep their values.

        With repack=False the caller must call `repack()` before the next forward pass."""
        self.check_state_dict(state_dict)
        for name, tensor in state_dict.items():
            value = tensor.detach()
            if self.gemma and name.endswith("norm.weight"):  # stored as 1 + w (see _norm_weight)
                value = value.float() + 1.0
            for target in self._names[name]:
                target.copy_(value)
        if repack:
            self.repack()  # packed layouts are copies: rebuild them from the new weights

    def repack(self) -> None:
        """Rebuild every packed weight layout. MKL and oneDNN pack for the calling thread's thread
        count: a layout packed by a 1-thread caller ran ~2x slower in a 2-thread worker (measured),
        so the engine repacks in its worker thread."""
        for linear in self._linears():
            linear.repack()

    def keep_packed_only(self) -> None:
        """Free the plain copy of every weight that oneDNN computes from its packed copy, for a
        process that only serves: one copy of the weights instead of two. Weights can no longer be
        loaded or repacked afterwards (`load_state_dict` and `repack` raise)."""
        for linear in self._linears():
            linear.drop_plain()
        self._names = None  # its views held the plain weights

    def _linears(self) -> list[Linear]:
        return [self.head, *self.qkv, *self.o, *self.gate_up, *self.down]


# --------------------------------------------------------------------------- helpers
def _bf16_kernel():
    """hone's compiled module where it multiplies bf16 weights (x86 with AVX2), else None."""
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        return None  # its vector path is AVX2's; elsewhere (ARM) torch's own bf16 matmul stays
    return load_kernels()


def check_supported(model: PreTrainedModel) -> None:
    """Raise a one-sentence HoneError unless this is a model this forward pass reproduces exactly."""
    config = model.config
    model_type = getattr(config, "model_type", "?")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise HoneError(
            f"the torch engine runs Llama-family models ({', '.join(SUPPORTED_MODEL_TYPES)}); "
            f"this model is '{model_type}'"
        )
    if _activation(config) not in _ACTIVATIONS:
        raise HoneError(f"the torch engine runs SiLU or tanh-GELU MLPs; this model uses '{_activation(config)}'")
    if getattr(config, "use_sliding_window", False):
        raise HoneError("the torch engine does not implement Qwen's sliding-window attention; turn it off in the config")
    if getattr(config, "mlp_bias", False) or getattr(config, "pretraining_tp", 1) not in (None, 1):
        raise HoneError("the torch engine does not implement MLP biases or tensor-parallel pretraining layouts")
    allowed = {"full_attention", "sliding_attention"} if model_type == "gemma3_text" else {"full_attention"}
    if any(t not in allowed for t in getattr(config, "layer_types", None) or []):
        raise HoneError(f"the torch engine implements {' and '.join(sorted(allowed))} layers; this model has others")
    if model_type == "gemma3_text" and (getattr(config, "attn_logit_softcapping", None) or getattr(config, "use_bidirectional_attention", False)):
        raise HoneError("the torch engine does not implement attention-logit soft-capping or bidirectional attention")
    rope = getattr(config, "rope_parameters", None) or {}
    for parameters in rope.values() if model_type == "gemma3_text" else [rope]:
        if isinstance(parameters, dict) and parameters.get("partial_rotary_factor", 1.0) != 1.0:
            raise HoneError("the torch engine rotates whole heads; this model rotates only part of each (partial_rotary_factor)")
        if isinstance(parameters, dict) and parameters.get("rope_type") in ("longrope", "dynamic"):
            # their tables depend on the sequence's length; the engine computes one table for all
            raise HoneError(f"the torch engine's rotary tables are fixed; this model's '{parameters['rope_type']}' rope depends on the sequence length")


def _activation(config) -> str:
    return getattr(config, "hidden_activation", None) or getattr(config, "hidden_act", "silu")


def _window(config, layer_type: str) -> int | None:
    """The sliding window of a layer of `layer_type`, None for global attention."""
    window = getattr(config, "sliding_window", None)
    if config.model_type == "gemma3_text":
        return window if layer_type == "sliding_attention" else None
    return window if config.model_type in ("mistral", "phi3") else None  # one window for every layer


def _own(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """A detached copy in `dtype` that shares no storage with the trainer's parameter."""
    return t.detach().to(dtype=dtype, copy=True).contiguous()
