"""Build the FastAPI app over a backend, or over a multi-tenant service (`hone serve --home`)."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI

from hone.server.errors import install_error_handlers
from hone.server.openai_api import build_router


def create_app(backend: Any) -> FastAPI:
    app = FastAPI(title="hone", version="0.1.0")
    install_error_handlers(app)
    app.include_router(build_router(backend))

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app


def create_service_app(service: Any) -> FastAPI:
    """The service's app: every route but /health behind an API key, scoped to the key's tenant;
    the OpenAI routes plus the training routes of docs/serve-api.md."""
    from hone.server.auth import ServiceMiddleware
    from hone.server.service import TenantView
    from hone.server.training_api import build_training_router

    app = FastAPI(
        title="hone serve",
        version="0.1.0",
        description="OpenAI-compatible sampling and Tinker-shaped training for many tenants. "
        "Every route but /health needs 'Authorization: Bearer KEY'.",
    )
    install_error_handlers(app)
    app.include_router(build_router(service.backend, scope=lambda request: TenantView(service, request.state.tenant)))
    app.include_router(build_training_router(service))
    app.add_middleware(
        ServiceMiddleware,
        store=service.store,
        max_body_bytes=service.config.max_body_bytes,
        max_concurrent_requests=service.config.max_concurrent_requests,
    )

    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    return app
