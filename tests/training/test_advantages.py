import math

import pytest

from hone.training.advantages import group_advantages, is_zero_variance


def test_advantage_is_reward_minus_group_mean():
    # mean of [1, 0, 0, 1] is 0.5
    assert group_advantages([1.0, 0.0, 0.0, 1.0]) == [0.5, -0.5, -0.5, 0.5]


def test_std_scaling_divides_by_the_population_std():
    # mean 2, deviations [-1, 0, 1], population std sqrt(2/3)
    std = math.sqrt(2 / 3)
    assert group_advantages([1.0, 2.0, 3.0], scale_by_std=True, eps=0.0) == pytest.approx([-1 / std, 0.0, 1 / std])


def test_a_uniform_group_has_zero_variance_and_zero_advantages():
    assert is_zero_variance([0.7, 0.7, 0.7])
    assert not is_zero_variance([0.7, 0.7, 0.8])
    assert group_advantages([0.7, 0.7, 0.7], scale_by_std=True) == pytest.approx([0.0, 0.0, 0.0])
