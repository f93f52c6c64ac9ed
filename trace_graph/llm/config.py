"""Where the LLM lives: endpoint, key, model and call defaults, from env or a config file.

Precedence: explicit arguments > environment (OPENAI_BASE_URL, OPENAI_API_KEY, OPTITRACE_MODEL or
OPENAI_MODEL) > config file ($OPTITRACE_CONFIG or ~/.config/optitrace/config.toml, table [llm]).
`LLMConfig.from_environment()` returns None when no endpoint is configured anywhere, which is the
signal for the agent layer to start the embedded local model.
"""

from __future__ import annotations

import os
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

StructuredOutput = Literal["json_schema", "llamacpp_json_object", "none"]


def config_file_path() -> Path:
    explicit = os.environ.get("OPTITRACE_CONFIG")
    if explicit:
        return Path(explicit).expanduser()
    base = Path(os.environ.get("XDG_CONFIG_HOME", Path.home() / ".config"))
    return base / "optitrace" / "config.toml"


def default_cache_path() -> Path:
    base = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache"))
    return base / "optitrace" / "llm-cache.sqlite"


class LLMConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    base_url: str
    api_key: str = "not-needed"
    model: str = "default"
    structured_output: StructuredOutput = Field(
        default="json_schema",
        description="json_schema = OpenAI response_format; llamacpp_json_object = "
        '{"type": "json_object", "schema": ...} as llama-cpp-python wants; none = prompt + lenient parse',
    )
    temperature: float = 0.0
    max_tokens: int = 1024
    timeout: float = 120.0
    max_retries: int = 3
    cache_path: Path | None = Field(default_factory=default_cache_path)
    retry_initial_wait: float = Field(
        default=0.5, ge=0, description="seconds before the first retry; doubles per retry, with jitter"
    )
    retry_max_wait: float = Field(default=8.0, ge=0, description="cap on one backoff wait")
    retry_deadline: float = Field(
        default=30.0,
        ge=0,
        description="no retry starts (nor waits out a Retry-After) past this many seconds after the "
        "first attempt, so a dead endpoint fails in seconds, not minutes",
    )
    cache_scope: str | None = Field(
        default=None,
        description="what names the endpoint in cache keys (default: base_url); set it when one model "
        "is served at changing addresses so its cached replies stay valid",
    )

    @classmethod
    def from_environment(cls, **overrides: Any) -> LLMConfig | None:
        """The configured endpoint, or None when neither env nor the config file names one."""
        file_values = _read_config_file()
        env_values = {
            key: value
            for key, value in {
                "base_url": os.environ.get("OPENAI_BASE_URL"),
                "api_key": os.environ.get("OPENAI_API_KEY"),
                "model": os.environ.get("OPTITRACE_MODEL") or os.environ.get("OPENAI_MODEL"),
            }.items()
            if value
        }
        values = {**file_values, **env_values, **{k: v for k, v in overrides.items() if v is not None}}
        if not values.get("base_url"):
            return None
        return cls.model_validate(values)


def _read_config_file() -> dict[str, Any]:
    path = config_file_path()
    if not path.is_file():
        return {}
    with path.open("rb") as handle:
        data = tomllib.load(handle)
    llm = data.get("llm", {})
    if not isinstance(llm, dict):
        raise ValueError(f"{path}: [llm] must be a table")
    return llm
