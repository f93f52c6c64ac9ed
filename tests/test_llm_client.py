"""LLMClient against the scripted server: real openai client, real HTTP on 127.0.0.1."""

from __future__ import annotations

import contextvars
import itertools
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from pydantic import BaseModel, Field, ValidationError

from trace_graph.llm import (
    ChatMessage,
    ChatRequest,
    LLMCache,
    LLMClient,
    LLMConfig,
    LLMReplyError,
    LLMRequestError,
    LLMUnavailableError,
    ScriptedLLMServer,
    ScriptedReply,
    Usage,
)
from trace_graph.llm.client import LLAMACPP_MAX_LENGTH_BOUND

ASK = [{"role": "user", "content": "What is 3 + 4?"}]


class Sum(BaseModel):
    reasoning: str
    total: int


# --- plain chat -------------------------------------------------------------------------------


def test_chat_returns_text_usage_and_sends_config_defaults(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    scripted_llm.add("Seven.")
    reply = scripted_llm_client.chat([ChatMessage(role="system", content="Be brief."), *ASK])
    assert (reply.text, reply.finish_reason, reply.cached, reply.model) == (
        "Seven.",
        "stop",
        False,
        "scripted-model",
    )
    assert reply.usage.completion_tokens == 2 and reply.usage.prompt_tokens == 6  # chars / 4
    (request,) = scripted_llm.requests
    assert (request.temperature, request.max_tokens, request.seed) == (0.0, 1024, None)
    assert request.response_format is None
    assert [m.role for m in request.messages] == ["system", "user"]


def test_chat_passes_explicit_options(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    scripted_llm.add(ScriptedReply.text("cut", finish_reason="length"))
    reply = scripted_llm_client.chat(ASK, temperature=0.9, max_tokens=5, seed=11, sample_index=3)
    assert reply.truncated
    (request,) = scripted_llm.requests
    assert (request.temperature, request.max_tokens, request.seed) == (0.9, 5, 11)
    assert "sample_index" not in request.model_dump()  # a cache concept, not sent


def test_chat_rejects_malformed_messages(scripted_llm_client: LLMClient) -> None:
    with pytest.raises(ValidationError):
        scripted_llm_client.chat([{"role": "wizard", "content": "hi"}])


# --- structured replies -----------------------------------------------------------------------


@pytest.mark.parametrize(
    "reply",
    [
        '```json\n{"reasoning": "3 plus 4", "total": 7}\n```',
        'Sure! Here is the answer: {"reasoning": "3 plus 4", "total": 7,} Let me know.',
        "{'reasoning': '3 plus 4', 'total': 7}",
        "<reasoning>3 plus 4</reasoning>\n<total>7</total>",
    ],
    ids=["fenced", "prose-trailing-comma", "python-literal", "xml-tags"],
)
def test_structured_parses_messy_replies(
    reply: str, scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    scripted_llm.add(reply)
    assert scripted_llm_client.structured(ASK, Sum) == Sum(reasoning="3 plus 4", total=7)
    assert scripted_llm.request_count == 1


def test_structured_accepts_raw_control_characters(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    scripted_llm.add('{"reasoning": "3 plus 4\nis\tseven", "total": 7}')  # raw newline and tab
    assert scripted_llm_client.structured(ASK, Sum).reasoning == "3 plus 4\nis\tseven"


def test_structured_re_asks_once_with_the_precise_error(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    scripted_llm.add('{"reasoning": "easy", "total": "seven"}', '{"reasoning": "easy", "total": 7}')
    assert scripted_llm_client.structured(ASK, Sum) == Sum(reasoning="easy", total=7)
    first, second = scripted_llm.requests
    assert [m.role for m in second.messages] == ["user", "assistant", "user"]
    assert second.messages[1].text == '{"reasoning": "easy", "total": "seven"}'
    correction = second.messages[2].text
    assert "`total`: Input should be a valid integer" in correction and "'seven'" in correction
    assert second.response_format == first.response_format
    assert scripted_llm_client.usage.calls == 2


def test_structured_raises_after_the_second_bad_reply(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    scripted_llm.add("I think it is seven.", '{"reasoning": "still no total"}')
    with pytest.raises(LLMReplyError, match=r"even after re-asking once.*`total`: Field required") as caught:
        scripted_llm_client.structured(ASK, Sum)
    assert caught.value.text == '{"reasoning": "still no total"}'
    assert "Field required" in caught.value.error
    assert "no JSON object" in scripted_llm.requests[1].messages[-1].text
    assert scripted_llm.request_count == 2


def test_truncated_reply_is_explained_in_the_re_ask(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    scripted_llm.add(
        ScriptedReply.text('{"reasoning": "a very long explanation', finish_reason="length"),
        '{"reasoning": "short", "total": 7}',
    )
    assert scripted_llm_client.structured(ASK, Sum, max_tokens=12).total == 7
    correction = scripted_llm.requests[1].messages[-1].text
    assert "cut off" in correction and "max_tokens limit of 12" in correction


# --- response_format per structured_output mode ------------------------------------------------


def test_json_schema_mode_sends_openai_response_format(scripted_llm: ScriptedLLMServer) -> None:
    scripted_llm.add('{"reasoning": "r", "total": 1}')
    LLMClient(scripted_llm.llm_config(structured_output="json_schema")).structured(ASK, Sum)
    (request,) = scripted_llm.requests
    assert request.response_format == {
        "type": "json_schema",
        "json_schema": {"name": "Sum", "schema": Sum.model_json_schema(), "strict": False},
    }
    assert request.messages[-1].text == ASK[0]["content"]


def test_llamacpp_mode_sends_json_object_with_schema(scripted_llm: ScriptedLLMServer) -> None:
    scripted_llm.add('{"reasoning": "r", "total": 1}')
    LLMClient(scripted_llm.llm_config(structured_output="llamacpp_json_object")).structured(ASK, Sum)
    (request,) = scripted_llm.requests
    assert request.response_format == {"type": "json_object", "schema": Sum.model_json_schema()}


class LongNote(BaseModel):
    note: str = Field(max_length=5000)
    short: str = Field(max_length=40)
    items: list[int] = Field(max_length=3000)


def test_llamacpp_mode_caps_length_bounds_its_grammar_cannot_hold(scripted_llm: ScriptedLLMServer) -> None:
    scripted_llm.add('{"note": "n", "short": "s", "items": []}')
    client = LLMClient(scripted_llm.llm_config(structured_output="llamacpp_json_object"))
    client.structured(ASK, LongNote)
    (request,) = scripted_llm.requests
    sent = request.response_format["schema"]["properties"]
    assert sent["note"]["maxLength"] == sent["items"]["maxItems"] == LLAMACPP_MAX_LENGTH_BOUND
    assert sent["short"]["maxLength"] == 40
    assert LongNote.model_json_schema()["properties"]["note"]["maxLength"] == 5000  # caller's copy kept


def test_json_schema_mode_keeps_length_bounds(scripted_llm: ScriptedLLMServer) -> None:
    scripted_llm.add('{"note": "n", "short": "s", "items": []}')
    LLMClient(scripted_llm.llm_config(structured_output="json_schema")).structured(ASK, LongNote)
    (request,) = scripted_llm.requests
    assert request.response_format["json_schema"]["schema"]["properties"]["note"]["maxLength"] == 5000


def test_none_mode_puts_the_schema_in_the_prompt(scripted_llm: ScriptedLLMServer) -> None:
    scripted_llm.add('{"reasoning": "r", "total": 1}')
    LLMClient(scripted_llm.llm_config(structured_output="none")).structured(ASK, Sum)
    (request,) = scripted_llm.requests
    assert request.response_format is None
    assert request.messages[-1].text.startswith(ASK[0]["content"])
    assert '"total": {"title": "Total", "type": "integer"}' in request.messages[-1].text


def test_rejected_response_format_falls_back_to_the_prompt_and_remembers(
    scripted_llm: ScriptedLLMServer,
) -> None:
    def llama_cpp_like(request: ChatRequest) -> ScriptedReply | str:
        if request.response_format is not None:  # what llama-cpp-python answers to json_schema
            return ScriptedReply.error(500, "response_format.type Input should be 'text' or 'json_object'")
        return '{"reasoning": "r", "total": 3}'

    scripted_llm.responder = llama_cpp_like
    client = LLMClient(scripted_llm.llm_config(structured_output="json_schema"), cache=False)
    assert client.structured(ASK, Sum).total == 3
    assert client.structured_output == "none"
    assert client.structured(ASK, Sum).total == 3
    formats = [request.response_format is not None for request in scripted_llm.requests]
    assert formats == [True, False, False]  # the 500 was not retried, and not sent again


# --- cache ------------------------------------------------------------------------------------


def numbered_replies(server: ScriptedLLMServer) -> None:
    counter = itertools.count(1)
    server.responder = lambda request: f"reply {next(counter)}"


def test_identical_calls_are_served_from_the_cache(scripted_llm: ScriptedLLMServer, tmp_path: Path) -> None:
    numbered_replies(scripted_llm)
    client = LLMClient(scripted_llm.llm_config(cache_path=tmp_path / "cache.sqlite"))
    first = client.chat(ASK)
    again = client.chat(ASK)
    assert (first.text, first.cached) == ("reply 1", False)
    assert (again.text, again.cached, again.usage) == ("reply 1", True, first.usage)
    assert scripted_llm.request_count == 1
    assert (client.usage.calls, client.usage.cache_hits) == (1, 1)
    assert client.usage.prompt_tokens == first.usage.prompt_tokens  # hits cost no tokens


@pytest.mark.parametrize(
    "change",
    [{"temperature": 0.7}, {"sample_index": 1}, {"seed": 3}, {"max_tokens": 9}],
    ids=["temperature", "sample_index", "seed", "max_tokens"],
)
def test_any_request_difference_misses_the_cache(
    change: dict[str, float], scripted_llm: ScriptedLLMServer, tmp_path: Path
) -> None:
    numbered_replies(scripted_llm)
    client = LLMClient(scripted_llm.llm_config(cache_path=tmp_path / "cache.sqlite"))
    assert client.chat(ASK).text == "reply 1"
    assert client.chat(ASK, **change).text == "reply 2"  # type: ignore[arg-type]
    assert client.chat(ASK, **change).text == "reply 2"  # type: ignore[arg-type]
    assert scripted_llm.request_count == 2


def test_cache_persists_across_clients_and_can_be_disabled(
    scripted_llm: ScriptedLLMServer, tmp_path: Path
) -> None:
    numbered_replies(scripted_llm)
    config = scripted_llm.llm_config(cache_path=tmp_path / "cache.sqlite")
    with LLMClient(config) as writer:
        writer.chat(ASK, sample_index=4)
    with LLMClient(config) as reader:
        assert reader.chat(ASK, sample_index=4).cached
    shared = LLMCache(tmp_path / "cache.sqlite")
    assert len(shared) == 1
    assert LLMClient(config, cache=shared).chat(ASK, sample_index=4).cached
    uncached = LLMClient(config, cache=False)
    assert not uncached.chat(ASK, sample_index=4).cached
    assert scripted_llm.request_count == 2


def test_cache_keys_include_the_endpoint_unless_scoped(tmp_path: Path) -> None:
    cache = LLMCache(tmp_path / "cache.sqlite")
    with (
        ScriptedLLMServer(responder=lambda r: "from A") as a,
        ScriptedLLMServer(responder=lambda r: "from B") as b,
    ):
        assert LLMClient(a.llm_config(), cache=cache).chat(ASK).text == "from A"
        assert LLMClient(b.llm_config(), cache=cache).chat(ASK).text == "from B"
        scoped = {"cache_scope": "qwen2.5-coder-1.5b-q4km"}
        assert LLMClient(a.llm_config(**scoped), cache=cache).chat(ASK).text == "from A"
        assert LLMClient(b.llm_config(**scoped), cache=cache).chat(ASK).text == "from A"
        assert b.request_count == 1


# --- retries and failures ---------------------------------------------------------------------


def test_transient_errors_are_retried_until_success(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    scripted_llm.add(
        ScriptedReply.error(500),
        ScriptedReply.drop(),
        ScriptedReply.error(503),
        ScriptedReply.malformed(),
        "ok",
    )
    client = LLMClient(scripted_llm.llm_config(max_retries=4), cache=False)
    assert client.chat(ASK).text == "ok"
    assert scripted_llm.request_count == 5
    assert (client.usage.calls, client.usage.failed_calls) == (1, 0)


def test_retry_after_is_honored(scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient) -> None:
    scripted_llm.add(ScriptedReply.error(429, "rate limited", retry_after=1), "ok")
    started = time.perf_counter()
    assert scripted_llm_client.chat(ASK).text == "ok"
    assert time.perf_counter() - started >= 1.0  # the scripted backoff alone would be ~10 ms
    assert scripted_llm.request_count == 2


def test_retry_after_beyond_the_deadline_gives_up_at_once(scripted_llm: ScriptedLLMServer) -> None:
    scripted_llm.add(ScriptedReply.error(429, "come back in an hour", retry_after=3600))
    with pytest.raises(LLMUnavailableError, match=r"rate-limiting.*HTTP 429 after 1 attempts.*an hour"):
        LLMClient(scripted_llm.llm_config(), cache=False).chat(ASK)


def test_persistent_server_errors_give_unavailable_after_bounded_retries(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    scripted_llm.responder = lambda request: ScriptedReply.error(503, "model is loading")
    with pytest.raises(
        LLMUnavailableError, match=r"kept failing: HTTP 503 after 4 attempts.*model is loading"
    ):
        scripted_llm_client.chat(ASK)
    assert scripted_llm.request_count == 4  # max_retries=3
    assert scripted_llm_client.usage.failed_calls == 1


@pytest.mark.parametrize(
    ("status", "hint"),
    [(400, "retrying would not help"), (401, "OPENAI_API_KEY"), (404, "base_url ends with /v1")],
)
def test_client_errors_fail_fast(
    status: int, hint: str, scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient
) -> None:
    scripted_llm.add(ScriptedReply.error(status, "nope"), "never reached")
    with pytest.raises(LLMRequestError, match=hint) as caught:
        scripted_llm_client.chat(ASK)
    assert (caught.value.status_code, caught.value.body) == (status, "nope")
    assert scripted_llm.request_count == 1


def test_dead_endpoint_fails_fast_with_a_clear_message() -> None:
    with socket.socket() as placeholder:  # a port that was free a moment ago and has no listener
        placeholder.bind(("127.0.0.1", 0))
        port = placeholder.getsockname()[1]
    base_url = f"http://127.0.0.1:{port}/v1"
    client = LLMClient(LLMConfig(base_url=base_url, cache_path=None), cache=False)  # default retry policy
    started = time.perf_counter()
    with pytest.raises(LLMUnavailableError) as caught:
        client.chat(ASK)
    assert time.perf_counter() - started < 10
    message = str(caught.value)
    assert base_url in message and "cannot be reached" in message and "after 4 attempts" in message
    assert "optitrace llm serve" in message and "OPENAI_BASE_URL" in message


def test_slow_endpoint_times_out(scripted_llm: ScriptedLLMServer) -> None:
    scripted_llm.responder = lambda request: ScriptedReply.text("too late", delay=1.0)
    client = LLMClient(scripted_llm.llm_config(timeout=0.3, max_retries=1), cache=False)
    with pytest.raises(LLMUnavailableError, match=r"did not answer within the 0.3 s timeout"):
        client.chat(ASK)
    assert scripted_llm.request_count == 2


def test_no_configured_endpoint_is_a_clear_error(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "OPTITRACE_MODEL", "OPENAI_MODEL"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("OPTITRACE_CONFIG", str(tmp_path / "absent.toml"))
    with pytest.raises(LLMUnavailableError, match=r"No LLM endpoint is configured.*optitrace llm serve"):
        LLMClient()


# --- usage accounting -------------------------------------------------------------------------


def test_usage_totals_snapshots_and_trackers(scripted_llm: ScriptedLLMServer, tmp_path: Path) -> None:
    numbered_replies(scripted_llm)
    client = LLMClient(scripted_llm.llm_config(cache_path=tmp_path / "c.sqlite"))
    first = client.chat(ASK)
    before = client.usage
    with client.track() as tracker:
        second = client.chat(ASK, sample_index=1)
        client.chat(ASK)  # cache hit
    assert tracker.usage.calls == 1 and tracker.usage.cache_hits == 1
    assert tracker.usage.total_tokens == second.usage.total_tokens
    assert (client.usage - before).calls == tracker.usage.calls
    assert client.usage.prompt_tokens == first.usage.prompt_tokens + second.usage.prompt_tokens
    assert client.usage.seconds >= first.seconds + second.seconds
    assert Usage(calls=1) + Usage(calls=2, seconds=0.5) == Usage(calls=3, seconds=0.5)


def test_trackers_in_concurrent_threads_count_separately(scripted_llm: ScriptedLLMServer) -> None:
    scripted_llm.responder = lambda request: "ok"
    client = LLMClient(scripted_llm.llm_config(), cache=False)
    start = threading.Barrier(3, timeout=5)  # overlap the three tracked blocks

    def problem(calls: int) -> int:
        with client.track() as tracker:
            start.wait()
            for index in range(calls):
                client.chat(ASK, sample_index=index)
        return tracker.usage.calls

    with ThreadPoolExecutor(3) as pool:
        assert list(pool.map(problem, [1, 2, 5])) == [1, 2, 5]
    assert client.usage.calls == 8


def test_a_tracker_follows_work_handed_to_a_pool_with_its_context(scripted_llm: ScriptedLLMServer) -> None:
    scripted_llm.responder = lambda request: "ok"
    client = LLMClient(scripted_llm.llm_config(), cache=False)
    with client.track() as tracker, ThreadPoolExecutor(2) as pool:
        context = contextvars.copy_context()
        futures = [pool.submit(context.copy().run, client.chat, ASK, sample_index=i) for i in range(4)]
        for future in futures:
            future.result()
    assert tracker.usage.calls == 4


# --- concurrency ------------------------------------------------------------------------------


def test_eight_threads_share_one_client_and_cache(scripted_llm: ScriptedLLMServer, tmp_path: Path) -> None:
    scripted_llm.latency = 0.05
    scripted_llm.responder = lambda request: f"answer to {request.last_user_text}"
    client = LLMClient(scripted_llm.llm_config(cache_path=tmp_path / "c.sqlite"))
    questions = [f"question {i % 16}" for i in range(64)]  # every question asked four times

    def ask(question: str) -> str:
        return client.chat([{"role": "user", "content": question}]).text

    with ThreadPoolExecutor(8) as pool:
        answers = list(pool.map(ask, questions))
    assert answers == [f"answer to {q}" for q in questions]
    usage = client.usage
    assert usage.calls + usage.cache_hits == 64
    assert usage.calls == scripted_llm.request_count
    assert 16 <= usage.calls < 64  # concurrent first asks may race; later repeats must hit
    assert client.chat([{"role": "user", "content": "question 3"}]).cached


# --- configuration ----------------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "OPTITRACE_MODEL", "OPENAI_MODEL"):
        monkeypatch.delenv(name, raising=False)
    config_file = tmp_path / "config.toml"
    monkeypatch.setenv("OPTITRACE_CONFIG", str(config_file))
    return config_file


def test_from_environment_is_none_when_nothing_is_configured(clean_env: Path) -> None:
    assert LLMConfig.from_environment() is None


def test_config_file_is_read(clean_env: Path) -> None:
    clean_env.write_text(
        '[llm]\nbase_url = "http://file:1/v1"\nmodel = "file-model"\nstructured_output = "none"\n'
        "temperature = 0.3\n"
    )
    config = LLMConfig.from_environment()
    assert config is not None
    assert (config.base_url, config.model, config.structured_output, config.temperature) == (
        "http://file:1/v1",
        "file-model",
        "none",
        0.3,
    )


def test_env_beats_file_and_arguments_beat_env(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clean_env.write_text('[llm]\nbase_url = "http://file:1/v1"\nmodel = "file-model"\napi_key = "file-key"\n')
    monkeypatch.setenv("OPENAI_BASE_URL", "http://env:2/v1")
    monkeypatch.setenv("OPENAI_MODEL", "env-model")
    config = LLMConfig.from_environment()
    assert config is not None
    assert (config.base_url, config.model, config.api_key) == ("http://env:2/v1", "env-model", "file-key")
    monkeypatch.setenv("OPTITRACE_MODEL", "optitrace-model")
    overridden = LLMConfig.from_environment(model="argument-model", base_url=None)
    assert overridden is not None
    assert (overridden.model, overridden.base_url) == ("argument-model", "http://env:2/v1")
    assert LLMConfig.from_environment().model == "optitrace-model"  # type: ignore[union-attr]


def test_config_file_mistakes_are_reported(clean_env: Path) -> None:
    clean_env.write_text('[llm]\nbase_url = "http://file:1/v1"\nmodle = "typo"\n')
    with pytest.raises(ValidationError, match="modle"):
        LLMConfig.from_environment()
    clean_env.write_text('llm = "not a table"\n')
    with pytest.raises(ValueError, match=r"\[llm\] must be a table"):
        LLMConfig.from_environment()


def test_cache_is_shared_safely_by_concurrent_processes(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    writer = (
        "import sys\n"
        "from trace_graph.llm.cache import CachedReply, LLMCache\n"
        "from trace_graph.llm.usage import TokenUsage\n"
        "cache = LLMCache(sys.argv[1])\n"
        "for i in range(150):\n"
        "    reply = CachedReply(text=f'{sys.argv[2]} {i}', finish_reason='stop', model='m',\n"
        "                        usage=TokenUsage(prompt_tokens=i), seconds=0.0)\n"
        "    cache.put(f'{sys.argv[2]}-{i}', reply)\n"
    )
    workers = [
        subprocess.Popen([sys.executable, "-c", writer, str(path), name], cwd=Path(__file__).parents[1])
        for name in ("first", "second", "third")
    ]
    assert [worker.wait(timeout=120) for worker in workers] == [0, 0, 0]
    cache = LLMCache(path)
    assert len(cache) == 450
    reply = cache.get("second-149")
    assert reply is not None and (reply.text, reply.usage.prompt_tokens) == ("second 149", 149)
