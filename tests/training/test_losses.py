"""Each built-in loss against a hand computation, gradients included.

The batch: two sequences of three tokens, with ratios r = exp(lp - q) chosen by hand.

    A: lp = [-1.0, -2.0, -0.5]  r = [1.0, 1.5, (unused)]  w = [1, 1, 0]  A = [ 2,  2,  2]
    B: lp = [-0.3, -1.2, -2.0]  r = [0.7, 1.1, 5.0]       w = [1, 1, 1]  A = [-1, -1, -1]

A's last token has weight 0 and an absurd sampler logprob (-1e4, so exp(lp - q) overflows): it
must not leak into any value or gradient. token_mean divides by 5 weighted tokens;
sequence_mean averages A's 2-token mean and B's 3-token mean.
"""

from __future__ import annotations

import math

import pytest
import torch

from hone.errors import InvalidRequestError
from hone.training.losses import LOSSES, LossConfig, cispo, cross_entropy, get_loss, importance_sampling, ppo
from hone.types import Datum

LP_A = [-1.0, -2.0, -0.5]
LP_B = [-0.3, -1.2, -2.0]
R_A = [1.0, 1.5]
R_B = [0.7, 1.1, 5.0]


def _batch():
    q_a = [LP_A[0] - math.log(R_A[0]), LP_A[1] - math.log(R_A[1]), -1e4]
    q_b = [lp - math.log(r) for lp, r in zip(LP_B, R_B)]
    datums = [
        Datum(input_tokens=[1, 2, 3], target_tokens=[2, 3, 4], weights=[1, 1, 0], sampler_logprobs=q_a, advantages=[2.0] * 3),
        Datum(input_tokens=[5, 6, 7], target_tokens=[6, 7, 8], weights=[1, 1, 1], sampler_logprobs=q_b, advantages=[-1.0] * 3),
    ]
    logprobs = [torch.tensor(LP_A, requires_grad=True), torch.tensor(LP_B, requires_grad=True)]
    return logprobs, datums


def _run(loss_fn, config=LossConfig()):
    logprobs, datums = _batch()
    loss, metrics = loss_fn(logprobs, datums, config)
    loss.backward()
    return loss.item(), [lp.grad.tolist() for lp in logprobs], metrics


def _close(actual, expected, tol=1e-5):
    assert actual == pytest.approx(expected, abs=tol)


def test_cross_entropy_is_the_mean_negative_logprob_over_weighted_tokens():
    loss, (grad_a, grad_b), _ = _run(cross_entropy)
    # -(-1 - 2 - 0.3 - 1.2 - 2.0) / 5 = 6.5 / 5
    _close(loss, 1.3)
    _close(grad_a, [-0.2, -0.2, 0.0])  # d/dlp = -w / 5
    _close(grad_b, [-0.2, -0.2, -0.2])


def test_cross_entropy_sequence_mean_averages_each_sequence_mean():
    loss, (grad_a, grad_b), _ = _run(cross_entropy, LossConfig(aggregation="sequence_mean"))
    # A: 3/2 = 1.5, B: 3.5/3; mean of the two
    _close(loss, (1.5 + 3.5 / 3) / 2)
    _close(grad_a, [-0.25, -0.25, 0.0])  # -1 / (2 tokens * 2 sequences)
    _close(grad_b, [-1 / 6] * 3)  # -1 / (3 tokens * 2 sequences)


def test_importance_sampling_is_minus_ratio_times_advantage_unclipped():
    loss, (grad_a, grad_b), metrics = _run(importance_sampling)
    # per token -r*A: A: -2, -3; B: 0.7, 1.1, 5.0 -> sum 1.8 -> / 5
    _close(loss, 0.36)
    # d(-r*A)/dlp = -r*A, / 5
    _close(grad_a, [-0.4, -0.6, 0.0])
    _close(grad_b, [0.14, 0.22, 1.0])
    _close(metrics["ratio_mean"], (1.0 + 1.5 + 0.7 + 1.1 + 5.0) / 5)


def test_ppo_clips_on_both_sides_and_zeroes_the_gradient_of_clipped_tokens():
    loss, (grad_a, grad_b), metrics = _run(ppo)  # range [0.8, 1.28]
    # A0 r=1.0 A=+2: min(2, 2) = 2        -> -2     grad -r*A = -2
    # A1 r=1.5 A=+2: min(3, 1.28*2=2.56)  -> -2.56  clipped above, grad 0
    # B0 r=0.7 A=-1: min(-0.7, -0.8)      -> +0.8   clipped below, grad 0
    # B1 r=1.1 A=-1: min(-1.1, -1.1)      -> +1.1   grad 1.1
    # B2 r=5.0 A=-1: min(-5, -1.28)       -> +5.0   unclipped side, grad 5
    _close(loss, (-2 - 2.56 + 0.8 + 1.1 + 5.0) / 5)
    _close(grad_a, [-0.4, 0.0, 0.0])
    _close(grad_b, [0.0, 0.22, 1.0])
    _close(metrics["clip_fraction"], 2 / 5)  # A1 and B0
    _close(metrics["ratio_mean"], 9.3 / 5)


def test_ppo_with_sequence_ratio_uses_the_geometric_mean_of_token_ratios():
    config = LossConfig(ratio_level="sequence", aggregation="sequence_mean")
    loss, (grad_a, grad_b), _ = _run(ppo, config)
    r_a = math.sqrt(1.5)  # (1.0 * 1.5) ** (1/2) = 1.2247: inside [0.8, 1.28]
    r_b = (0.7 * 1.1 * 5.0) ** (1 / 3)  # 1.5672: above 1.28, A < 0 so the unclipped -r*A is the min
    # A: every token -r_a*2; B: every token +r_b; sequence_mean = mean of the two
    _close(loss, (-2 * r_a + r_b) / 2)
    # d r_a / d lp_t = r_a * (1/2): A's loss -2 r_a, halved by the mean over 2 sequences -> -r_a/2
    _close(grad_a, [-r_a / 2, -r_a / 2, 0.0])
    # d r_b / d lp_t = r_b / 3, halved -> r_b / 6
    _close(grad_b, [r_b / 6] * 3)


def test_cispo_weights_the_logprob_gradient_by_the_detached_ratio_truncated_at_four():
    loss, (grad_a, grad_b), metrics = _run(cispo)  # coefficient clip(r, 0, 4): 1, 1.5 | 0.7, 1.1, 4
    # per token -c*A*lp: A: 2, 6; B: -0.21, -1.32, -8 -> sum -1.53 -> / 5
    _close(loss, -1.53 / 5)
    # d/dlp = -c*A / 5
    _close(grad_a, [-0.4, -0.6, 0.0])
    _close(grad_b, [0.14, 0.22, 0.8])
    _close(metrics["clip_fraction"], 1 / 5)  # B2 (r = 5 > 4)


def test_cispo_with_a_lower_bound_and_sequence_mean():
    config = LossConfig(cispo_ratio_min=0.8, cispo_ratio_max=1.2, aggregation="sequence_mean")
    loss, (grad_a, grad_b), metrics = _run(cispo, config)  # c: 1, 1.2 | 0.8, 1.1, 1.2
    # A: (-1*2*-1 + -1.2*2*-2) / 2 = (2 + 4.8) / 2 = 3.4
    # B: (-0.8*-1*-0.3 + -1.1*-1*-1.2 + -1.2*-1*-2.0) / 3 = (-0.24 - 1.32 - 2.4) / 3 = -1.32
    _close(loss, (3.4 - 1.32) / 2)
    _close(grad_a, [-2 / 4, -2.4 / 4, 0.0])  # -c*A / (2 tokens * 2 sequences)
    _close(grad_b, [0.8 / 6, 1.1 / 6, 1.2 / 6])  # -c*A / (3 tokens * 2 sequences)
    _close(metrics["clip_fraction"], 3 / 5)  # A1 (1.5), B0 (0.7), B2 (5.0)


def test_sampler_kl_metrics_are_k1_and_k3_over_weighted_tokens():
    _, _, metrics = _run(cispo)
    log_r = [math.log(r) for r in R_A + R_B]
    _close(metrics["kl_sampler_trainer"], -sum(log_r) / 5)  # mean of q - lp = -log r
    _close(metrics["kl_sampler_trainer_k3"], sum(math.exp(x) - 1 - x for x in log_r) / 5)


def test_rl_losses_refuse_datums_without_advantages():
    logprobs, datums = _batch()
    datums[1].advantages = None
    with pytest.raises(InvalidRequestError, match="advantages"):
        cispo(logprobs, datums, LossConfig())


def test_get_loss_returns_builtins_by_name_and_custom_callables_unchanged():
    assert get_loss("ppo") is ppo
    custom = lambda logprobs, datums, config: (sum(lp.sum() for lp in logprobs), {})  # noqa: E731
    assert get_loss(custom) is custom
    assert set(LOSSES) == {"cross_entropy", "importance_sampling", "ppo", "cispo"}


def test_unknown_loss_name_is_an_invalid_request_that_lists_the_valid_ones():
    with pytest.raises(InvalidRequestError, match="cispo, cross_entropy, importance_sampling, ppo"):
        get_loss("grpo")


def test_a_batch_with_nothing_weighted_has_zero_loss_and_zero_gradient():
    logprobs, datums = _batch()
    for datum in datums:
        datum.weights = [0.0] * 3
    loss, _ = cispo(logprobs, datums, LossConfig())
    loss.backward()
    assert loss.item() == 0.0
    assert all(lp.grad.abs().sum() == 0 for lp in logprobs)
