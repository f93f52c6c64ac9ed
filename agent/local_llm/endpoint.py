"""Which LLM endpoint a command talks to: the configured one, else the embedded local model.

Precedence: a configured endpoint (env or config file, see trace_graph.llm.config) always wins.
Without one, we reuse a shared embedded server (`optitrace llm serve`) or this process's own, or
start one on demand: once per process, shared by all callers in it, stopped when the process exits.
"""

from __future__ import annotations

import threading

from pydantic import BaseModel, ConfigDict, Field
from rich.console import Console

from agent.local_llm.registry import DEFAULT_MODEL_NAME, LocalModelError, get_model
from agent.local_llm.server import LocalServer, running_servers
from trace_graph.llm.config import LLMConfig, StructuredOutput


class EmbeddedLLMDefaults(BaseModel):
    """Call defaults for the embedded small model, and why."""

    model_config = ConfigDict(frozen=True)

    # The server wants llama-cpp-python's {"type": "json_object", "schema": ...}; OpenAI's
    # json_schema form returns HTTP 500 there.
    structured_output: StructuredOutput = "llamacpp_json_object"
    # A 1.5B model drifts quickly when sampled; 0 keeps formulations as steady as the server allows.
    temperature: float = 0.0
    # Room for a notes-first JSON formulation of a small problem without truncating the object.
    max_tokens: int = 1536
    # CPU prompt processing: a ~1,500-token prompt alone takes 20+ s, a 1,024-token reply ~115 s,
    # and requests queue behind each other (the server answers one at a time): with two synthesis
    # workers a request waited past 300 s and the run stopped as if the server were down. A dead
    # local server refuses connections at once, so a long read timeout costs nothing there.
    timeout: float = 1200.0
    # A local server either answers or is down; many retries of a 300 s call only hide that.
    max_retries: int = 1
    api_key: str = Field(default="not-needed", description="llama.cpp's server accepts any key")


def embedded_llm_defaults(name: str | None = None) -> EmbeddedLLMDefaults:
    """The defaults the embedded model `name` is called with (temperature/max_tokens from the registry)."""
    model = get_model(name)
    return EmbeddedLLMDefaults(temperature=model.temperature, max_tokens=model.max_tokens)


def embedded_llm_config(base_url: str, name: str | None = None) -> LLMConfig:
    model = get_model(name)
    defaults = embedded_llm_defaults(model.name)
    return LLMConfig(
        base_url=base_url,
        model=model.name,
        # On-demand servers get a new port each run; the weights' checksum, not the address, says
        # which model answered, so cached replies stay valid across runs.
        cache_scope=f"embedded:{model.name}:{model.sha256[:16]}",
        **defaults.model_dump(),
    )


_lock = threading.Lock()
_own_server: LocalServer | None = None


def _own_running_server(name: str) -> LocalServer | None:
    if _own_server is not None and _own_server.model.name == name and _own_server.is_running():
        return _own_server
    return None


def resolve_llm_config(start_if_needed: bool = True, model: str | None = None) -> LLMConfig:
    """The LLMConfig a command should use.

    A configured endpoint takes precedence. Otherwise: a shared embedded server (from `optitrace
    llm serve`) or the one this process already started; else, if `start_if_needed`, start the
    embedded model now (it stops when this process exits). Raises LocalModelError with the fix
    (install command, log tail) when the embedded model cannot run, or when nothing is running and
    `start_if_needed` is False.
    """
    configured = LLMConfig.from_environment()
    if configured is not None:
        return configured
    name = model or DEFAULT_MODEL_NAME
    global _own_server
    with _lock:
        own = _own_running_server(name)
        if own is not None:
            return embedded_llm_config(own.base_url, name)
        # On-demand servers of other processes die with their owner, so only shared ones are reused.
        for state in running_servers(name):
            if state.shared:
                return embedded_llm_config(state.base_url, name)
        if not start_if_needed:
            raise LocalModelError(
                "no LLM endpoint is configured and no embedded server is running; set OPENAI_BASE_URL "
                "(and OPENAI_API_KEY / OPTITRACE_MODEL), or start one with `optitrace llm serve`"
            )
        server = LocalServer(name)
        choice = server.thread_choice
        # stderr: commands print their results (often JSON) on stdout.
        Console(stderr=True).print(
            f"[dim]No LLM endpoint configured: starting the embedded {name} on {choice.threads} "
            f"thread(s) (load {choice.load:.2f} on {choice.cores} cores). Set OPENAI_BASE_URL to use "
            "another endpoint, or run `optitrace llm serve` to keep one running.[/dim]"
        )
        _own_server = server.start()
        return embedded_llm_config(server.base_url, name)


def stop_own_server() -> None:
    """Stop the server this process started on demand, if any (it also stops at exit)."""
    global _own_server
    with _lock:
        if _own_server is not None:
            _own_server.stop()
            _own_server = None
