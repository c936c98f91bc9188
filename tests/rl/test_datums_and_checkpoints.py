import asyncio
import json

import pytest

from hone.monitor import MetricsLog
from hone.rl.checkpoints import CheckpointDir
from hone.rl.datums import datums_from_groups, datums_from_trajectory
from hone.rl.loop import tasks_for_step
from hone.rl.trajectory import SampledTurn, Trajectory, TrajectoryGroup


def turn(prompt, completion):
    return SampledTurn(prompt_tokens=prompt, completion_tokens=completion, completion_logprobs=[-0.5] * len(completion))


def test_a_prefix_stable_conversation_becomes_one_sequence_with_only_sampled_tokens_weighted():
    # turn 1: prompt [1,2] -> [3,4]; turn 2's prompt repeats all of that, adds tool output [5,6], samples [7]
    trajectory = Trajectory(turns=[turn([1, 2], [3, 4]), turn([1, 2, 3, 4, 5, 6], [7])])
    [datum] = datums_from_trajectory(trajectory, advantage=0.5)
    # whole sequence [1..7]; targets are tokens 2..7; weights mark 3,4,7
    assert datum.input_tokens == [1, 2, 3, 4, 5, 6]
    assert datum.target_tokens == [2, 3, 4, 5, 6, 7]
    assert datum.weights == [0, 1, 1, 0, 0, 1]
    assert datum.sampler_logprobs == [0, -0.5, -0.5, 0, 0, -0.5]
    assert datum.advantages == [0, 0.5, 0.5, 0, 0, 0.5]


def test_a_turn_whose_prompt_was_re_rendered_differently_becomes_its_own_sequence():
    trajectory = Trajectory(turns=[turn([1, 2], [3, 4]), turn([1, 2, 9, 4, 5], [7])])
    datums = datums_from_trajectory(trajectory, advantage=1.0)
    assert [d.input_tokens + d.target_tokens[-1:] for d in datums] == [[1, 2, 3, 4], [1, 2, 9, 4, 5, 7]]


def test_uniform_groups_carry_no_signal_and_are_dropped_and_counted():
    def group(rewards):
        return TrajectoryGroup(trajectories=[Trajectory(reward=r, turns=[turn([1], [2])]) for r in rewards])

    batch = datums_from_groups([group([1, 1, 1]), group([0, 1, 1]), group([0.5])])
    assert (batch.groups_used, batch.groups_dropped_zero_variance, batch.groups_dropped_too_small) == (1, 1, 1)
    # rewards [0,1,1], mean 2/3: advantages -2/3, 1/3, 1/3
    assert [round(d.advantages[0], 4) for d in batch.datums] == [-0.6667, 0.3333, 0.3333]


def test_checkpoints_keep_the_last_k_and_the_best(tmp_path):
    directory = CheckpointDir(tmp_path, keep_last=2, best_metric="reward/mean")

    async def save_trainer(path):
        path.mkdir()
        (path / "weights").write_text("w")

    for step, reward in enumerate([0.1, 0.9, 0.2, 0.3, 0.4], start=1):
        asyncio.run(directory.save(step, save_trainer, {"metrics": {"reward/mean": reward}}))
    assert [c.step for c in directory.all()] == [2, 4, 5]  # best (step 2) and the last two
    assert directory.latest().step == 5 and directory.best().step == 2


def test_a_half_written_checkpoint_is_invisible_and_cleaned_up(tmp_path):
    (tmp_path / ".step_000003.staging-x1y2").mkdir()  # killed while filling the staging folder
    (tmp_path / "step_000004").mkdir()  # no loop_state.json: never completed
    directory = CheckpointDir(tmp_path)
    assert directory.latest() is None
    assert not (tmp_path / ".step_000003.staging-x1y2").exists()


def test_a_checkpoint_whose_save_raises_leaves_the_earlier_one_of_that_step_whole(tmp_path):
    directory = CheckpointDir(tmp_path)

    async def save_trainer(path):
        path.mkdir()
        (path / "weights").write_text("first")

    async def failing_save_trainer(path):
        path.mkdir()
        (path / "weights").write_text("second, half")
        raise OSError("disk full")

    asyncio.run(directory.save(3, save_trainer, {"metrics": {}}))
    with pytest.raises(OSError, match="disk full"):
        asyncio.run(directory.save(3, failing_save_trainer, {"metrics": {}}))
    [checkpoint] = directory.all()
    assert (checkpoint.trainer_path / "weights").read_text() == "first"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000003"]  # no staging folder left


def test_a_kill_between_the_two_renames_of_a_swap_puts_the_old_checkpoint_back(tmp_path):
    # the swap renames step_000003 to .step_000003.old-XXXX, then staging to step_000003; killed in between
    old = tmp_path / ".step_000003.old-1a2b3c4d"
    old.mkdir()
    (old / "loop_state.json").write_text(json.dumps({"step": 3}))
    (tmp_path / ".step_000003.staging-q9").mkdir()
    directory = CheckpointDir(tmp_path)
    assert [c.step for c in directory.all()] == [3]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["step_000003"]


def test_metrics_after_the_resumed_step_are_dropped(tmp_path):
    log = MetricsLog(tmp_path / "metrics.jsonl")
    for step in (1, 2, 3):
        log.append(step, {"reward/mean": step / 10})
    with open(log.path, "a") as f:
        f.write('{"step": 4, "rew')  # killed mid-write
    log.truncate_after(2)
    assert [r["step"] for r in log.read()] == [1, 2]
    assert json.loads(log.path.read_text().splitlines()[-1])["step"] == 2


def test_each_step_sees_the_same_tasks_on_every_run_and_every_task_once_per_epoch():
    tasks = list(range(10))
    first_epoch = [t for step in range(5) for t in tasks_for_step(tasks, step, 2, seed=7)]
    assert sorted(first_epoch) == tasks
    assert tasks_for_step(tasks, 3, 2, seed=7) == tasks_for_step(tasks, 3, 2, seed=7)
    assert tasks_for_step(tasks, 0, 10, seed=1) != tasks_for_step(tasks, 0, 10, seed=2)
