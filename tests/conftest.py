"""Shared fixtures: real models (tiny for speed, embedded for integration), loaded once per session."""

from __future__ import annotations

import pytest

from hone.models import load_model, load_tokenizer


@pytest.fixture(scope="session")
def tokenizer():
    return load_tokenizer()


@pytest.fixture(scope="session")
def tiny():
    return load_model("tiny")


@pytest.fixture(scope="session")
def embedded():
    return load_model("smollm2-135m")
