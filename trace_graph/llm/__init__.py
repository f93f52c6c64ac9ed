"""The LLM client: any OpenAI-compatible endpoint, cached, retried, with pydantic replies."""

from trace_graph.llm.config import LLMConfig

__all__ = ["LLMConfig"]
