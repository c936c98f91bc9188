"""Group-relative advantages (GRPO), and how to tell that a group carries no signal.

1. Advantage = reward − the group's mean reward. No value function, no discounting: every token
   of an attempt gets its attempt's advantage.
2. Dividing by the group's reward std (the GRPO paper's default) is optional and off by default:
   Dr. GRPO (arXiv 2503.20783) showed it up-weights groups that are nearly all right or all
   wrong. The std is the population std (divide by G), plus `eps` so a near-uniform group cannot
   blow up.
3. A group whose rewards are all equal has all-zero advantages: it costs compute and teaches
   nothing, so callers drop it and count it (`is_zero_variance`).
"""

from __future__ import annotations

import math


def group_advantages(rewards_G: list[float], scale_by_std: bool = False, eps: float = 1e-6) -> list[float]:
    """Per-attempt advantages for one group: reward − mean, optionally / (std + eps)."""
    if is_zero_variance(rewards_G):
        return [0.0] * len(rewards_G)  # exact zeros, not the float noise of r - mean(r)
    mean = sum(rewards_G) / len(rewards_G)
    advantages_G = [r - mean for r in rewards_G]
    if scale_by_std:
        std = math.sqrt(sum(a * a for a in advantages_G) / len(advantages_G))
        advantages_G = [a / (std + eps) for a in advantages_G]
    return advantages_G


def is_zero_variance(rewards_G: list[float], tolerance: float = 1e-9) -> bool:
    """True when every reward in the group is the same (within `tolerance`): no learning signal."""
    if not rewards_G:
        return True
    return max(rewards_G) - min(rewards_G) <= tolerance
