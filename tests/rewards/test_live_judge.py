"""The embedded model as a judge, served by a real `hone serve` process: judging completes.

A 135M judge is weak, so this checks only the plumbing: one score in [0, 1] per attempt, and the
call's tokens accounted. How well a judge ranks is measured by bench/judge_agreement.py.
"""

import asyncio

import pytest

from hone.rewards import JudgeConfig, judge_group
from hone.rl.trajectory import TrajectoryGroup

from ..serving import start_hone_serve


@pytest.mark.slow
def test_the_embedded_model_served_by_hone_judges_a_group_with_one_score_in_range_per_attempt(attempt, tmp_path):
    process, port = start_hone_serve()
    try:
        group = TrajectoryGroup(
            trajectories=[
                attempt("Archive the email from spam@ads.com.", "I archived the email from spam@ads.com."),
                attempt("Archive the email from spam@ads.com.", "I don't know how."),
                attempt("Archive the email from spam@ads.com.", "Done, and I also deleted every other email."),
            ]
        )
        config = JudgeConfig(
            base_url=f"http://127.0.0.1:{port}/v1", model="smollm2-135m", max_tokens=200, cache_dir=str(tmp_path), max_retries=3
        )
        result = asyncio.run(judge_group(group, config))
        assert len(result.scores) == 3 and all(0.0 <= s <= 1.0 for s in result.scores)
        assert group.rewards == result.scores
        assert result.prompt_tokens > 0
        assert result.calls == 1 and result.retries == 0  # the schema is enforced: the first answer parses
    finally:
        process.terminate()
        process.wait(timeout=30)
