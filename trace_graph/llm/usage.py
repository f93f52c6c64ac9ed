"""Token and time accounting: per-call counts, client totals, and per-task trackers.

A tracker opened with `track_usage()` (or `LLMClient.track()`) sees the calls made in its own
context only. Trackers live in a ContextVar, so two threads (or asyncio tasks) working on two
problems at once each get their own numbers. Work handed to a thread pool is counted only if the
submitter copies its context (`contextvars.copy_context().run`), as with any ContextVar.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from pydantic import BaseModel, ConfigDict


class TokenUsage(BaseModel):
    """Tokens of one call, as the server reported them."""

    model_config = ConfigDict(frozen=True)

    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


class Usage(BaseModel):
    """Accumulated LLM work. `calls` are requests that reached the server (re-asks included);
    cache hits cost no tokens and are counted apart; `seconds` sums call durations, so concurrent
    calls add up to more than the wall time."""

    model_config = ConfigDict(frozen=True)

    calls: int = 0
    cache_hits: int = 0
    failed_calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(**{name: getattr(self, name) + getattr(other, name) for name in Usage.model_fields})

    def __sub__(self, other: Usage) -> Usage:
        """The work done between two snapshots: `after - before`."""
        return Usage(**{name: getattr(self, name) - getattr(other, name) for name in Usage.model_fields})


class UsageMeter:
    """A thread-safe running total of `Usage`."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._usage = Usage()

    @property
    def usage(self) -> Usage:
        """A snapshot; subtract two snapshots to get the work in between."""
        with self._lock:
            return self._usage

    def add(self, usage: Usage) -> None:
        with self._lock:
            self._usage = self._usage + usage


class UsageTracker(UsageMeter):
    """Usage seen inside one `with track_usage()` block, optionally of one client only."""

    def __init__(self, source: object | None = None) -> None:
        super().__init__()
        self.source = source


_active_trackers: ContextVar[tuple[UsageTracker, ...]] = ContextVar("optitrace_llm_trackers", default=())


@contextmanager
def track_usage(source: object | None = None) -> Iterator[UsageTracker]:
    """Count the LLM work done in this context while the block runs (nested blocks all count it).

    With `source`, only calls reported by that source (an LLMClient) are counted.
    """
    tracker = UsageTracker(source)
    token = _active_trackers.set((*_active_trackers.get(), tracker))
    try:
        yield tracker
    finally:
        _active_trackers.reset(token)


def report_to_trackers(source: object, usage: Usage) -> None:
    """Add one call's usage to every tracker open in the caller's context that wants it."""
    for tracker in _active_trackers.get():
        if tracker.source is None or tracker.source is source:
            tracker.add(usage)
