"""Rollouts against a real `hone serve --home`: captured through RemoteBackend, scoped to the tenant
that opened them, 404 once unknown or closed, and a captured environment trains over the wire."""

from __future__ import annotations

import asyncio

import openai
import pytest

from hone.errors import ModelNotFoundError
from hone.rl.loop import RunConfig, run_training
from hone.rl.model import TrainableModel

HELLO = [{"role": "user", "content": "hi"}]


async def two_turns(base_url: str, api_key: str, model: str, prompt: str, seed: int | None = 0, temperature: float = 1.0) -> list:
    """A plain `openai` agent: an answer, a follow-up, another answer. Returns its responses."""
    client = openai.AsyncOpenAI(base_url=base_url, api_key=api_key, max_retries=2)
    messages, responses = [{"role": "user", "content": prompt}], []
    for turn in range(2):
        response = await client.chat.completions.create(
            model=model, messages=messages, max_tokens=4, temperature=temperature, seed=None if seed is None else seed + turn
        )
        responses.append(response)
        messages.append(response.choices[0].message.model_dump(exclude_none=True))
        messages.append({"role": "user", "content": "And then?"})
    return responses


def test_a_capture_through_remote_backend_records_the_agents_own_client(server):
    backend = server.remote()
    model = TrainableModel("agent", "tiny", backend, lora_rank=0)

    async def play():
        async with model.capture(task_id="t1", source="test") as rollout:
            assert rollout.base_url == f"{server.url}/v1/rollouts/{rollout.id}"
            responses = await two_turns(rollout.base_url, rollout.api_key, rollout.model, "Hello there")
            rollout.reward = 0.5
        return rollout, responses

    rollout, responses = asyncio.run(play())
    trajectory = rollout.trajectory
    assert len(trajectory.turns) == 2
    assert trajectory.metadata == {"rollout_id": rollout.id, "task_id": "t1", "turns_bridged": 1, "turns_broken": 0, "source": "test"}
    assert trajectory.reward == 0.5
    for response, turn in zip(responses, trajectory.turns):
        assert response.choices[0].model_extra["token_ids"] == turn.completion_tokens
    first, second = trajectory.turns
    assert second.prompt_tokens[: len(first.prompt_tokens) + len(first.completion_tokens)] == first.prompt_tokens + first.completion_tokens
    backend.close()


def test_another_tenants_key_gets_404_on_a_rollout_and_leaves_it_untouched(server):
    alice_key, bob_key = server.new_key(), server.new_key()
    alice, bob = server.http(alice_key), server.http(bob_key)
    created = alice.post("/v1/hone/models", json={"name": "private", "base_model": "tiny", "lora_rank": 0})
    assert created.status_code == 200, created.text
    opened = alice.post("/v1/rollouts", json={"model": "private", "task_id": "secret-task"})
    assert opened.status_code == 200, opened.text
    rollout_id = opened.json()["id"]
    chat = {"model": "private", "messages": HELLO, "max_tokens": 3}
    assert alice.post(f"/v1/rollouts/{rollout_id}/chat/completions", json=chat).status_code == 200
    before = alice.get(f"/v1/rollouts/{rollout_id}").json()
    assert before["status"] == "open" and len(before["calls"]) == 1

    nosuch = "rollout-" + "0" * 24
    for method, suffix, body in [
        ("GET", "", None), ("DELETE", "", None), ("POST", "/chat/completions", chat), ("GET", "/models", None),
        ("POST", "/responses", {"model": "private", "input": "hi", "max_output_tokens": 3}),
    ]:  # fmt: skip
        theirs = bob.request(method, f"/v1/rollouts/{rollout_id}{suffix}", json=body)
        missing = bob.request(method, f"/v1/rollouts/{nosuch}{suffix}", json=body)
        assert theirs.status_code == missing.status_code == 404, (method, suffix, theirs.text)
        error = theirs.json()["error"]
        assert error["type"] == "not_found_error" and error["code"] == "rollout_not_found"
        # answered exactly as an id that never existed: nothing says the rollout is someone's
        assert error["message"].replace(rollout_id, nosuch) == missing.json()["error"]["message"]
    with pytest.raises(openai.NotFoundError):
        openai.OpenAI(base_url=f"{server.url}/v1/rollouts/{rollout_id}", api_key=bob_key, max_retries=0).chat.completions.create(**chat)
    # nor can bob open a rollout on alice's model
    assert bob.post("/v1/rollouts", json={"model": "private"}).status_code == 404

    after = alice.get(f"/v1/rollouts/{rollout_id}").json()
    assert after == before  # still open, still one call: bob's DELETE and chats did nothing
    closed = alice.delete(f"/v1/rollouts/{rollout_id}").json()
    assert closed["status"] == "closed" and closed["calls"] == before["calls"]


def test_unknown_and_closed_rollouts_are_404_with_a_clear_message(server):
    key = server.new_key()
    backend = server.remote(key)
    model = TrainableModel("m", "tiny", backend, lora_rank=0)

    async def scenario():
        with pytest.raises(ModelNotFoundError) as unknown:
            await backend.close_rollout("rollout-nosuch")
        async with model.capture() as rollout:
            client = rollout.openai_client(max_retries=0)
            await client.chat.completions.create(model=model.name, messages=HELLO, max_tokens=2)
        # a retried close answers the record again
        again = await backend.close_rollout(rollout.id)
        assert again["status"] == "closed" and len(again["calls"]) == 1
        with pytest.raises(openai.NotFoundError) as closed:  # a client kept past the block
            await client.chat.completions.create(model=model.name, messages=HELLO, max_tokens=2)
        with pytest.raises(ModelNotFoundError):
            await backend.open_rollout("nosuch-model")
        return str(unknown.value), closed.value

    unknown, closed = asyncio.run(scenario())
    assert unknown == "the rollout 'rollout-nosuch' does not exist; open one with POST /v1/rollouts (model.capture() in Python)"
    assert closed.status_code == 404 and "was closed" in str(closed)
    response = server.http(key).get("/v1/rollouts/rollout-nosuch")
    assert response.status_code == 404 and response.json()["error"]["code"] == "rollout_not_found"
    backend.close()


class EchoEnv:
    """A CapturedEnvironment whose agent builds its own client from the rollout's URL and key."""

    name = "echo"

    def __init__(self):
        self.attempts: dict[str, int] = {}

    def train_tasks(self):
        return [{"id": f"e{i}", "prompt": f"Say something ({i})."} for i in range(4)]

    def eval_tasks(self):
        return self.train_tasks()

    async def run_agent(self, rollout, task, *, seed, temperature):
        responses = await two_turns(rollout.base_url, rollout.api_key, rollout.model, task["prompt"], seed, temperature)
        assert len(responses) == 2
        attempt = self.attempts[task["id"]] = self.attempts.get(task["id"], -1) + 1
        return float(attempt % 2)  # a group of two attempts scores 0 and 1: always something to learn


def test_run_training_of_a_captured_environment_over_remote_backend(server, tmp_path):
    backend = server.remote()
    config = RunConfig(
        out_dir=str(tmp_path), base_model="tiny", steps=1, groups_per_step=2, group_size=2,
        learning_rate=1e-3, lora_rank=0, concurrency=2, show_progress=False,
    )  # fmt: skip
    result = asyncio.run(run_training(EchoEnv(), config, backend=backend))
    [line] = result.history
    assert line["step"] == 1 and line["rollouts/ok"] == 4.0 and line["rollouts/failed"] == 0.0
    assert line["turns/bridged"] == 4.0 and line["turns/broken"] == 0.0
    assert line["train/skipped"] == 0.0 and line["train/datums"] == 4.0  # one bridged sequence per capture
    assert backend.model_info("policy").step == 1
    assert (tmp_path / "checkpoints" / "step_000001").is_dir()
    backend.close()


def test_the_agent_gets_a_key_that_reaches_its_rollout_alone(server):
    """Agent code is handed a rollout's own key, never the tenant's: it samples through that rollout
    and gets a 403 anywhere else (training, other rollouts, the plain routes); once the rollout is
    closed, its calls are a 404 saying so, as for the tenant's key."""
    import httpx

    tenant_key = server.new_key()
    backend = server.remote(tenant_key)
    model = TrainableModel("keyed", "tiny", backend, lora_rank=0)

    async def scenario():
        async with model.capture() as other:
            other_id = other.id
            async with model.capture() as rollout:
                key = rollout.api_key
                assert key != tenant_key and key.startswith("hone-rollout-")
                await two_turns(rollout.base_url, key, rollout.model, "Hi")
                async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {key}"}) as http:
                    assert (await http.get(f"/v1/rollouts/{rollout.id}/models")).status_code == 200
                    refused = [
                        await http.get("/v1/hone/models"),
                        await http.post("/v1/hone/models/keyed/optim_step", json={"learning_rate": 1e-3}),
                        await http.post("/v1/chat/completions", json={"model": "keyed", "messages": HELLO, "max_tokens": 2}),
                        await http.get(f"/v1/rollouts/{rollout.id}"),  # the record is the owner's
                        await http.delete(f"/v1/rollouts/{rollout.id}"),
                        await http.post(f"/v1/rollouts/{other_id}/chat/completions", json={"model": "keyed", "messages": HELLO, "max_tokens": 2}),
                    ]
            async with httpx.AsyncClient(base_url=server.url, headers={"Authorization": f"Bearer {key}"}) as http:
                after_close = await http.post(f"/v1/rollouts/{rollout.id}/chat/completions", json={"model": "keyed", "messages": HELLO, "max_tokens": 2})
        return rollout, refused, after_close

    rollout, refused, after_close = asyncio.run(scenario())
    assert len(rollout.trajectory.turns) == 2  # the refused requests recorded nothing
    for response in refused:
        assert response.status_code == 403, response.text
        error = response.json()["error"]
        assert error["code"] == "key_out_of_scope" and f"/v1/rollouts/{rollout.id}/" in error["message"]
    assert after_close.status_code == 404 and "was closed" in after_close.json()["error"]["message"]
    backend.close()
