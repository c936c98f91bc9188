"""/openapi.json documents every route, and schemathesis's generated requests never get a 5xx."""

from __future__ import annotations

import time

import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable

from .conftest import create_model

ROUTES = {
    ("post", "/v1/hone/models"), ("get", "/v1/hone/models"), ("delete", "/v1/hone/models/{name}"),
    ("post", "/v1/hone/models/{name}/sample"), ("post", "/v1/hone/models/{name}/forward_backward"),
    ("post", "/v1/hone/models/{name}/optim_step"), ("post", "/v1/hone/models/{name}/train_step"),
    ("post", "/v1/hone/models/{name}/save_state"), ("post", "/v1/hone/models/{name}/load_state"),
    ("get", "/v1/hone/models/{name}/checkpoints"), ("delete", "/v1/hone/models/{name}/checkpoints/{checkpoint}"),
    ("get", "/v1/hone/models/{name}/checkpoints/{checkpoint}/archive"),
    ("get", "/v1/models"), ("post", "/v1/chat/completions"), ("post", "/v1/responses"), ("get", "/health"),
    ("post", "/v1/rollouts"), ("get", "/v1/rollouts/{rollout_id}"), ("delete", "/v1/rollouts/{rollout_id}"),
    ("get", "/v1/rollouts/{rollout_id}/models"), ("post", "/v1/rollouts/{rollout_id}/chat/completions"),
    ("post", "/v1/rollouts/{rollout_id}/responses"),
    ("put", "/v1/hone/models/{name}/traffic"), ("get", "/v1/hone/models/{name}/traffic"),
    ("delete", "/v1/hone/models/{name}/traffic"), ("get", "/v1/hone/models/{name}/traffic/completions"),
    ("post", "/v1/hone/feedback"), ("get", "/v1/hone/models/{name}/promotions"), ("post", "/v1/hone/models/{name}/promotions"),
}  # fmt: skip


def test_openapi_documents_every_route_with_its_request_and_response_models(server):
    spec = server.http(server.new_key()).get("/openapi.json").json()
    found = {(method, path) for path, item in spec["paths"].items() for method in item}
    assert found == ROUTES
    schemas = spec["components"]["schemas"]
    for name in ("CreateModel", "ForwardBackwardRequest", "TrainStepRequest", "SaveStateRequest", "StepResponse", "CheckpointList"):
        assert name in schemas
    train = spec["paths"]["/v1/hone/models/{name}/train_step"]["post"]
    assert train["responses"]["200"]["content"]["application/json"]["schema"] == {"$ref": "#/components/schemas/StepResponse"}


def test_schemathesis_finds_no_server_error(server):
    key = server.new_key()
    headers = {"Authorization": f"Bearer {key}"}
    create_model(server.http(key), "m")
    schema = schemathesis.openapi.from_url(f"{server.url}/openapi.json", headers=headers)
    failures, unsatisfiable = [], []
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        names = [{}, {"name": "m"}] if "{name}" in operation.path else [{}]
        for mode in schemathesis.GenerationMode:
            for path_parameters in names:
                strategy = operation.as_strategy(generation_mode=mode, path_parameters=path_parameters)

                @settings(max_examples=8, deadline=None, database=None, derandomize=True, suppress_health_check=list(HealthCheck))
                @given(case=strategy)
                def check(case):
                    response = case.call(base_url=server.url, headers=headers, timeout=60)
                    if response.status_code >= 500:
                        failures.append((case.method, case.formatted_path, case.body, response.status_code, response.text[:200]))

                try:
                    check()
                except Unsatisfiable:  # negative mode on a route with nothing to get wrong (no body, no params)
                    assert mode == schemathesis.GenerationMode.NEGATIVE, operation.label
                    unsatisfiable.append(operation.label)
    assert not failures, failures
    assert all(label.split()[0] in ("GET", "DELETE") for label in unsatisfiable), unsatisfiable
    assert time.monotonic() - started < 60
    assert server.http(key).get("/health").status_code == 200  # and it is still serving


def test_the_server_wrote_nothing_outside_its_home(server):
    # runs after the generated requests above and the tests of the files before this one
    written = sorted(str(p.relative_to(server.outside)) for p in server.outside.rglob("*") if p.is_file())
    assert written == [], "hone serve wrote outside --home"
