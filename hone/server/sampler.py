"""The Sampler protocol: all the OpenAI routes need from whatever serves models.

A backend satisfies it, and so does one tenant's view of the service; the routes know nothing
else about either.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from hone.types import OnTokens, SampledSequence, SamplingParams


@runtime_checkable
class Sampler(Protocol):
    def list_models(self) -> list[str]:
        """The model names a client may ask for."""
        ...

    def tokenizer(self, name: str) -> Any:
        """The tokenizer of model `name` (a transformers tokenizer); ModelNotFoundError if unknown."""
        ...

    async def sample(
        self, name: str, prompt_tokens: list[int], n: int, params: SamplingParams, on_tokens: OnTokens | None = None
    ) -> list[SampledSequence]:
        """`n` completions of `prompt_tokens`, each with its token ids and fp32 logprobs. `on_tokens`,
        where the sampler streams, hears each sequence's tokens as they are decoded (possibly from
        another thread); a sampler that does not stream never calls it."""
        ...
