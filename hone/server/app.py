"""Build the FastAPI app of the OpenAI-compatible routes over one Sampler."""

from __future__ import annotations

from fastapi import FastAPI

from hone.server.errors import install_error_handlers
from hone.server.openai_api import build_router
from hone.server.sampler import Sampler


def create_app(sampler: Sampler) -> FastAPI:
    app = FastAPI(title="hone", version="0.1.0")
    install_error_handlers(app)
    app.include_router(build_router(sampler))
    add_health_route(app)
    return app


def add_health_route(app: FastAPI) -> None:
    @app.get("/health")
    async def health() -> dict[str, str]:
        return {"status": "ok"}
