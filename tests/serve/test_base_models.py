"""Every tenant of `hone serve --home` sees the server's base models and may sample them, read-only:
an off-the-shelf OpenAI client works with a fresh key before any model is created."""

from __future__ import annotations

from .conftest import greedy


def test_a_fresh_tenant_lists_and_chats_with_the_base_model(server):
    key = server.new_key()
    assert [m.id for m in server.openai(key).models.list().data] == ["tiny"]
    reply = server.openai(key).chat.completions.create(model="tiny", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert reply.choices[0].message is not None and reply.usage.completion_tokens >= 1


def test_the_base_model_can_be_sampled_but_not_trained_nor_shadowed(server):
    client = server.http(server.new_key())
    assert len(greedy(client, "tiny")) >= 1  # the low-level sample route too
    trained = client.post("/v1/hone/models/tiny/optim_step", json={})
    assert trained.status_code == 404  # not one of the tenant's models: nothing to train
    shadow = client.post("/v1/hone/models", json={"name": "tiny", "base_model": "tiny", "lora_rank": 0})
    assert shadow.status_code == 409 and "base model" in shadow.json()["error"]["message"]
