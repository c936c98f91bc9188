"""A toy environment the tiny random model can learn in seconds: write tokens from a target set.

Reward is the fraction of sampled tokens whose id is a multiple of 8 (about 1 in 8 of the
vocabulary, so a random model scores ~0.125). `hone train tests/rl/toy_env.py` finds make_env().
"""

from __future__ import annotations

from hone.rl.trajectory import Trajectory


class ToyEnv:
    name = "toy"

    def __init__(self, max_tokens: int = 8):
        self.max_tokens = max_tokens
        self._tasks = [f"Write something, please ({i})." for i in range(16)]

    def train_tasks(self):
        return self._tasks

    def eval_tasks(self):
        return self._tasks

    async def rollout(self, client, model, task, *, seed, temperature):
        messages = [{"role": "user", "content": task}]
        trajectory = Trajectory(messages=list(messages))
        response = await client.chat.completions.create(
            model=model, messages=messages, max_tokens=self.max_tokens, temperature=temperature, seed=seed
        )
        trajectory.add_response(response)
        tokens = trajectory.turns[-1].completion_tokens
        trajectory.reward = sum(t % 8 == 0 for t in tokens) / max(len(tokens), 1)
        return trajectory


def make_env() -> ToyEnv:
    return ToyEnv()
