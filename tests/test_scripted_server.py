"""The scripted OpenAI-compatible server, exercised with the real openai client over real HTTP."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import openai
import pytest

from trace_graph.llm import ChatRequest, ScriptedLLMServer, ScriptedReply

USER = [{"role": "user", "content": "hello there"}]


def raw_client(server: ScriptedLLMServer) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.base_url, api_key="test", max_retries=0, timeout=10)


def test_models_endpoint_lists_the_scripted_model(scripted_llm: ScriptedLLMServer) -> None:
    models = raw_client(scripted_llm).models.list()
    assert [model.id for model in models.data] == ["scripted-model"]


def test_script_is_consumed_in_order_then_the_responder_answers(scripted_llm: ScriptedLLMServer) -> None:
    scripted_llm.add("first", ScriptedReply.text("second", finish_reason="length"))
    scripted_llm.responder = lambda request: f"echo: {request.last_user_text}"
    client = raw_client(scripted_llm)
    answers = [client.chat.completions.create(model="m", messages=USER) for _ in range(3)]  # type: ignore[arg-type]
    assert [a.choices[0].message.content for a in answers] == ["first", "second", "echo: hello there"]
    assert [a.choices[0].finish_reason for a in answers] == ["stop", "length", "stop"]
    assert scripted_llm.request_count == 3
    assert scripted_llm.remaining_script == 0


def test_requests_are_recorded_as_pydantic_models(scripted_llm: ScriptedLLMServer) -> None:
    scripted_llm.add("ok")
    schema = {"type": "object", "properties": {"x": {"type": "integer"}}}
    raw_client(scripted_llm).chat.completions.create(
        model="my-model",
        messages=[{"role": "system", "content": "be brief"}, *USER],  # type: ignore[list-item]
        temperature=0.7,
        max_tokens=33,
        seed=5,
        response_format={"type": "json_object", "schema": schema},  # type: ignore[typeddict-unknown-key]
        stream=False,
    )
    (request,) = scripted_llm.requests
    assert isinstance(request, ChatRequest)
    assert (request.model, request.temperature, request.max_tokens, request.seed) == ("my-model", 0.7, 33, 5)
    assert request.response_format == {"type": "json_object", "schema": schema}
    assert [m.role for m in request.messages] == ["system", "user"]
    assert request.prompt_text == "be brief\nhello there"


def test_usage_is_roughly_characters_over_four(scripted_llm: ScriptedLLMServer) -> None:
    scripted_llm.add("x" * 40)
    answer = raw_client(scripted_llm).chat.completions.create(
        model="m", messages=[{"role": "user", "content": "y" * 400}]
    )
    assert answer.usage is not None
    assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (100, 10)


def test_error_replies_carry_status_body_and_retry_after(scripted_llm: ScriptedLLMServer) -> None:
    scripted_llm.add(ScriptedReply.error(429, "slow down", retry_after=2), ScriptedReply.error(503, "busy"))
    client = raw_client(scripted_llm)
    with pytest.raises(openai.RateLimitError) as limited:
        client.chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
    assert limited.value.response.headers["retry-after"] == "2"
    assert "slow down" in str(limited.value)
    with pytest.raises(openai.InternalServerError, match="busy"):
        client.chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]


def test_an_exhausted_script_answers_410_naming_the_request(scripted_llm: ScriptedLLMServer) -> None:
    with pytest.raises(openai.APIStatusError, match="no reply scripted for request #1") as caught:
        raw_client(scripted_llm).chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
    assert caught.value.status_code == 410


def test_a_responder_that_raises_gives_500_and_is_recorded(scripted_llm: ScriptedLLMServer) -> None:
    scripted_llm.responder = lambda request: {}["missing"]
    with pytest.raises(openai.InternalServerError, match="KeyError"):
        raw_client(scripted_llm).chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
    assert "KeyError" in scripted_llm.errors[0]


def test_dropped_connection_and_malformed_body(scripted_llm: ScriptedLLMServer) -> None:
    scripted_llm.add(ScriptedReply.drop(), ScriptedReply.malformed("{not json"), "fine afterwards")
    client = raw_client(scripted_llm)
    with pytest.raises(openai.APIConnectionError):
        client.chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        client.chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
    answer = client.chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
    assert answer.choices[0].message.content == "fine afterwards"


def test_reply_delay_and_fixed_latency_are_applied(scripted_llm: ScriptedLLMServer) -> None:
    scripted_llm.latency = 0.1
    scripted_llm.add(ScriptedReply.text("late", delay=0.2))
    started = time.perf_counter()
    raw_client(scripted_llm).chat.completions.create(model="m", messages=USER)  # type: ignore[arg-type]
    assert time.perf_counter() - started >= 0.3


def test_concurrent_requests_are_served_at_the_same_time() -> None:
    # All 6 requests must be inside the server at once to pass the barrier; a server that
    # handled them one by one would break it (BrokenBarrierError -> HTTP 500).
    barrier = threading.Barrier(6, timeout=5)

    def responder(request: ChatRequest) -> str:
        barrier.wait()
        return request.last_user_text.upper()

    with ScriptedLLMServer(responder=responder, latency=0.05) as server:
        client = raw_client(server)
        prompts = [f"prompt {i}" for i in range(6)]
        with ThreadPoolExecutor(6) as pool:
            answers = list(
                pool.map(
                    lambda p: client.chat.completions.create(
                        model="m", messages=[{"role": "user", "content": p}]
                    ),
                    prompts,
                )
            )
        assert [a.choices[0].message.content for a in answers] == [p.upper() for p in prompts]
        assert sorted(r.last_user_text for r in server.requests) == sorted(prompts)
        assert server.errors == []


def test_bad_requests_get_400(scripted_llm: ScriptedLLMServer) -> None:
    def post(body: bytes) -> tuple[int, str]:
        request = urllib.request.Request(
            f"{scripted_llm.base_url}/chat/completions",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(request, timeout=5) as response:
                return response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            return error.code, error.read().decode()

    status, body = post(b"{broken")
    assert status == 400 and "invalid chat request" in json.loads(body)["error"]["message"]
    status, body = post(json.dumps({"model": "m", "messages": USER, "stream": True}).encode())
    assert status == 400 and "does not stream" in body
    assert scripted_llm.request_count == 0


def test_stopping_the_server_frees_the_port() -> None:
    with ScriptedLLMServer() as server:
        port = server.port
    with socket.socket() as probe, pytest.raises(ConnectionRefusedError):
        probe.connect(("127.0.0.1", port))
