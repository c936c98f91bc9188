"""`/v1/rollouts`: open a rollout, call the model through it, close it and take its record.

    POST   /v1/rollouts                          {"model", "task_id"?, "metadata"?} -> the rollout, and
                                                 under `hone serve` an `api_key` that reaches only its
                                                 model routes (the three below it), for the agent
    POST   /v1/rollouts/{id}/chat/completions    as /v1/chat/completions, recorded
    POST   /v1/rollouts/{id}/responses           as /v1/responses, recorded
    GET    /v1/rollouts/{id}/models              as /v1/models (some clients list models first)
    GET    /v1/rollouts/{id}                     the record so far
    DELETE /v1/rollouts/{id}                     close it; answers the whole record

So an agent built on any OpenAI client is captured by giving it the base URL
`.../v1/rollouts/{id}`. What is recorded, and how a later turn's prompt continues the tokens of
an earlier one, is `hone.server.rollouts`. Owners: `owner_of(request)` (the tenant under `hone
serve`, None in-process).
"""

from __future__ import annotations

from typing import Annotated, Any, Callable

from fastapi import APIRouter, Request
from pydantic import BaseModel, ConfigDict, Field

from hone.server.openai_api import ChatCompletionRequest, answer_chat, model_list
from hone.server.responses_api import ResponsesRequest, answer_responses
from hone.server.rollouts import PendingCall, RolloutBook
from hone.server.sampler import Sampler

class OpenRolloutRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")  # a chat body sent here by mistake is a 400, not a rollout

    model: str = Field(min_length=1, max_length=256)
    task_id: str | None = Field(default=None, max_length=256)
    metadata: dict[Annotated[str, Field(max_length=64)], Annotated[str, Field(max_length=512)]] | None = Field(default=None, max_length=16)


def build_rollout_router(
    models_for: Callable[[Request], Sampler],
    book: RolloutBook,
    owner_of: Callable[[Request], str | None],
    default_max_tokens: int = 256,
    agent_keys: bool = False,
) -> APIRouter:
    """The rollout routes; `agent_keys`: answer an open with the rollout's own key (the service's
    gate accepts it for that rollout's model routes; see hone.service.auth)."""
    router = APIRouter()

    def recorder(request: Request, rollout_id: str) -> Callable[..., PendingCall]:
        owner = owner_of(request)
        book.get(owner, rollout_id)  # unknown or closed: 404 before the request is looked at further

        def begin(tokenizer: Any, endpoint: str, chat: Any, rendered: Any, model: str, n: int) -> PendingCall:
            return book.begin(owner, rollout_id, model, n, tokenizer, endpoint, chat, rendered)

        return begin

    @router.post("/v1/rollouts")
    async def open_rollout(body: OpenRolloutRequest, request: Request) -> dict[str, Any]:
        models = models_for(request)
        models.tokenizer(body.model)  # an unknown model: 404 now, not at the agent's first call
        rollout = book.open(owner_of(request), body.model, body.task_id, body.metadata)
        return {**rollout.public(), "api_key": rollout.key} if agent_keys else rollout.public()

    @router.get("/v1/rollouts/{rollout_id}")
    async def get_rollout(rollout_id: str, request: Request) -> dict[str, Any]:
        return book.get(owner_of(request), rollout_id).public()

    @router.delete("/v1/rollouts/{rollout_id}")
    async def close_rollout(rollout_id: str, request: Request) -> dict[str, Any]:
        return book.close(owner_of(request), rollout_id).public()

    @router.get("/v1/rollouts/{rollout_id}/models")
    async def list_models(rollout_id: str, request: Request) -> dict[str, Any]:
        rollout = book.get(owner_of(request), rollout_id)
        return model_list([rollout.model])

    @router.post("/v1/rollouts/{rollout_id}/chat/completions")
    async def chat_completions(rollout_id: str, body: ChatCompletionRequest, request: Request) -> Any:
        return await answer_chat(request, models_for(request), body, default_max_tokens, recorder(request, rollout_id))

    @router.post("/v1/rollouts/{rollout_id}/responses")
    async def responses(rollout_id: str, body: ResponsesRequest, request: Request) -> Any:
        return await answer_responses(request, models_for(request), body, default_max_tokens, recorder(request, rollout_id))

    return router
