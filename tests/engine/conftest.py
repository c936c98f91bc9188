"""Fixtures for the engine tests: a tiny model with lively (non-degenerate) outputs and engines over it."""

from __future__ import annotations

import copy

import pytest
import torch

from hone.engine import Engine


def make_lively(model: torch.nn.Module, seed: int = 0, std: float = 0.15) -> torch.nn.Module:
    """A copy of `model` with larger random matrices, so greedy decoding does not repeat one token
    and the next-token distribution has clear winners (near-ties would make argmax comparisons flaky)."""
    lively = copy.deepcopy(model)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in lively.parameters():
            if parameter.dim() == 2:
                parameter.normal_(0.0, std, generator=generator)
    return lively.eval()


@pytest.fixture(scope="session")
def lively(tiny):
    return make_lively(tiny.model)


@pytest.fixture(scope="module")
def engine32(lively, tokenizer):
    """An fp32 engine (exact comparisons) shared by a module's tests; no eos, so lengths are predictable."""
    engine = Engine(lively, eos_token_ids=[], decode=tokenizer.decode, dtype=torch.float32)
    yield engine
    engine.close()


@pytest.fixture
def prompts(tokenizer):
    """Prompts of mixed lengths (3..~20 tokens), so a batch needs padding and per-row positions."""
    texts = [
        "Hi",
        "The capital of France is",
        "def add(a, b):\n    return",
        "Once upon a time, in a land far away, there lived a small dragon who",
    ]
    return [tokenizer.encode(t) for t in texts]
