"""One small client for any OpenAI-compatible chat endpoint.

It adds to the `openai` package what an optimization loop needs: a persistent cache keyed by the
whole request, retries with backoff on transient failures only (bounded in total time, honoring
Retry-After), a clear error when the endpoint is down, token/time accounting, and structured
replies as pydantic models with lenient parsing and one corrective re-ask. Safe to share between
threads.
"""

from __future__ import annotations

import email.utils
import json
import logging
import random
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, Literal, TypeVar

import openai
from openai.types.chat import ChatCompletion
from pydantic import BaseModel, ConfigDict
from tenacity import RetryCallState, Retrying, retry_if_exception

from trace_graph.llm.cache import CachedReply, LLMCache, request_key
from trace_graph.llm.config import LLMConfig, StructuredOutput, config_file_path
from trace_graph.llm.parsing import ReplyParseError, parse_reply
from trace_graph.llm.usage import TokenUsage, Usage, UsageMeter, UsageTracker, report_to_trackers, track_usage

log = logging.getLogger(__name__)

T = TypeVar("T", bound=BaseModel)

_HOW_TO_GET_AN_ENDPOINT = (
    "Start one with `optitrace llm serve`, or point OPENAI_BASE_URL (or base_url in the [llm] table "
    "of {config}) at a running OpenAI-compatible server."
)


class ChatMessage(BaseModel):
    model_config = ConfigDict(frozen=True)

    role: Literal["system", "user", "assistant"]
    content: str


class LLMReply(BaseModel):
    """One chat answer. `seconds` is the time this call took (near zero for a cache hit); `usage`
    is what the server reported when the reply was first produced."""

    text: str
    finish_reason: str | None
    usage: TokenUsage
    seconds: float
    cached: bool
    model: str

    @property
    def truncated(self) -> bool:
        """True when the reply stopped at max_tokens rather than where the model meant to end."""
        return self.finish_reason == "length"


class LLMError(RuntimeError):
    """Base of the client's errors."""


class LLMUnavailableError(LLMError):
    """The endpoint is not configured, unreachable, or kept failing after bounded retries."""


class LLMRequestError(LLMError):
    """The endpoint refused the request itself (400, 401, 404, ...): retrying would not help."""

    def __init__(self, message: str, *, status_code: int, body: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.body = body


class LLMReplyError(LLMError):
    """The model's reply could not be used, even after one corrective re-ask."""

    def __init__(self, message: str, *, text: str, error: str) -> None:
        super().__init__(message)
        self.text = text
        self.error = error


class _MalformedResponse(Exception):
    """The server answered 200 with something that is not a chat completion."""


class LLMClient:
    """`LLMClient(config).chat([...])` or `.structured([...], MyReply)`; see the module docstring."""

    def __init__(self, config: LLMConfig | None = None, *, cache: LLMCache | bool | None = True) -> None:
        resolved = config or LLMConfig.from_environment()
        if resolved is None:
            raise LLMUnavailableError(
                "No LLM endpoint is configured. " + _HOW_TO_GET_AN_ENDPOINT.format(config=config_file_path())
            )
        self.config = resolved
        # The openai client's own retries are off: ours classify errors and bound the total time.
        self._openai = openai.OpenAI(
            base_url=resolved.base_url,
            api_key=resolved.api_key,
            timeout=openai.Timeout(resolved.timeout, connect=min(resolved.timeout, 10.0)),
            max_retries=0,
        )
        self._owns_cache = cache is True
        if cache is True:
            self.cache = LLMCache(resolved.cache_path) if resolved.cache_path is not None else None
        else:
            # not `cache or None`: an empty LLMCache is falsy (it has __len__)
            self.cache = cache if isinstance(cache, LLMCache) else None
        self._meter = UsageMeter()
        self._structured_output: StructuredOutput = resolved.structured_output
        self._mode_lock = threading.Lock()

    @property
    def usage(self) -> Usage:
        """Totals since this client was made (a snapshot: `after - before` gives the work between)."""
        return self._meter.usage

    @property
    def structured_output(self) -> StructuredOutput:
        """The structured-output mode in use; "none" once the server has rejected response_format."""
        return self._structured_output

    @contextmanager
    def track(self) -> Iterator[UsageTracker]:
        """`with client.track() as tracker:` counts this client's calls made in this context only."""
        with track_usage(self) as tracker:
            yield tracker

    def chat(
        self,
        messages: Sequence[ChatMessage] | Sequence[dict[str, Any]],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        sample_index: int = 0,
        response_schema: dict[str, Any] | None = None,
        seed: int | None = None,
    ) -> LLMReply:
        """One chat completion. `response_schema` asks for JSON of that shape in the configured
        structured-output mode; `sample_index` tells repeated samples apart in the cache."""
        conversation = [ChatMessage.model_validate(message) for message in messages]
        mode = self._structured_output
        request = self._request(conversation, temperature, max_tokens, response_schema, seed, mode)
        try:
            return self._answer(request, sample_index)
        except LLMRequestError as error:
            if "response_format" not in request or not _rejects_response_format(error.body):
                raise
            self._fall_back_to_prompted_json(mode, error)
        request = self._request(conversation, temperature, max_tokens, response_schema, seed, "none")
        return self._answer(request, sample_index)

    def structured(
        self,
        messages: Sequence[ChatMessage] | Sequence[dict[str, Any]],
        reply_model: type[T],
        *,
        temperature: float | None = None,
        max_tokens: int | None = None,
        sample_index: int = 0,
        seed: int | None = None,
    ) -> T:
        """The reply as a `reply_model`. A reply that does not parse or validate is sent back once
        with the precise error; if the second reply fails too, `LLMReplyError` carries it."""
        conversation = [ChatMessage.model_validate(message) for message in messages]
        schema = reply_model.model_json_schema()
        options: dict[str, Any] = {
            "temperature": temperature,
            "max_tokens": max_tokens,
            "sample_index": sample_index,
            "seed": seed,
            "response_schema": schema,
        }
        reply = self.chat(conversation, **options)
        try:
            return parse_reply(reply.text, reply_model)
        except ReplyParseError as error:
            problem = self._describe_problem(error, reply, max_tokens)
        correction = ChatMessage(
            role="user",
            content=f"Your reply could not be used. {problem}\n"
            "Reply again with only the corrected JSON object, nothing else.",
        )
        second = self.chat(
            [*conversation, ChatMessage(role="assistant", content=reply.text), correction], **options
        )
        try:
            return parse_reply(second.text, reply_model)
        except ReplyParseError as error:
            second_problem = self._describe_problem(error, second, max_tokens)
            raise LLMReplyError(
                f"The model's reply could not be read as {reply_model.__name__}, even after re-asking "
                f"once with the error. {second_problem}",
                text=second.text,
                error=second_problem,
            ) from error

    def close(self) -> None:
        self._openai.close()
        if self._owns_cache and self.cache is not None:
            self.cache.close()

    def __enter__(self) -> LLMClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"LLMClient(base_url={self.config.base_url!r}, model={self.config.model!r})"

    def _request(
        self,
        conversation: list[ChatMessage],
        temperature: float | None,
        max_tokens: int | None,
        schema: dict[str, Any] | None,
        seed: int | None,
        mode: StructuredOutput,
    ) -> dict[str, Any]:
        """The exact chat.completions arguments; the cache key is derived from them."""
        if schema is not None and mode == "none":
            conversation = _with_schema_instruction(conversation, schema)
        request: dict[str, Any] = {
            "model": self.config.model,
            "messages": [message.model_dump() for message in conversation],
            "temperature": self.config.temperature if temperature is None else temperature,
            "max_tokens": self.config.max_tokens if max_tokens is None else max_tokens,
        }
        if seed is not None:
            request["seed"] = seed
        if schema is not None and mode == "json_schema":
            name = "".join(c if c.isalnum() or c in "_-" else "_" for c in schema.get("title", "reply"))[:64]
            request["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": name or "reply", "schema": schema, "strict": False},
            }
        elif schema is not None and mode == "llamacpp_json_object":
            bounded = _within_llamacpp_grammar_limit(schema)
            request["response_format"] = {"type": "json_object", "schema": bounded}
        return request

    def _answer(self, request: dict[str, Any], sample_index: int) -> LLMReply:
        started = time.perf_counter()
        key = request_key(
            {
                **request,
                "endpoint": self.config.cache_scope or self.config.base_url,
                "sample_index": sample_index,
            }
        )
        cached = self.cache.get(key) if self.cache is not None else None
        if cached is not None:
            seconds = time.perf_counter() - started
            self._record(Usage(cache_hits=1, seconds=seconds))
            return LLMReply(**cached.model_dump(exclude={"seconds"}), seconds=seconds, cached=True)
        try:
            completion = self._complete_with_retries(request)
        except BaseException:
            self._record(Usage(failed_calls=1, seconds=time.perf_counter() - started))
            raise
        seconds = time.perf_counter() - started
        choice = completion.choices[0]
        tokens = TokenUsage(
            prompt_tokens=completion.usage.prompt_tokens if completion.usage else 0,
            completion_tokens=completion.usage.completion_tokens if completion.usage else 0,
        )
        reply = LLMReply(
            text=choice.message.content or "",
            finish_reason=choice.finish_reason,
            usage=tokens,
            seconds=seconds,
            cached=False,
            model=completion.model or self.config.model,
        )
        self._record(
            Usage(
                calls=1,
                prompt_tokens=tokens.prompt_tokens,
                completion_tokens=tokens.completion_tokens,
                seconds=seconds,
            )
        )
        if self.cache is not None:
            self.cache.put(key, CachedReply(**reply.model_dump(exclude={"cached"})))
        return reply

    def _complete_with_retries(self, request: dict[str, Any]) -> ChatCompletion:
        attempts = 0
        started = time.monotonic()

        def attempt() -> ChatCompletion:
            nonlocal attempts
            attempts += 1
            try:
                completion = self._openai.chat.completions.create(**request)
            except ValueError as error:  # the body was not JSON at all
                raise _MalformedResponse(f"a body that is not JSON ({error})") from error
            if not isinstance(completion, ChatCompletion) or not completion.choices:
                raise _MalformedResponse(f"a body that is not a chat completion: {str(completion)[:200]!r}")
            return completion

        retrying = Retrying(
            retry=retry_if_exception(lambda error: _is_transient(error, request)),
            stop=self._should_stop,
            wait=self._wait,
            reraise=True,
            before_sleep=lambda state: log.info(
                "LLM call to %s failed (%s); retry %d",
                self.config.base_url,
                _outcome(state),
                state.attempt_number,
            ),
        )
        try:
            return retrying(attempt)
        except openai.APIStatusError as error:
            transient = _is_transient(error, request)
            raise self._status_error(error, transient, attempts, time.monotonic() - started) from error
        except (openai.APIConnectionError, _MalformedResponse) as error:
            raise self._unreachable_error(error, attempts, time.monotonic() - started) from error

    def _should_stop(self, state: RetryCallState) -> bool:
        if state.attempt_number > self.config.max_retries:
            return True
        # a Retry-After that runs past the deadline means giving up now rather than retrying early
        upcoming = _retry_after_seconds(_outcome(state)) or 0.0
        return state.seconds_since_start + upcoming >= self.config.retry_deadline

    def _wait(self, state: RetryCallState) -> float:
        retry_after = _retry_after_seconds(_outcome(state))
        if retry_after is not None:
            return retry_after
        exponential = self.config.retry_initial_wait * 2 ** (state.attempt_number - 1)
        backoff = min(exponential, self.config.retry_max_wait) + random.uniform(
            0, self.config.retry_initial_wait
        )
        remaining = self.config.retry_deadline - (state.seconds_since_start or 0.0)
        return max(0.0, min(backoff, remaining))

    def _status_error(
        self, error: openai.APIStatusError, transient: bool, attempts: int, seconds: float
    ) -> LLMError:
        status, body = error.status_code, _body_text(error)
        where = f"The LLM endpoint at {self.config.base_url}"
        if transient:
            what = "kept rate-limiting the requests" if status == 429 else "kept failing"
            return LLMUnavailableError(
                f"{where} {what}: HTTP {status} after {attempts} attempts in {seconds:.1f} s: {body}"
            )
        hint = {
            401: "Check OPENAI_API_KEY (or api_key in the [llm] config table).",
            403: "Check OPENAI_API_KEY (or api_key in the [llm] config table).",
            404: f"Check the model name {self.config.model!r} and that base_url ends with /v1.",
        }.get(status, "The request itself was refused; retrying would not help.")
        return LLMRequestError(
            f"{where} refused the request: HTTP {status}: {body}. {hint}", status_code=status, body=body
        )

    def _unreachable_error(self, error: Exception, attempts: int, seconds: float) -> LLMUnavailableError:
        if isinstance(error, openai.APITimeoutError):
            what = (
                f"did not answer within the {self.config.timeout:g} s timeout (raise timeout in the config)"
            )
        elif isinstance(error, _MalformedResponse):
            what = f"answered with {error}"
            return LLMUnavailableError(
                f"The LLM endpoint at {self.config.base_url} {what}; gave up after {attempts} attempts in "
                f"{seconds:.1f} s. Is it an OpenAI-compatible server (base_url usually ends in /v1)?"
            )
        else:
            cause = error.__cause__ or error
            what = f"cannot be reached ({type(cause).__name__}: {cause})"
        return LLMUnavailableError(
            f"The LLM endpoint at {self.config.base_url} {what}; gave up after {attempts} attempts in "
            f"{seconds:.1f} s. " + _HOW_TO_GET_AN_ENDPOINT.format(config=config_file_path())
        )

    def _fall_back_to_prompted_json(self, mode: StructuredOutput, error: LLMRequestError) -> None:
        with self._mode_lock:
            if self._structured_output != "none":
                log.warning(
                    "%s rejected response_format (%s mode: %s); this client now asks for JSON in the "
                    "prompt instead. Set structured_output in the config to skip this first failure.",
                    self.config.base_url,
                    mode,
                    error.body[:200],
                )
                self._structured_output = "none"

    def _record(self, usage: Usage) -> None:
        self._meter.add(usage)
        report_to_trackers(self, usage)

    @staticmethod
    def _describe_problem(error: ReplyParseError, reply: LLMReply, max_tokens: int | None) -> str:
        if not reply.truncated:
            return error.problem
        limit = f" of {max_tokens}" if max_tokens is not None else ""
        return f"{error.problem} (The reply stopped at the max_tokens limit{limit}; keep it shorter.)"


# llama-cpp-python turns a length bound of n into n nested grammar groups, and llama.cpp refuses a
# grammar past 2,000 nested rules; the server then crashed mid-request. 1,000 still parses (measured).
LLAMACPP_MAX_LENGTH_BOUND = 1000


def _within_llamacpp_grammar_limit(schema: Any) -> Any:
    """A copy of `schema` whose maxLength/maxItems bounds llama-cpp-python's grammar can hold."""
    if isinstance(schema, list):
        return [_within_llamacpp_grammar_limit(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    bounded = {key: _within_llamacpp_grammar_limit(value) for key, value in schema.items()}
    for key in ("maxLength", "maxItems"):
        if isinstance(bounded.get(key), int) and bounded[key] > LLAMACPP_MAX_LENGTH_BOUND:
            bounded[key] = LLAMACPP_MAX_LENGTH_BOUND
    return bounded


def _with_schema_instruction(conversation: list[ChatMessage], schema: dict[str, Any]) -> list[ChatMessage]:
    """Without server-side schema support, the schema goes at the end of the last user turn."""
    instruction = (
        "Reply with one JSON object that matches this JSON schema, and nothing else:\n"
        + json.dumps(schema, ensure_ascii=False)
    )
    if conversation and conversation[-1].role == "user":
        last = conversation[-1]
        return [*conversation[:-1], ChatMessage(role="user", content=f"{last.content}\n\n{instruction}")]
    return [*conversation, ChatMessage(role="user", content=instruction)]


def _is_transient(error: BaseException, request: dict[str, Any]) -> bool:
    if isinstance(error, openai.APIConnectionError | _MalformedResponse):  # includes timeouts
        return True
    if isinstance(error, openai.APIStatusError):
        if "response_format" in request and _rejects_response_format(_body_text(error)):
            return False  # llama.cpp answers an unsupported response_format with 500: not transient
        return error.status_code in (408, 429) or error.status_code >= 500
    return False


def _rejects_response_format(body: str) -> bool:
    lowered = body.lower()
    return "response_format" in lowered or "json_schema" in lowered


def _outcome(state: RetryCallState) -> BaseException | None:
    return state.outcome.exception() if state.outcome is not None else None


def _retry_after_seconds(error: BaseException | None) -> float | None:
    """The server's requested wait (retry-after-ms, or Retry-After in seconds or as an HTTP date)."""
    if not isinstance(error, openai.APIStatusError):
        return None
    headers = error.response.headers
    try:
        if "retry-after-ms" in headers:
            return max(0.0, float(headers["retry-after-ms"]) / 1000)
        value = headers.get("retry-after")
        if value is None:
            return None
        try:
            return max(0.0, float(value))
        except ValueError:
            when = email.utils.parsedate_to_datetime(value)
            return max(0.0, when.timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _body_text(error: openai.APIStatusError) -> str:
    """The server's error message (OpenAI-style {"error": {"message": ...}}) or its raw body."""
    body = error.body
    if isinstance(body, dict):
        inner = body.get("error", body)
        if isinstance(inner, dict) and "message" in inner:
            return str(inner["message"])
        return json.dumps(body)[:1000]
    try:
        return error.response.text[:1000]
    except Exception:
        return str(error)[:1000]
