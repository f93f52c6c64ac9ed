"""The LLM client: any OpenAI-compatible endpoint, cached, retried, with pydantic replies."""

from trace_graph.llm.cache import LLMCache
from trace_graph.llm.client import (
    ChatMessage,
    LLMClient,
    LLMError,
    LLMReply,
    LLMReplyError,
    LLMRequestError,
    LLMUnavailableError,
)
from trace_graph.llm.config import LLMConfig
from trace_graph.llm.parsing import ReplyParseError, extract_json, extract_tags, parse_reply
from trace_graph.llm.scripted_server import ChatRequest, ScriptedLLMServer, ScriptedReply
from trace_graph.llm.usage import TokenUsage, Usage, UsageTracker, track_usage

__all__ = [
    "ChatMessage",
    "ChatRequest",
    "LLMCache",
    "LLMClient",
    "LLMConfig",
    "LLMError",
    "LLMReply",
    "LLMReplyError",
    "LLMRequestError",
    "LLMUnavailableError",
    "ReplyParseError",
    "ScriptedLLMServer",
    "ScriptedReply",
    "TokenUsage",
    "Usage",
    "UsageTracker",
    "extract_json",
    "extract_tags",
    "parse_reply",
    "track_usage",
]
