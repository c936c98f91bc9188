"""The service's FastAPI app: the OpenAI routes per tenant, the training routes, and the gate."""

from __future__ import annotations

from fastapi import FastAPI

from hone.server.app import add_health_route
from hone.server.errors import install_error_handlers
from hone.server.openai_api import build_router
from hone.server.rollout_api import build_rollout_router
from hone.server.rollouts import ROLLOUT_KEY_PREFIX
from hone.service.auth import ServiceMiddleware
from hone.service.service import Service, TenantView
from hone.service.training_api import build_training_router
from hone.service.traffic_api import build_traffic_router


def create_service_app(service: Service, request_timeout_s: float | None = None) -> FastAPI:
    """Every route but /health behind an API key, scoped to the key's tenant; the OpenAI routes
    plus the training routes of docs/serve-api.md. A sampling request still running after
    `request_timeout_s` is cancelled and answered 504 (None = no limit)."""
    app = FastAPI(
        title="hone serve",
        version="0.1.0",
        description="OpenAI-compatible sampling and Tinker-shaped training for many tenants. "
        "Every route but /health needs 'Authorization: Bearer KEY'.",
    )
    app.state.request_timeout_s = request_timeout_s
    tenant_view = lambda request: TenantView(service, request.state.tenant)  # noqa: E731
    app.include_router(build_router(service.backend, scope=tenant_view))
    app.include_router(build_rollout_router(tenant_view, service.rollouts, owner_of=lambda request: request.state.tenant.name, agent_keys=True))
    app.include_router(build_training_router(service))
    app.include_router(build_traffic_router(service))
    app.add_middleware(
        ServiceMiddleware,
        store=service.store,
        max_body_bytes=service.config.max_body_bytes,
        max_concurrent_requests=service.config.max_concurrent_requests,
        scoped_key=lambda key: _rollout_scope(service, key),
    )
    install_error_handlers(app)  # after the gate: its bug-catching middleware is the outermost layer
    add_health_route(app)
    return app


def _rollout_scope(service: Service, key: str) -> tuple[str, str] | None:
    """A rollout's agent key: (its tenant's name, the paths it reaches); None for any other key."""
    if not key.startswith(ROLLOUT_KEY_PREFIX):
        return None
    rollout = service.rollouts.by_key(key)
    return None if rollout is None else (rollout.owner, f"/v1/rollouts/{rollout.id}/")
