"""Shared fixtures. `scripted_llm` is a real OpenAI-compatible HTTP server on 127.0.0.1 whose
replies a test scripts (`scripted_llm.add("reply", ScriptedReply.error(503))`) or computes
(`scripted_llm.responder = lambda request: ...`); code under test talks to it through the real
`openai` client."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from trace_graph.llm import LLMClient, LLMConfig, ScriptedLLMServer


@pytest.fixture
def scripted_llm() -> Iterator[ScriptedLLMServer]:
    """A running scripted server with an empty script; inspect `.requests` afterwards."""
    with ScriptedLLMServer() as server:
        yield server


@pytest.fixture
def scripted_llm_config(scripted_llm: ScriptedLLMServer) -> LLMConfig:
    """Config for `scripted_llm`: no disk cache, millisecond retry backoff."""
    return scripted_llm.llm_config()


@pytest.fixture
def scripted_llm_client(scripted_llm_config: LLMConfig) -> Iterator[LLMClient]:
    """An LLMClient talking to `scripted_llm`, uncached."""
    with LLMClient(scripted_llm_config, cache=False) as client:
        yield client
