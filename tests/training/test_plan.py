"""Batch planning on plain datums: no model, no tensors. Only `input_tokens` matter to the plan."""

import random

from hone.training.plan import Unit, padded_cost, plan_micro_batches, prefix_groups, split_group
from hone.types import Datum


def datum(tokens: list[int]) -> Datum:
    return Datum(input_tokens=tokens, target_tokens=tokens[1:] + [0], weights=[1.0] * len(tokens))


def group(prompt: list[int], suffix_lengths: list[int], first: int = 100) -> list[Datum]:
    """Datums sharing `prompt`, each suffix starting with its own token so the shared part is exactly the prompt."""
    return [datum(prompt + [first + k] + [7] * (n - 1)) for k, n in enumerate(suffix_lengths)]


def planned(plan: list[list[Unit]]) -> list[int]:
    return sorted(i for micro_batch in plan for unit in micro_batch for i in unit.indices)


def test_a_group_sharing_a_prompt_becomes_one_unit_whose_prefix_runs_once():
    datums = group([1] * 20, [4, 4, 4, 4])  # 4 datums of 20 + 4 = 24 tokens
    plan = plan_micro_batches(datums, micro_batch_tokens=1000, min_shared_prefix=16)
    assert plan == [[Unit([0, 1, 2, 3], prefix_len=20)]]
    # the prefix once plus 4 suffixes: 20 + 4 * 4 = 36 tokens, where 4 padded rows would be 4 * 24 = 96
    assert padded_cost(plan[0], datums) == 36
    assert padded_cost([Unit([i]) for i in range(4)], datums) == 96


def test_datums_sharing_fewer_than_min_shared_prefix_tokens_run_alone():
    datums = group([1] * 10, [4, 4, 4])  # they share 10 tokens, fewer than 16
    assert prefix_groups(datums, min_shared_prefix=16) == [Unit([0]), Unit([1]), Unit([2])]
    assert prefix_groups(datums, min_shared_prefix=10) == [Unit([0, 1, 2], prefix_len=10)]


def test_min_shared_prefix_zero_turns_sharing_off():
    datums = group([1] * 20, [4, 4])
    assert plan_micro_batches(datums, micro_batch_tokens=1000, min_shared_prefix=0) == [[Unit([0]), Unit([1])]]


def test_every_suffix_keeps_at_least_one_token():
    # one datum is the prompt itself, another extends it: the shared part is cut to 20 - 1 = 19 tokens
    datums = [datum([1] * 20), datum([1] * 20 + [5, 6])]
    assert prefix_groups(datums, min_shared_prefix=16) == [Unit([0, 1], prefix_len=19)]


def test_a_neighbour_that_would_shrink_the_shared_prefix_too_much_starts_a_new_group():
    pair = group([1] * 16 + [2] * 84, [10, 10])  # two datums sharing 100 tokens
    stranger = datum([1] * 16 + [3] * 20)  # shares only 16 with them; sorts after them
    # joining it: G = 2, common = 16, prefix = 100, and G * common = 32 < (G - 1) * prefix = 100:
    # the group would save 16 tokens per extra member instead of 100, so it stays out
    assert prefix_groups(pair + [stranger], min_shared_prefix=16) == [Unit([0, 1], prefix_len=100), Unit([2])]


def test_singles_are_packed_longest_first_within_micro_batch_tokens():
    datums = [datum([1] * 10), datum([2] * 8), datum([3] * 10), datum([4] * 5)]
    plan = plan_micro_batches(datums, micro_batch_tokens=25, min_shared_prefix=0)
    # longest first: 10, 10, 8, 5. [10, 10] costs 2 * 10 = 20 ≤ 25; adding 8 would cost 3 * 10 = 30 > 25,
    # so 8 opens a new micro-batch; [8, 5] costs 2 * 8 = 16 ≤ 25
    assert plan == [[Unit([0]), Unit([2])], [Unit([1]), Unit([3])]]
    assert [padded_cost(mb, datums) for mb in plan] == [20, 16]


def test_a_group_too_big_for_one_micro_batch_splits_into_groups_with_the_same_prefix():
    datums = group([1] * 20, [10] * 6)  # 6 datums of 30 tokens
    whole = Unit(list(range(6)), prefix_len=20)
    assert padded_cost([whole], datums) == 80  # 20 + 6 * 10 > 50
    # (50 - 20) // 10 = 3 members per part, each part 20 + 3 * 10 = 50 ≤ 50
    parts = split_group(whole, datums, micro_batch_tokens=50)
    assert parts == [Unit([0, 1, 2], prefix_len=20), Unit([3, 4, 5], prefix_len=20)]
    plan = plan_micro_batches(datums, micro_batch_tokens=50, min_shared_prefix=16)
    assert plan == [[parts[0]], [parts[1]]]  # together they would cost 100 > 50


def test_a_group_whose_parts_would_hold_fewer_than_two_members_runs_as_singles():
    datums = group([1] * 20, [10] * 3)
    # (35 - 20) // 10 = 1 member per part: no sharing left, so each datum runs alone
    assert split_group(Unit([0, 1, 2], prefix_len=20), datums, micro_batch_tokens=35) == [Unit([0]), Unit([1]), Unit([2])]


def test_a_datum_longer_than_micro_batch_tokens_runs_alone():
    datums = [datum([1] * 40), datum([2] * 5), datum([3] * 5)]
    plan = plan_micro_batches(datums, micro_batch_tokens=16, min_shared_prefix=0)
    # 40 > 16 alone; then 5 + 5 padded to 2 * 5 = 10 ≤ 16
    assert plan == [[Unit([0])], [Unit([1]), Unit([2])]]


def test_random_batches_plan_every_datum_once_within_budget_and_groups_share_their_prefix():
    rng = random.Random(0)
    shared = 0
    for trial in range(200):
        datums = []
        for g in range(rng.randint(1, 4)):  # GRPO-like groups, each with its own prompt
            prompt = [rng.randint(1, 9) for _ in range(rng.randint(1, 40))]
            datums += group(prompt, [rng.randint(1, 12) for _ in range(rng.randint(1, 6))], first=100 + 10 * g)
        datums += [datum([rng.randint(1, 9) for _ in range(rng.randint(1, 30))]) for _ in range(rng.randint(0, 4))]
        rng.shuffle(datums)
        budget, min_shared = rng.choice([16, 48, 128, 4096]), rng.choice([0, 4, 16])
        plan = plan_micro_batches(datums, micro_batch_tokens=budget, min_shared_prefix=min_shared)

        assert planned(plan) == list(range(len(datums))), trial  # every datum exactly once
        for micro_batch in plan:
            # within budget, unless one unit alone is bigger than it (it then runs alone)
            assert padded_cost(micro_batch, datums) <= budget or len(micro_batch) == 1, trial
            for unit in micro_batch:
                if unit.prefix_len == 0:
                    assert len(unit.indices) == 1, trial
                    continue
                assert len(unit.indices) >= 2 and unit.prefix_len >= min_shared > 0, trial
                shared += 1
                prefixes = {tuple(datums[i].input_tokens[: unit.prefix_len]) for i in unit.indices}
                assert len(prefixes) == 1, trial  # the members really share those tokens
                assert all(len(datums[i].input_tokens) > unit.prefix_len for i in unit.indices), trial
    assert shared > 100  # the checks above did see many shared-prefix groups
