"""The native engine for real (`pytest -m local_llm`): build llama-server from the pinned sources when
no binary is there yet (~7 minutes on 2 cores), serve the embedded model with two slots, and answer
two schema-constrained requests at once through the real `openai` client."""

from __future__ import annotations

import json
import shutil
from concurrent.futures import ThreadPoolExecutor

import pytest
from openai import OpenAI

from agent.local_llm import native, registry, server
from agent.local_llm.server import LocalServer

pytestmark = [pytest.mark.local_llm, pytest.mark.timeout(2400)]

MODEL = registry.get_model()

if registry.missing_chunk_packages(MODEL):
    pytest.skip(
        f"the {MODEL.name} weight packages are not installed ({registry.INSTALL_COMMAND})",
        allow_module_level=True,
    )

SCHEMA = {
    "type": "object",
    "properties": {"answer": {"type": "integer"}},
    "required": ["answer"],
}


def ask(client: OpenAI, question: str) -> int:
    reply = client.chat.completions.create(
        model=MODEL.name,
        messages=[{"role": "user", "content": f"{question} Reply as JSON with the field answer."}],
        temperature=0.0,
        max_tokens=32,
        response_format={"type": "json_object", "schema": SCHEMA},  # type: ignore[typeddict-item]
    )
    return int(json.loads(reply.choices[0].message.content or "{}")["answer"])


def test_a_built_native_server_answers_two_requests_at_once() -> None:
    try:
        native.find_native_server()
    except native.NativeServerMissingError:
        if shutil.which("cmake") is None:
            pytest.fail("cmake is needed to build llama-server (.ci/run installs it)")
        native.build_native_server()
    with LocalServer(MODEL, threads=server.choose_threads().threads, engine="native", parallel=2) as local:
        client = OpenAI(base_url=local.base_url, api_key="not-needed", timeout=600, max_retries=0)
        assert [model.id for model in client.models.list()] == [MODEL.name]
        with ThreadPoolExecutor(max_workers=2) as pool:
            sums = list(pool.map(lambda q: ask(client, q), ["What is 17 + 25?", "What is 30 + 12?"]))
        assert sums == [42, 42]
        [state] = [s for s in server.running_servers(MODEL.name) if s.port == local.port]
        assert (state.engine, state.parallel) == ("native", 2)
    assert [s for s in server.running_servers(MODEL.name) if s.engine == "native" and not s.shared] == []
