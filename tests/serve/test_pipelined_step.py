"""An optim_step sent `after` a forward_backward, before it: the server runs the two in order, so a
client can submit both at once and pay one round trip per step."""

from __future__ import annotations

import threading

from .conftest import create_model, datum, greedy


def test_an_optim_step_that_arrives_first_waits_for_its_forward_backward(server):
    client = server.http(server.new_key())
    create_model(client, "piped")
    before = greedy(client, "piped")
    answers: dict[str, object] = {}

    def optim_step() -> None:
        answers["optim"] = client.post("/v1/hone/models/piped/optim_step", json={"adam": {"learning_rate": 0.05}, "request_id": "o-1", "after": "fb-1"})

    early = threading.Thread(target=optim_step)
    early.start()
    early.join(timeout=0.3)  # within the server's 1 s for the forward_backward to arrive
    assert early.is_alive(), "the optim_step should be waiting for forward_backward fb-1"
    fb = client.post("/v1/hone/models/piped/forward_backward", json={"datums": [datum()], "request_id": "fb-1"})
    early.join(timeout=60)
    assert fb.status_code == 200 and answers["optim"].status_code == 200, answers["optim"].text
    assert answers["optim"].json()["step"] == 1
    assert greedy(client, "piped") != before  # the step used fb-1's gradients


def test_an_optim_step_after_a_failed_forward_backward_is_refused_not_applied(server):
    client = server.http(server.new_key())
    create_model(client, "piped-bad")
    bad = dict(datum(), input_tokens=[10**9] * 5)  # not in the vocabulary: refused before any compute
    assert client.post("/v1/hone/models/piped-bad/forward_backward", json={"datums": [bad], "request_id": "fb-bad"}).status_code == 400
    optim = client.post("/v1/hone/models/piped-bad/optim_step", json={"request_id": "o-bad", "after": "fb-bad"})
    assert optim.status_code == 409 and "no accumulated gradients" in optim.json()["error"]["message"]
    [model] = [m for m in client.get("/v1/hone/models").json()["data"] if m["name"] == "piped-bad"]
    assert model["step"] == 0


def test_an_optim_step_after_a_forward_backward_that_never_arrives_is_refused_within_a_second(server):
    client = server.http(server.new_key())
    create_model(client, "piped-lost")
    optim = client.post("/v1/hone/models/piped-lost/optim_step", json={"request_id": "o-lost", "after": "fb-never"})
    assert optim.status_code == 409 and optim.json()["error"]["param"] == "after"
    assert optim.elapsed.total_seconds() < 5
