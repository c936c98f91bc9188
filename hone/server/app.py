"""Build the FastAPI app over a backend."""

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
