"""`/v1/hone/*`: the service's training routes, one to one over the backend's training calls.

The contract is docs/serve-api.md. Every route is tenant-scoped (the tenant comes from the API
key, see `auth.py`); request and response bodies are pydantic models, so /openapi.json documents
them. Bounds that do not depend on the server's settings are in the schemas; the configurable
ones (n, datums, groups, group size) are checked by the service with one-sentence 400s.
"""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path as PathLib
from typing import Any, Literal

from fastapi import APIRouter, Path, Request
from fastapi.responses import FileResponse
from starlette.background import BackgroundTask
from pydantic import BaseModel, ConfigDict, Field

from hone.engine.grammar import MAX_GRAMMAR_CHARS
from hone.errors import InvalidRequestError
from hone.rl.step import TrainConfig
from hone.server.lifetime import while_client_waits
from hone.rl.trajectory import TrajectoryGroup
from hone.service.service import LIVE, Service
from hone.service.store import NAME_PATTERN, Tenant
from hone.training import LossConfig
from hone.types import AdamParams, Datum, ModelSpec, SamplingParams

MAX_TOKENS_PER_LIST = 1 << 17  # any per-token list; a model's max_seq_len is the real bound
REQUEST_ID_PATTERN = r"^[A-Za-z0-9._:-]{1,128}$"
LossName = Literal["cispo", "ppo", "importance_sampling", "cross_entropy"]

TokenList = list[int]
Name = Path(pattern=NAME_PATTERN, max_length=64, description="A model name (letters, digits, '.', '_', '-').")
Served = Path(max_length=160, description="A model name, or NAME@STEP for one of its checkpoints.")
CheckpointName = Path(pattern=NAME_PATTERN, max_length=64)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


# --------------------------------------------------------------------------- models
class CreateModel(ModelSpec):
    """A ModelSpec (base_model, lora_rank with 0 = full fine-tuning, options) and the model's name."""

    name: str = Field(pattern=NAME_PATTERN, max_length=64)
    exist_ok: bool = False

    def spec(self) -> ModelSpec:
        return ModelSpec(base_model=self.base_model, lora_rank=self.lora_rank, options=self.options)


class ModelInfo(BaseModel):
    name: str
    base_model: str
    lora_rank: int
    step: int


class ModelList(BaseModel):
    data: list[ModelInfo]


class Deleted(BaseModel):
    deleted: bool = True


# --------------------------------------------------------------------------- sampling
class SamplingParamsIn(_Strict):
    max_tokens: int = Field(default=256, ge=1, le=1 << 16)
    temperature: float = Field(default=1.0, ge=0.0, le=100.0)
    top_p: float = Field(default=1.0, gt=0.0, le=1.0)
    top_k: int = Field(default=0, ge=0, le=1 << 20)
    stop: list[str] = Field(default_factory=list, max_length=16)
    stop_token_ids: list[int] = Field(default_factory=list, max_length=64)
    seed: int | None = Field(default=None, ge=0, le=2**63 - 1)
    top_logprobs: int = Field(default=0, ge=0, le=20)
    grammar: str | None = Field(default=None, min_length=1, max_length=MAX_GRAMMAR_CHARS)  # llguidance's Lark-like text
    logit_bias: list[tuple[int, float]] = Field(default_factory=list, max_length=1024)  # (token id, bias) pairs
    presence_penalty: float = 0.0  # the engine checks the ranges of these three, naming the parameter
    frequency_penalty: float = 0.0
    speculate: bool = True  # n-gram drafts verified in the decode step; the same outputs, only faster

    def params(self) -> SamplingParams:
        if any(not s or len(s) > 256 for s in self.stop):
            raise InvalidRequestError("each stop string must have 1 to 256 characters", param="params.stop")
        fields = self.model_dump()
        sequences = {name: tuple(fields[name]) for name in ("stop", "stop_token_ids", "logit_bias")}
        return SamplingParams(**{**fields, **sequences})


class SampleRequest(_Strict):
    prompt_tokens: TokenList = Field(min_length=1, max_length=MAX_TOKENS_PER_LIST)
    n: int = Field(default=1, ge=1, le=1024)
    params: SamplingParamsIn = Field(default_factory=SamplingParamsIn)


class SequenceOut(BaseModel):
    tokens: list[int]
    logprobs: list[float]
    finish_reason: str
    top_logprobs: list[list[tuple[int, float]]] | None = None
    forced: list[bool] | None = None


class SampleResponse(BaseModel):
    sequences: list[SequenceOut]


# --------------------------------------------------------------------------- training
class DatumIn(_Strict):
    input_tokens: TokenList = Field(max_length=MAX_TOKENS_PER_LIST)
    target_tokens: TokenList = Field(max_length=MAX_TOKENS_PER_LIST)
    weights: list[float] = Field(max_length=MAX_TOKENS_PER_LIST)
    sampler_logprobs: list[float] | None = Field(default=None, max_length=MAX_TOKENS_PER_LIST)
    advantages: list[float] | None = Field(default=None, max_length=MAX_TOKENS_PER_LIST)


class LossConfigIn(_Strict):
    clip_low: float | None = Field(default=None, ge=0.0, le=1.0)
    clip_high: float | None = Field(default=None, ge=0.0, le=100.0)
    cispo_ratio_min: float | None = Field(default=None, ge=0.0, le=1e6)
    cispo_ratio_max: float | None = Field(default=None, ge=0.0, le=1e6)
    ratio_level: Literal["token", "sequence"] | None = None
    aggregation: Literal["token_mean", "sequence_mean"] | None = None

    def as_dict(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


class ForwardBackwardRequest(_Strict):
    datums: list[DatumIn] = Field(min_length=1, max_length=1 << 16)
    loss: LossName = "cispo"
    loss_config: LossConfigIn | None = None
    request_id: str | None = Field(default=None, pattern=REQUEST_ID_PATTERN)


class MetricsResponse(BaseModel):
    metrics: dict[str, float | None]


class AdamIn(_Strict):
    learning_rate: float = Field(default=1e-5, ge=0.0, le=10.0)
    beta1: float = Field(default=0.9, ge=0.0, lt=1.0)
    beta2: float = Field(default=0.95, ge=0.0, lt=1.0)
    eps: float = Field(default=1e-8, gt=0.0, le=1.0)
    weight_decay: float = Field(default=0.0, ge=0.0, le=10.0)
    grad_clip_norm: float = Field(default=1.0, ge=0.0, le=1e6)


class OptimStepRequest(_Strict):
    adam: AdamIn = Field(default_factory=AdamIn)
    request_id: str | None = Field(default=None, pattern=REQUEST_ID_PATTERN)
    after: str | None = Field(
        default=None,
        pattern=REQUEST_ID_PATTERN,
        description="The request_id of a forward_backward sent at the same time: this step waits for it to run first.",
    )


class StepResponse(BaseModel):
    metrics: dict[str, float | None]
    step: int


class TrainConfigIn(_Strict):
    learning_rate: float = Field(default=5e-5, ge=0.0, le=10.0)
    loss: LossName = "cispo"
    loss_config: LossConfigIn | None = None
    scale_by_std: bool = False
    train_forced_tokens: bool = False
    weight_decay: float = Field(default=0.0, ge=0.0, le=10.0)
    grad_clip_norm: float = Field(default=1.0, ge=0.0, le=1e6)
    betas: tuple[float, float] = (0.9, 0.95)


class TrainStepRequest(_Strict):
    groups: list[TrajectoryGroup] = Field(min_length=1, max_length=1 << 14)
    config: TrainConfigIn = Field(default_factory=TrainConfigIn)
    request_id: str | None = Field(default=None, pattern=REQUEST_ID_PATTERN)


class SaveStateRequest(_Strict):
    checkpoint: str | None = Field(default=None, pattern=NAME_PATTERN, max_length=64)
    request_id: str | None = Field(default=None, pattern=REQUEST_ID_PATTERN)


class SaveStateResponse(BaseModel):
    checkpoint: str
    step: int


class LoadStateRequest(_Strict):
    checkpoint: str = Field(pattern=NAME_PATTERN, max_length=64)
    with_optimizer: bool = True


class LoadStateResponse(BaseModel):
    step: int


class CheckpointInfo(BaseModel):
    checkpoint: str
    step: int
    created: float


class CheckpointList(BaseModel):
    data: list[CheckpointInfo]


# --------------------------------------------------------------------------- routes
def build_training_router(service: Service) -> APIRouter:
    router = APIRouter(prefix="/v1/hone", tags=["training"])
    config = service.config

    def tenant(request: Request) -> Tenant:
        return request.state.tenant

    @router.post("/models", response_model=ModelInfo)
    async def create_model(body: CreateModel, request: Request) -> Any:
        row = await service.create_model(tenant(request), body.name, body.spec(), body.exist_ok)
        return row.public()

    @router.get("/models", response_model=ModelList)
    async def list_models(request: Request) -> Any:
        return {"data": [m.public() for m in service.store.models(tenant(request).id)]}

    @router.delete("/models/{name}", response_model=Deleted)
    async def delete_model(request: Request, name: str = Name) -> Any:
        await service.delete_model(tenant(request), name)
        return {"deleted": True}

    @router.post("/models/{name}/sample", response_model=SampleResponse)
    async def sample(body: SampleRequest, request: Request, name: str = Served) -> Any:
        live = "@" not in name and name not in config.base_models
        if live:
            service.model(tenant(request), name)  # a missing model's 404 names it as the client did
        served = f"{name}@{LIVE}" if live else name  # the training API samples the live weights, promoted or not
        samples = await while_client_waits(request, service.sample(tenant(request), served, body.prompt_tokens, body.n, body.params.params()))
        return {
            "sequences": [
                {"tokens": s.tokens, "logprobs": s.logprobs, "finish_reason": s.finish_reason, "top_logprobs": s.top_logprobs, "forced": s.forced}
                for s in samples
            ]
        }

    @router.post("/models/{name}/forward_backward", response_model=MetricsResponse)
    async def forward_backward(body: ForwardBackwardRequest, request: Request, name: str = Name) -> Any:
        datums = [Datum(**d.model_dump()) for d in body.datums]
        loss_config = body.loss_config.as_dict() if body.loss_config else None
        return await service.forward_backward(tenant(request), name, datums, body.loss, loss_config, body.request_id)

    @router.post("/models/{name}/optim_step", response_model=StepResponse)
    async def optim_step(body: OptimStepRequest, request: Request, name: str = Name) -> Any:
        return await service.optim_step(tenant(request), name, AdamParams(**body.adam.model_dump()), body.request_id, body.after)

    @router.post("/models/{name}/train_step", response_model=StepResponse)
    async def train_step(body: TrainStepRequest, request: Request, name: str = Name) -> Any:
        _check_groups(body.groups, config.max_groups, config.max_group_size)
        c = body.config
        beta1, beta2 = c.betas
        if not (0.0 <= beta1 < 1.0 and 0.0 <= beta2 < 1.0):
            raise InvalidRequestError("config.betas must be two numbers in [0, 1)", param="config.betas")
        train_config = TrainConfig(
            learning_rate=c.learning_rate,
            loss=c.loss,
            loss_config=LossConfig(**c.loss_config.as_dict()) if c.loss_config else None,
            scale_by_std=c.scale_by_std,
            train_forced_tokens=c.train_forced_tokens,
            weight_decay=c.weight_decay,
            grad_clip_norm=c.grad_clip_norm,
            betas=(beta1, beta2),
        )
        return await service.train_step(tenant(request), name, body.groups, train_config, body.request_id)

    @router.post("/models/{name}/save_state", response_model=SaveStateResponse)
    async def save_state(body: SaveStateRequest, request: Request, name: str = Name) -> Any:
        return await service.save_state(tenant(request), name, body.checkpoint, body.request_id)

    @router.post("/models/{name}/load_state", response_model=LoadStateResponse)
    async def load_state(body: LoadStateRequest, request: Request, name: str = Name) -> Any:
        return await service.load_state(tenant(request), name, body.checkpoint, body.with_optimizer)

    @router.get("/models/{name}/checkpoints", response_model=CheckpointList)
    async def list_checkpoints(request: Request, name: str = Name) -> Any:
        return {"data": [c.public() for c in service.checkpoints(tenant(request), name)]}

    @router.get(
        "/models/{name}/checkpoints/{checkpoint}/archive",
        response_class=FileResponse,
        responses={200: {"content": {"application/zip": {}}, "description": "The checkpoint's weights, config, tokenizer and state, as a zip."}},
    )
    async def checkpoint_archive(request: Request, name: str = Name, checkpoint: str = CheckpointName) -> Any:
        """A checkpoint's weights to take away (`hone export NAME@STEP --backend URL`): no optimizer or RNG state."""
        handle, scratch = tempfile.mkstemp(suffix=".zip")
        os.close(handle)
        try:
            await service.checkpoint_archive(tenant(request), name, checkpoint, PathLib(scratch))
        except BaseException:
            os.unlink(scratch)
            raise
        return FileResponse(scratch, media_type="application/zip", filename=f"{name}-{checkpoint}.zip", background=BackgroundTask(os.unlink, scratch))

    @router.delete("/models/{name}/checkpoints/{checkpoint}", response_model=Deleted)
    async def delete_checkpoint(request: Request, name: str = Name, checkpoint: str = CheckpointName) -> Any:
        await service.delete_checkpoint(tenant(request), name, checkpoint)
        return {"deleted": True}

    return router


def _check_groups(groups: list[TrajectoryGroup], max_groups: int, max_group_size: int) -> None:
    """Bounds and shapes the schema cannot say, as one 400 each, before any compute."""
    if len(groups) > max_groups:
        raise InvalidRequestError(f"{len(groups)} groups is over this server's limit of {max_groups} per step", param="groups")
    for g, group in enumerate(groups):
        if len(group.trajectories) > max_group_size:
            raise InvalidRequestError(
                f"group {g} has {len(group.trajectories)} trajectories, over this server's limit of {max_group_size}", param="groups"
            )
        for t, trajectory in enumerate(group.trajectories):
            if not math.isfinite(trajectory.reward):
                raise InvalidRequestError(f"group {g} trajectory {t} has a reward that is not a finite number", param="groups")
            for k, turn in enumerate(trajectory.turns):
                if len(turn.completion_tokens) != len(turn.completion_logprobs):
                    raise InvalidRequestError(
                        f"group {g} trajectory {t} turn {k} has {len(turn.completion_tokens)} completion tokens "
                        f"but {len(turn.completion_logprobs)} logprobs",
                        param="groups",
                    )
                if turn.completion_forced is not None and len(turn.completion_forced) != len(turn.completion_tokens):
                    raise InvalidRequestError(
                        f"group {g} trajectory {t} turn {k} has {len(turn.completion_tokens)} completion tokens "
                        f"but {len(turn.completion_forced)} forced flags",
                        param="groups",
                    )
                if not all(math.isfinite(x) for x in turn.completion_logprobs):
                    raise InvalidRequestError(f"group {g} trajectory {t} turn {k} has a logprob that is not a finite number", param="groups")
                if len(turn.prompt_tokens) + len(turn.completion_tokens) > MAX_TOKENS_PER_LIST:
                    raise InvalidRequestError(f"group {g} trajectory {t} turn {k} is too long", param="groups")
