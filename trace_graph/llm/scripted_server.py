"""A scripted OpenAI-compatible HTTP server on 127.0.0.1, for tests, examples and benchmarks.

It speaks real HTTP, so code under test uses the real `openai` client end to end. Replies come
from a script (consumed in order) and then from a responder callable that can answer based on the
prompt. A reply can also be an HTTP error, a malformed body, a delay, or a dropped connection.
Each request is handled on its own thread, so artificial latency does not serialize concurrent
calls (the throughput benchmark relies on that).
"""

from __future__ import annotations

import json
import math
import socket
import threading
import time
import traceback
from collections import deque
from collections.abc import Callable, Iterable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trace_graph.llm.config import LLMConfig


class ChatRequestMessage(BaseModel):
    model_config = ConfigDict(extra="allow")

    role: str
    content: str | list[Any] | None = None

    @property
    def text(self) -> str:
        if isinstance(self.content, list):  # content parts: keep the text ones
            return "".join(part.get("text", "") for part in self.content if isinstance(part, dict))
        return self.content or ""


class ChatRequest(BaseModel):
    """The JSON body of one POST /v1/chat/completions, as received."""

    model_config = ConfigDict(extra="allow")

    model: str
    messages: list[ChatRequestMessage]
    temperature: float | None = None
    max_tokens: int | None = None
    seed: int | None = None
    response_format: dict[str, Any] | None = None
    stream: bool | None = None

    @property
    def prompt_text(self) -> str:
        """All message texts joined, for responders that match on the prompt."""
        return "\n".join(message.text for message in self.messages)

    @property
    def last_user_text(self) -> str:
        return next((m.text for m in reversed(self.messages) if m.role == "user"), "")


class ScriptedReply(BaseModel):
    """One scripted answer. Build it with the classmethods; `text`, `error`, `malformed`, `drop`."""

    model_config = ConfigDict(frozen=True)

    content: str = ""
    finish_reason: str = "stop"
    status: int = 200
    body: str | None = Field(default=None, description="raw body sent instead of a chat completion")
    headers: dict[str, str] = Field(default_factory=dict)
    delay: float = Field(default=0.0, ge=0, description="seconds to wait before answering")
    drop_connection: bool = False

    @classmethod
    def text(cls, content: str, *, finish_reason: str = "stop", delay: float = 0.0) -> ScriptedReply:
        return cls(content=content, finish_reason=finish_reason, delay=delay)

    @classmethod
    def error(
        cls, status: int, message: str = "scripted error", *, retry_after: float | None = None
    ) -> ScriptedReply:
        body = json.dumps({"error": {"message": message, "type": "scripted_error", "code": status}})
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        return cls(status=status, body=body, headers=headers)

    @classmethod
    def malformed(cls, body: str = "this is not JSON {") -> ScriptedReply:
        return cls(status=200, body=body)

    @classmethod
    def drop(cls) -> ScriptedReply:
        """Close the connection without answering."""
        return cls(drop_connection=True)


Responder = Callable[[ChatRequest], ScriptedReply | str]


class ScriptedLLMServer:
    """`with ScriptedLLMServer(["first reply", ScriptedReply.error(503)]) as server: ...`

    Script entries are used first, in order; then `responder` answers; with neither left the
    server answers HTTP 410 naming the request, so a test that under-scripts fails clearly.
    """

    def __init__(
        self,
        replies: Iterable[ScriptedReply | str] = (),
        *,
        responder: Responder | None = None,
        latency: float = 0.0,
        model: str = "scripted-model",
    ) -> None:
        self.responder = responder
        self.latency = latency
        self.model = model
        self.errors: list[str] = []  # tracebacks of responders that raised
        self._script: deque[ScriptedReply] = deque()
        self._requests: list[ChatRequest] = []
        self._lock = threading.Lock()
        self._http: _HTTPServer | None = None
        self._thread: threading.Thread | None = None
        self.add(*replies)

    def add(self, *replies: ScriptedReply | str) -> None:
        """Append replies to the script."""
        with self._lock:
            self._script.extend(_as_reply(reply) for reply in replies)

    @property
    def requests(self) -> list[ChatRequest]:
        """Every chat request received so far, in arrival order (a copy)."""
        with self._lock:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        with self._lock:
            return len(self._requests)

    @property
    def remaining_script(self) -> int:
        with self._lock:
            return len(self._script)

    def reset(self) -> None:
        """Forget the script, the responder, recorded requests and errors."""
        with self._lock:
            self._script.clear()
            self._requests.clear()
            self.errors.clear()
            self.responder = None

    @property
    def port(self) -> int:
        if self._http is None:
            raise RuntimeError("the scripted server is not running; use it as a context manager")
        return int(self._http.server_address[1])

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def llm_config(self, **overrides: Any) -> LLMConfig:
        """An LLMConfig pointing here: no disk cache and quick retries, unless overridden."""
        values: dict[str, Any] = {
            "base_url": self.base_url,
            "model": self.model,
            "cache_path": None,
            "timeout": 10.0,
            "retry_initial_wait": 0.01,
            "retry_max_wait": 0.05,
            "retry_deadline": 5.0,
        }
        return LLMConfig(**{**values, **overrides})

    def start(self) -> ScriptedLLMServer:
        if self._http is not None:
            return self
        self._http = _HTTPServer(("127.0.0.1", 0), _Handler, self)
        self._thread = threading.Thread(
            target=self._http.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._http is None:
            return
        self._http.shutdown()
        self._http.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._http = None
        self._thread = None

    def __enter__(self) -> ScriptedLLMServer:
        return self.start()

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        self.stop()

    def _next_reply(self, request: ChatRequest) -> tuple[int, ScriptedReply]:
        """The request's arrival number and its reply."""
        with self._lock:
            self._requests.append(request)
            number = len(self._requests)
            scripted = self._script.popleft() if self._script else None
            responder = self.responder
        if scripted is not None:
            return number, scripted
        if responder is None:
            message = f"scripted server: no reply scripted for request #{number} and no responder set"
            return number, ScriptedReply.error(410, message)
        try:
            return number, _as_reply(responder(request))
        except Exception:
            failure = traceback.format_exc()
            with self._lock:
                self.errors.append(failure)
            return number, ScriptedReply.error(500, f"scripted server: the responder raised:\n{failure}")

    def _completion_body(self, request: ChatRequest, reply: ScriptedReply, number: int) -> dict[str, Any]:
        prompt_tokens = _rough_tokens(request.prompt_text)
        completion_tokens = _rough_tokens(reply.content)
        return {
            "id": f"chatcmpl-scripted-{number}",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": request.model or self.model,
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": reply.content},
                    "finish_reason": reply.finish_reason,
                    "logprobs": None,
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": completion_tokens,
                "total_tokens": prompt_tokens + completion_tokens,
            },
        }


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, address: tuple[str, int], handler: type[BaseHTTPRequestHandler], owner: Any) -> None:
        super().__init__(address, handler)
        self.owner: ScriptedLLMServer = owner


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as real servers do
    server: _HTTPServer

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read requests, not logs
        pass

    def do_GET(self) -> None:
        if self.path.rstrip("/") in ("/v1/models", "/models"):
            owner = self.server.owner
            model = {"id": owner.model, "object": "model", "created": 0, "owned_by": "scripted"}
            self._send_json(200, {"object": "list", "data": [model]})
        else:
            self._send_error(404, f"no such endpoint: GET {self.path}")

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path.rstrip("/") not in ("/v1/chat/completions", "/chat/completions"):
            self._send_error(404, f"no such endpoint: POST {self.path}")
            return
        try:
            request = ChatRequest.model_validate(json.loads(raw))
        except (ValueError, ValidationError) as error:
            self._send_error(400, f"invalid chat request: {error}")
            return
        if request.stream:
            self._send_error(400, "the scripted server does not stream; send stream=false")
            return
        owner = self.server.owner
        number, reply = owner._next_reply(request)
        # sleeping here blocks only this request's thread, so concurrent calls overlap
        time.sleep(owner.latency + reply.delay)
        if reply.drop_connection:
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        if reply.body is not None:
            self._send(reply.status, reply.body.encode("utf-8"), reply.headers)
        else:
            self._send_json(reply.status, owner._completion_body(request, reply, number))

    def _send_error(self, status: int, message: str) -> None:
        self._send_json(status, {"error": {"message": message, "type": "scripted_error", "code": status}})

    def _send_json(self, status: int, payload: dict[str, Any]) -> None:
        self._send(status, json.dumps(payload).encode("utf-8"), {})

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)


def _as_reply(reply: ScriptedReply | str) -> ScriptedReply:
    return ScriptedReply.text(reply) if isinstance(reply, str) else reply


def _rough_tokens(text: str) -> int:
    return max(1, math.ceil(len(text) / 4))
