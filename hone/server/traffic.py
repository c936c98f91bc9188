"""The routes' side of the traffic log (hone.traffic): each finished completion is handed to the
serving object's `record_completion`, where it has one (a service tenant's view, a LocalBackend
with a log), and awaited before the reply goes out, so a reply the client saw is logged.

The routes know nothing of tenants or settings: whether and where a completion is kept is the
serving object's decision. A request carrying UNLOGGED_HEADERS (validation, evaluation) is not
handed over at all.
"""

from __future__ import annotations

from typing import Any

from hone.chat import ChatInput
from hone.traffic import UNLOGGED_HEADERS, ServedChoice, ServedCompletion
from hone.types import SampledSequence


class TrafficTap:
    """Collects one request's finished choices; `flush` hands them over as one ServedCompletion."""

    def __init__(
        self, models: Any, request: Any, endpoint: str, completion_id: str, served: str, chat: ChatInput, prompt_tokens: list[int], rollout: Any = None,
        task_key: str | None = None,
    ):  # fmt: skip
        unlogged = all(request.headers.get(k, "").lower() == v for k, v in UNLOGGED_HEADERS.items())
        self._record = None if unlogged else getattr(models, "record_completion", None)
        self.endpoint, self.completion_id, self.served, self.chat = endpoint, completion_id, served, chat
        self.prompt_tokens = prompt_tokens
        self.rollout_id = rollout.id if rollout is not None else None
        self.task_key = task_key if task_key is not None else (rollout.task_id if rollout is not None else None)
        self.choices: list[ServedChoice] = []

    def add(self, sample: SampledSequence, message: dict[str, Any], tool_call_error: str | None) -> None:
        if self._record is not None:
            self.choices.append(ServedChoice(sample.tokens, sample.logprobs, sample.forced, message, sample.finish_reason, tool_call_error))

    async def flush(self) -> None:
        if self._record is None or not self.choices:
            return
        request = {
            "messages": self.chat.recorded_messages(),
            "tools": self.chat.recorded_tools(),
        }
        await self._record(
            ServedCompletion(self.completion_id, self.endpoint, self.served, request, self.prompt_tokens, self.choices, self.rollout_id, self.task_key)
        )
