"""`/v1/hone/.../traffic` and `/v1/hone/feedback`: a model's traffic log, and feedback on what it served.

    PUT    /v1/hone/models/{name}/traffic               turn the log on or off; retention; label -> reward
    GET    /v1/hone/models/{name}/traffic               its settings, and how many completions and feedback it holds
    DELETE /v1/hone/models/{name}/traffic               forget every logged completion and feedback of the model
    GET    /v1/hone/models/{name}/traffic/completions   a page of logged completions (after=SEQ), with their feedback
    POST   /v1/hone/feedback                            a reward or a label for a completion (or a whole rollout)
    GET    /v1/hone/models/{name}/promotions            what NAME serves, and every gate decision
    POST   /v1/hone/models/{name}/promotions            record a decision on a checkpoint; promoted, NAME serves it
                                                        (a rollback is the promotion of an older one)

Tenant-scoped like every /v1/hone route: another tenant's completion id reads as unknown (404).
What is stored and how long is `hone.traffic.log`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request
from pydantic import BaseModel, Field

from hone.service.service import Service
from hone.service.store import NAME_PATTERN, Tenant
from hone.service.training_api import REQUEST_ID_PATTERN, Name, _Strict
from hone.traffic import DEFAULT_LABELS, Feedback, TrafficSettings


class TrafficSettingsIn(_Strict):
    enabled: bool = True
    retention_days: float = Field(default=30.0, gt=0.0, le=3650.0)
    max_completions: int = Field(default=100_000, ge=1, le=10_000_000)
    labels: dict[str, float] = Field(default_factory=lambda: dict(DEFAULT_LABELS), min_length=1, max_length=64)

    def settings(self) -> TrafficSettings:
        return TrafficSettings(self.enabled, self.retention_days, self.max_completions, dict(self.labels))


class TrafficInfo(BaseModel):
    model: str
    settings: dict[str, Any]
    completions: int
    feedback: int


class FeedbackIn(_Strict):
    completion_id: str | None = Field(default=None, min_length=1, max_length=128)
    rollout_id: str | None = Field(default=None, min_length=1, max_length=128)
    reward: float | None = Field(default=None, strict=True, ge=-1e6, le=1e6, description="A number; or send a label.")
    label: str | None = Field(default=None, min_length=1, max_length=64, description="A word the model's labels map to a reward.")
    choice: int = Field(default=0, ge=0, le=1024, description="Which choice of an n > 1 completion.")
    feedback_id: str | None = Field(default=None, pattern=REQUEST_ID_PATTERN, description="Sent again, the stored feedback is answered.")


class LoggedPage(BaseModel):
    data: list[dict[str, Any]]
    feedback: list[Feedback]
    next_after: int | None = Field(description="Pass as `after` for the next page (the last row's `seq`); null on the last one.")


class PromotionIn(_Strict):
    checkpoint: str = Field(pattern=NAME_PATTERN, max_length=64)
    promoted: bool = True
    reason: str = Field(default="", max_length=2000)
    metrics: dict[str, float] = Field(default_factory=dict, max_length=64)


class PromotionInfo(BaseModel):
    model: str
    serving: str = Field(description="NAME@CHECKPOINT of the promoted checkpoint, or NAME@live when none was promoted.")
    checkpoint: str | None
    step: int | None
    history: list[dict[str, Any]]


class Forgotten(BaseModel):
    deleted: int


def build_traffic_router(service: Service) -> APIRouter:
    router = APIRouter(prefix="/v1/hone", tags=["traffic"])

    def tenant(request: Request) -> Tenant:
        return request.state.tenant

    @router.put("/models/{name}/traffic", response_model=TrafficInfo)
    async def configure(body: TrafficSettingsIn, request: Request, name: str = Name) -> Any:
        return await service.configure_traffic(tenant(request), name, body.settings())

    @router.get("/models/{name}/traffic", response_model=TrafficInfo)
    async def info(request: Request, name: str = Name) -> Any:
        return service.traffic_info(tenant(request), name)

    @router.delete("/models/{name}/traffic", response_model=Forgotten)
    async def forget(request: Request, name: str = Name) -> Any:
        return {"deleted": await service.delete_traffic(tenant(request), name)}

    @router.get("/models/{name}/traffic/completions", response_model=LoggedPage)
    async def logged(request: Request, name: str = Name, after: int = Query(0, ge=0, le=2**62), limit: int = Query(100, ge=1, le=1000)) -> Any:
        completions, feedback = await service.logged(tenant(request), name, after, limit)
        return {
            "data": [c.public() for c in completions],
            "feedback": [f.public() for f in feedback],
            "next_after": completions[-1].seq if len(completions) == limit else None,
        }

    @router.post("/feedback", response_model=Feedback)
    async def feedback(body: FeedbackIn, request: Request) -> Any:
        stored = await service.add_feedback(tenant(request), **body.model_dump())
        return stored.public()

    @router.get("/models/{name}/promotions", response_model=PromotionInfo)
    async def promotions(request: Request, name: str = Name) -> Any:
        return service.promotion_info(tenant(request), name)

    @router.post("/models/{name}/promotions", response_model=PromotionInfo)
    async def promote(body: PromotionIn, request: Request, name: str = Name) -> Any:
        return await service.record_promotion(tenant(request), name, body.checkpoint, body.promoted, body.reason, body.metrics)

    return router
