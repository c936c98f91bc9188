"""The C++ decode-attention kernel against the same computation in torch ops."""

from __future__ import annotations

import pytest
import torch

from hone.engine import Engine
from hone.engine.kernels import NO_SHARING, decode_attention_reference, load_kernels, verify_attention_reference
from hone.types import SamplingParams

from .test_engine import GREEDY, gather, naive_greedy

kernels = load_kernels()
needs_kernel = pytest.mark.skipif(kernels is None, reason="the C++ kernel could not be built here")


def random_step(dtype, B, H, K, E, S, slots, positions, seed=0):
    g = torch.Generator().manual_seed(seed)
    qkv = torch.randn(B, (H + 2 * K) * E, generator=g).to(dtype)
    angles = torch.randn(B, E // 2, generator=g)
    cos = torch.cat([angles.cos(), angles.cos()], dim=-1).to(dtype)
    sin = torch.cat([angles.sin(), angles.sin()], dim=-1).to(dtype)
    k_cache = torch.randn(slots, K, E, S, generator=g).to(dtype)
    v_cache = torch.randn(slots, K, S, E, generator=g).to(dtype)
    return qkv, cos, sin, k_cache, v_cache, torch.tensor(positions)


@needs_kernel
@pytest.mark.parametrize(
    "H, K, E, S",
    [
        (9, 3, 64, 96),  # SmolLM2's heads, a capacity that is a whole number of 16-position blocks
        (4, 2, 16, 40),  # the tiny test model, a capacity that is not
        (10, 2, 24, 33),  # a head size with no compiled specialisation: the generic loop
        (18, 2, 32, 64),  # 9 queries per kv head: the generic loop too
    ],
)
@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-5), (torch.bfloat16, 0.05)])
def test_kernel_matches_torch_reference_and_writes_the_same_cache(H, K, E, S, dtype, atol):
    positions = [0, 5, S - 1, S // 2, 17 % S]
    inputs = random_step(dtype, len(positions), H, K, E, S, slots=len(positions) + 2, positions=positions)
    fast_k, fast_v = inputs[3].clone(), inputs[4].clone()
    slow_k, slow_v = inputs[3].clone(), inputs[4].clone()
    fast = kernels.decode_attention(*inputs[:3], fast_k, fast_v, inputs[5], H, K, E**-0.5, *NO_SHARING)
    slow = decode_attention_reference(*inputs[:3], slow_k, slow_v, inputs[5], H, K, E**-0.5)
    # bf16: the kernel rotates in fp32 and rounds once, torch rounds after each op (a bf16 ulp or two)
    assert torch.allclose(fast.float(), slow.float(), atol=atol), (fast.float() - slow.float()).abs().max()
    assert torch.allclose(fast_k.float(), slow_k.float(), atol=atol)
    assert torch.equal(fast_v, slow_v)


@needs_kernel
def test_kernel_without_rotation_matches_reference():
    inputs = random_step(torch.float32, 3, 4, 2, 16, 20, slots=3, positions=[0, 7, 19])
    empty = torch.empty(0)
    k1, v1, k2, v2 = inputs[3].clone(), inputs[4].clone(), inputs[3].clone(), inputs[4].clone()
    fast = kernels.decode_attention(inputs[0], empty, empty, k1, v1, inputs[5], 4, 2, 0.25, *NO_SHARING)
    slow = decode_attention_reference(inputs[0], empty, empty, k2, v2, inputs[5], 4, 2, 0.25)
    assert torch.allclose(fast, slow, atol=1e-5)


def test_engine_on_the_torch_attention_path_equals_naive_full_forward(lively, prompts):
    with Engine(lively, eos_token_ids=[], dtype=torch.float32) as engine:
        engine._runner._attend = decode_attention_reference  # as when the kernel cannot be built
        results = gather(engine, [(p, 1, GREEDY) for p in prompts])
    for prompt, [seq] in zip(prompts, results):
        assert seq.tokens == naive_greedy(lively, prompt, GREEDY.max_tokens)


def test_engine_reports_which_attention_it_uses(engine32):
    assert engine32._runner.attention_impl == ("cpp" if kernels is not None else "torch")
    assert engine32.sample_sync([1, 2, 3], 1, SamplingParams(max_tokens=2)) is not None


@pytest.mark.parametrize("dtype, atol", [(torch.float32, 1e-5), (torch.bfloat16, 0.05)])
@pytest.mark.parametrize("H, K, E", [(9, 3, 64), (10, 2, 24)])
def test_verify_attention_equals_one_decode_step_per_token(dtype, atol, H, K, E):
    """Several tokens per slot in one call attend exactly as the same tokens fed one step at a time."""
    S = 48
    runs = [(0, [5, 6, 7]), (2, [0]), (1, [20, 21, 22, 23, 24])]  # (slot, consecutive positions)
    slots = torch.tensor([slot for slot, ps in runs for _ in ps])
    positions = torch.tensor([p for _, ps in runs for p in ps])
    starts = torch.tensor([0, 3, 4, 9])
    qkv, cos, sin, k_cache, v_cache, _ = random_step(dtype, len(slots), H, K, E, S, slots=3, positions=[0])
    step_k, step_v = k_cache.clone(), v_cache.clone()
    expected = torch.empty(len(slots), H * E, dtype=dtype)
    for i in range(len(slots)):  # one token at a time: a one-slot decode step on that slot's cache
        b = int(slots[i])
        out = decode_attention_reference(qkv[i : i + 1], cos[i : i + 1], sin[i : i + 1], step_k[b : b + 1], step_v[b : b + 1], positions[i : i + 1], H, K, E**-0.5, *NO_SHARING)
        expected[i] = out[0]
    implementations = [verify_attention_reference] + ([kernels.verify_attention] if kernels is not None else [])
    for verify in implementations:
        got_k, got_v = k_cache.clone(), v_cache.clone()
        got = verify(qkv, cos, sin, got_k, got_v, slots, positions, starts, H, K, E**-0.5)
        assert torch.allclose(got.float(), expected.float(), atol=atol), (verify, (got.float() - expected.float()).abs().max())
        for slot, ps in runs:
            assert torch.allclose(got_k[slot, ..., ps].float(), step_k[slot, ..., ps].float(), atol=atol)
            assert torch.equal(got_v[slot, :, ps], step_v[slot, :, ps])


@needs_kernel
@needs_kernel
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("H, K, E", [(9, 3, 64), (4, 2, 16), (10, 2, 24)])
def test_verify_kernel_gives_exactly_the_decode_kernels_outputs(dtype, H, K, E):
    """The kernel attends a run's rows together (several rows' queries per pass over the keys, each
    to its own length); the outputs are bit for bit those of its one-token decode steps, so greedy
    output does not change with speculation. Runs cross whole tiles of positions and a partial one."""
    S = 96
    runs = [(1, list(range(60, 65))), (0, [31, 32, 33]), (2, [0, 1]), (3, [95])]
    slots = torch.tensor([slot for slot, ps in runs for _ in ps])
    positions = torch.tensor([p for _, ps in runs for p in ps])
    starts = torch.tensor([0, 5, 8, 10, 11])
    qkv, cos, sin, k_cache, v_cache, _ = random_step(dtype, len(slots), H, K, E, S, slots=4, positions=[0])
    step_k, step_v = k_cache.clone(), v_cache.clone()
    expected = torch.cat([
        kernels.decode_attention(qkv[i : i + 1], cos[i : i + 1], sin[i : i + 1], step_k[b : b + 1], step_v[b : b + 1], positions[i : i + 1], H, K, E**-0.5, *NO_SHARING)
        for i, b in enumerate(slots.tolist())
    ])
    got_k, got_v = k_cache.clone(), v_cache.clone()
    got = kernels.verify_attention(qkv, cos, sin, got_k, got_v, slots, positions, starts, H, K, E**-0.5)
    assert torch.equal(got, expected), (got.float() - expected.float()).abs().max()
    assert torch.equal(got_k, step_k) and torch.equal(got_v, step_v)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_rms_norm_kernel_rounds_as_torch_does(dtype):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(5, 3, 576, generator=g) * 3).to(dtype)
    w = (torch.rand(576, generator=g) + 0.5).to(dtype)
    got = kernels.rms_norm(x, w, 1e-5)
    expected = torch.nn.functional.rms_norm(x, (576,), w, 1e-5)
    assert got.shape == x.shape and got.dtype == dtype
    # fp32: summation order only; bf16: one rounding of nearly the same fp32 value, so at most one bf16 step apart
    close = torch.isclose(got.float(), expected.float(), rtol=1e-5, atol=1e-6) if dtype == torch.float32 else (got.float() - expected.float()).abs() <= expected.float().abs() * 2**-7 + 1e-6
    assert bool(close.all())
    if dtype == torch.bfloat16:
        assert (got == expected).float().mean() > 0.99


@needs_kernel
@pytest.mark.parametrize("B", [1, 3, 5, 7, 32])  # every row group the kernel has: 1, 3, 4 + 1, 4 + 3, 8 x 4
@pytest.mark.parametrize("N, K", [(960, 576), (7, 20)])  # SmolLM2's q|k|v; rows not a multiple of 4, K not of 8
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_bf16_linear_kernel_is_an_fp32_sum_of_the_bf16_weights(B, N, K, dtype):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(B, K, generator=g).to(dtype)
    w = (torch.randn(N, K, generator=g) * 0.05).bfloat16()
    bias = torch.randn(N, generator=g).to(dtype)
    residual = torch.randn(B, N, generator=g).to(dtype)
    exact = x.double() @ w.double().T
    for b, r, expected in [(None, None, exact), (bias, residual, exact + bias.double() + residual.double())]:
        got = kernels.linear_bf16(x, w, b, r, False)
        assert got.shape == (B, N) and got.dtype == dtype
        # the sum in fp32 (order aside), rounded once to x's dtype
        assert torch.allclose(got.double(), expected, rtol=2**-7 if dtype == torch.bfloat16 else 1e-5, atol=1e-4)
    # fp32 out (logits): the fp32 sum itself, whether x is fp32 or bf16 (AVX512-BF16's dot products
    # multiply bf16 pairs exactly and add them in fp32)
    got = kernels.linear_bf16(x, w, None, None, True)
    assert got.dtype == torch.float32 and torch.allclose(got.double(), exact, rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="bf16 weight"):
        kernels.linear_bf16(x, w.float(), None, None, False)


@needs_kernel
def test_a_bf16_linear_runs_on_onednn_where_it_packs_bf16_and_on_the_kernel_elsewhere():
    from hone.engine.llama import DOT_KERNEL_MAX_ROWS, KERNEL_MAX_ROWS, Linear

    weight = (torch.randn(64, 32) * 0.1).bfloat16()
    try:
        torch.ops.mkldnn._reorder_linear_weight(weight, 32)
        expected_mode = "onednn"  # AVX-512 or AMX: oneDNN has native bf16
    except RuntimeError:
        expected_mode = "kernel"  # AVX2: torch's own bf16 matmul would be the slow fallback
    linear = Linear(weight, torch.zeros(64, dtype=torch.bfloat16))
    assert linear.mode == expected_mode
    # with AVX512-BF16's dot products the kernel also takes calls of a few rows (a decode step)
    dot_products = expected_mode == "onednn" and kernels.bf16_dot_products()
    assert linear.kernel_rows == (DOT_KERNEL_MAX_ROWS if dot_products else KERNEL_MAX_ROWS if expected_mode == "kernel" else 0)
    for rows in (2, 5, DOT_KERNEL_MAX_ROWS + 1):  # the kernel's rows and, from DOT_KERNEL_MAX_ROWS, oneDNN's
        x, residual = torch.randn(2, rows, 32).bfloat16(), torch.randn(2, rows, 64).bfloat16()
        expected = (torch.nn.functional.linear(x.float(), weight.float()) + residual.float()).bfloat16()
        got = linear(x, residual=residual)
        assert got.shape == (2, rows, 64) and torch.allclose(got.float(), expected.float(), rtol=2**-6, atol=1e-2)


@needs_kernel
def test_a_bf16_head_on_the_kernel_gives_fp32_logits_only_its_weights_rounded(lively):
    from hone.engine.llama import LlamaRunner

    runners = {hd: LlamaRunner(lively, dtype=torch.float32, head_dtype=hd, max_slots=2, max_seq_len=64) for hd in (torch.float32, torch.bfloat16)}
    if runners[torch.bfloat16].head.mode != "kernel":
        pytest.skip("oneDNN packs bf16 here: its bf16 head rounds the logits to bf16")
    x = torch.randn(3, lively.config.hidden_size, generator=torch.Generator().manual_seed(0))
    exact, got = (runners[hd]._logits(x) for hd in (torch.float32, torch.bfloat16))
    assert got.dtype == torch.float32
    # the head's weights rounded to bf16, nothing else: the fp32 product of those weights
    rounded = runners[torch.float32]._norm(x, runners[torch.float32].norm) @ runners[torch.bfloat16].head.weight.float().T
    assert torch.allclose(got, rounded, atol=1e-5)
    assert (got.bfloat16().float() != got).float().mean() > 0.9  # logits with fp32's resolution, not bf16's
    assert (got - exact).abs().max() < 0.05 * exact.abs().max()


def test_a_tied_head_is_the_embedding_when_their_dtypes_agree(lively):
    from hone.engine.llama import LlamaRunner

    assert lively.get_output_embeddings().weight is lively.model.embed_tokens.weight  # the tiny model ties them
    same = LlamaRunner(lively, dtype=torch.float32, head_dtype=torch.float32, max_slots=2, max_seq_len=64)
    assert same.head.weight is same.embed  # one copy of the vocabulary's weights, not two
    apart = LlamaRunner(lively, dtype=torch.bfloat16, head_dtype=torch.float32, max_slots=2, max_seq_len=64)
    assert apart.head.weight.dtype == torch.float32 and apart.embed.dtype == torch.bfloat16


@needs_kernel
@pytest.mark.parametrize("slice_bytes", [None, 40 * 4 * 10], ids=["whole", "slices_of_10_rows"])
def test_a_bf16_linear_widens_its_weight_for_a_prefill_and_rounds_as_the_kernel_does(slice_bytes, monkeypatch):
    from hone.engine import llama
    from hone.engine.llama import KERNEL_MAX_ROWS, Linear

    if slice_bytes is not None:  # the LM head's case: widened a slice of rows at a time (48 = 4 x 10 + 8)
        monkeypatch.setattr(llama, "WIDEN_SLICE_BYTES", slice_bytes)

    g = torch.Generator().manual_seed(0)
    weight, bias = (torch.randn(48, 40, generator=g) * 0.1).bfloat16(), torch.randn(48, generator=g).bfloat16()
    linear = Linear(weight, bias)
    if linear.mode != "kernel":
        pytest.skip("oneDNN packs bf16 here")
    x, residual = torch.randn(KERNEL_MAX_ROWS + 3, 40, generator=g).bfloat16(), torch.randn(KERNEL_MAX_ROWS + 3, 48, generator=g).bfloat16()
    widened = linear(x, residual=residual)  # enough rows for torch's fp32 matmul
    rows = torch.cat([linear(x[i : i + 4], residual=residual[i : i + 4]) for i in range(0, len(x), 4)])  # the kernel's
    exact = (x.double() @ weight.double().T + bias.double() + residual.double())
    assert widened.dtype == torch.bfloat16 and widened.shape == rows.shape
    # both are fp32 sums rounded once to bf16: at most one bf16 step apart, and as close to the exact sum
    assert torch.allclose(widened.float(), rows.float(), rtol=2**-7, atol=1e-3)
    assert torch.allclose(widened.double(), exact, rtol=2**-8, atol=1e-3)


@needs_kernel
def test_a_bf16_head_gives_fp32_logits_on_the_kernel_and_widened_whatever_the_rows():
    from hone.engine.llama import KERNEL_MAX_ROWS, Linear

    g = torch.Generator().manual_seed(1)
    weight = (torch.randn(48, 40, generator=g) * 0.1).bfloat16()
    head = Linear(weight, fp32_out=True)
    assert head.mode == "kernel"  # never oneDNN's bf16 matmul, which would round the logits to bf16
    x = torch.randn(KERNEL_MAX_ROWS + 3, 40, generator=g).bfloat16()
    exact = x.double() @ weight.double().T
    for got in (head(x), torch.cat([head(x[i : i + 5]) for i in range(0, len(x), 5)])):  # widened; the kernel's rows
        assert got.dtype == torch.float32 and torch.allclose(got.double(), exact, rtol=1e-5, atol=1e-5)
