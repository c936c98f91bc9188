"""Per-token logprobs at the LM head in fp32, a chunk of rows at a time, never all logits at once.

    lp, entropy = head_logprobs(hidden_M_H, weight_V_H, bias_V, targets_M)

The logits of a chunk are made in fp32 whatever the dtype of `hidden` or of the trunk's matmuls
(autocast is switched off here), turned into the target's logprob and the distribution's entropy,
and dropped. Memory is O(rows · V) for one chunk instead of O(M · V).

The backward pass needs d lp_t / d hidden_t = W[target_t] − p_t @ W. When the head is frozen
(LoRA: the head is never a LoRA target), that (M, H) tensor is computed in the forward pass from
the same chunk's probabilities and kept, so backward is one multiply: the same two head matmuls as
plain autograd, without keeping the (M, V) probabilities. When the head itself is trained (full
fine-tune), backward recomputes each chunk's logits: one more head matmul, for the gradient of W.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

_CHUNK_ELEMENTS = 1 << 25  # ~128 MiB of fp32 logits per chunk


def head_logprobs(hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor) -> tuple[Tensor, Tensor]:
    """(M,) fp32 logprobs of `targets` under softmax(hidden @ weight.T + bias), and (M,) entropies.

    The logprobs carry gradient to `hidden`, `weight` and `bias` when grad mode is on and any of them
    requires it; the entropies never carry gradient.
    """
    trainable = [t for t in (hidden, weight, bias) if t is not None and t.requires_grad]
    if not (torch.is_grad_enabled() and trainable):
        with torch.no_grad():
            lp, entropy, _ = _chunked(hidden, weight, bias, targets, want_dlp_dh=False)
        return lp, entropy
    return _HeadLogprobs.apply(hidden, weight, bias, targets)


def _rows_per_chunk(vocab: int) -> int:
    return max(1, _CHUNK_ELEMENTS // vocab)


def _chunk_logits(hidden: Tensor, w32: Tensor, b32: Tensor | None) -> Tensor:
    return F.linear(hidden.float(), w32, b32)  # (m, V) fp32


def _chunked(
    hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor, want_dlp_dh: bool
) -> tuple[Tensor, Tensor, Tensor | None]:
    M = hidden.shape[0]
    device = hidden.device
    lp = torch.empty(M, dtype=torch.float32, device=device)
    entropy = torch.empty(M, dtype=torch.float32, device=device)
    dlp_dh = torch.empty(M, hidden.shape[1], dtype=torch.float32, device=device) if want_dlp_dh else None
    with torch.autocast(device_type=device.type, enabled=False):
        w32 = weight.detach().float()  # no copy when the weights are already fp32
        b32 = None if bias is None else bias.detach().float()
        step = _rows_per_chunk(w32.shape[0])
        for s in range(0, M, step):
            e = min(M, s + step)
            logits = _chunk_logits(hidden[s:e].detach(), w32, b32)  # (m, V)
            logp = logits.sub_(torch.logsumexp(logits, dim=-1, keepdim=True))  # (m, V), in place
            lp[s:e] = logp.gather(1, targets[s:e, None]).squeeze(1)
            probs = logp.exp()  # (m, V), reused for entropy and the gradient
            entropy[s:e] = -torch.linalg.vecdot(probs, logp)
            if dlp_dh is not None:
                dlp_dh[s:e] = w32[targets[s:e]] - probs @ w32  # d lp / d hidden for this chunk
    return lp, entropy, dlp_dh


class _HeadLogprobs(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden: Tensor, weight: Tensor, bias: Tensor | None, targets: Tensor):
        head_trained = ctx.needs_input_grad[1] or (bias is not None and ctx.needs_input_grad[2])
        lp, entropy, dlp_dh = _chunked(hidden, weight, bias, targets, want_dlp_dh=not head_trained)
        ctx.head_trained = head_trained
        ctx.hidden_dtype = hidden.dtype
        if head_trained:
            ctx.save_for_backward(hidden, weight, bias, targets)
        else:
            ctx.save_for_backward(dlp_dh)
        ctx.mark_non_differentiable(entropy)
        return lp, entropy

    @staticmethod
    def backward(ctx, grad_lp: Tensor, grad_entropy: Tensor | None):
        grad_lp = grad_lp.float()
        if not ctx.head_trained:
            (dlp_dh,) = ctx.saved_tensors
            return (grad_lp[:, None] * dlp_dh).to(ctx.hidden_dtype), None, None, None
        # 1) the head is trained: recompute each chunk's probabilities; d lp / d logits = onehot - p
        hidden, weight, bias, targets = ctx.saved_tensors
        with torch.autocast(device_type=hidden.device.type, enabled=False):
            w32 = weight.float()
            b32 = None if bias is None else bias.float()
            grad_hidden = torch.empty(hidden.shape, dtype=torch.float32, device=hidden.device)
            grad_w = torch.zeros_like(w32) if ctx.needs_input_grad[1] else None
            grad_b = torch.zeros_like(b32) if (bias is not None and ctx.needs_input_grad[2]) else None
            step = _rows_per_chunk(w32.shape[0])
            for s in range(0, hidden.shape[0], step):
                e = min(hidden.shape[0], s + step)
                h32 = hidden[s:e].float()
                logits = F.linear(h32, w32, b32)  # (m, V)
                g = grad_lp[s:e]
                grad_logits = torch.softmax(logits, dim=-1).mul_(-g[:, None])  # (m, V)
                grad_logits.scatter_add_(1, targets[s:e, None], g[:, None])
                grad_hidden[s:e] = grad_logits @ w32
                if grad_w is not None:
                    grad_w.addmm_(grad_logits.T, h32)
                if grad_b is not None:
                    grad_b += grad_logits.sum(0)
        return (
            grad_hidden.to(ctx.hidden_dtype),
            None if grad_w is None else grad_w.to(weight.dtype),
            None if grad_b is None else grad_b.to(bias.dtype),
            None,
        )
