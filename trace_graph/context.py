"""Context-local state of the graph: node naming and dependency recording.

Trace keeps one global, never-freed registry of every node, shared by all threads. Here nothing
global holds nodes: a node is referenced only by its children and by whoever holds it, so it is
garbage-collected like any Python object. The only shared state is small and context-local
(``contextvars``), which makes it private to each thread and each asyncio task chain:

* a ``GraphContext`` hands out human names, unique within that context (``add``, ``add_1``, ...);
* while a bundled function runs, the nodes whose ``.value`` it reads are recorded, so hidden inputs
  (``self.prompt`` inside a bundled method, nodes inside a list argument) become parents.
"""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar, Token
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from trace_graph.nodes import Node


class GraphContext:
    """A naming scope: the first node called ``x`` keeps that name, later ones become ``x_1``, ``x_2``."""

    __slots__ = ("_counts", "_lock")

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        # Contexts are per thread by default, but a user may share one across threads on purpose
        # (copy_context().run in a pool); an uncontended lock costs ~0.1 us.
        self._lock = threading.Lock()

    def unique_name(self, base: str) -> str:
        with self._lock:
            seen = self._counts.get(base, 0)
            self._counts[base] = seen + 1
        return base if seen == 0 else f"{base}_{seen}"


# No default value on purpose: a default object would be shared by every thread.
_current_context: ContextVar[GraphContext] = ContextVar("trace_graph_context")


def current_context() -> GraphContext:
    """The naming scope of the running thread/task, created on first use."""
    try:
        return _current_context.get()
    except LookupError:
        context = GraphContext()
        _current_context.set(context)
        return context


@contextmanager
def graph_context() -> Iterator[GraphContext]:
    """Start a fresh naming scope, e.g. one per training example, so names stay short."""
    token = _current_context.set(GraphContext())
    try:
        yield _current_context.get()
    finally:
        _current_context.reset(token)


# Creation order doubles as a topological order: a node's parents exist before it does. A counter is
# not a registry (it holds no node) and `next()` on itertools.count is atomic under the GIL.
_creation_counter = itertools.count()


def next_sequence_number() -> int:
    return next(_creation_counter)


# Nodes read (via `.value`) by the bundled function that is running now; None outside bundled calls.
_active_reads: ContextVar[dict[Node, None] | None] = ContextVar("trace_graph_reads", default=None)


def record_read(node: Node) -> None:
    reads = _active_reads.get()
    if reads is not None:
        reads[node] = None


def start_recording_reads() -> tuple[dict[Node, None], Token[dict[Node, None] | None]]:
    """Collect the nodes read from now on (a nested bundled call gets its own collection).

    A token pair instead of a context manager: this runs on every bundled call, where a generator
    based context manager would cost a noticeable part of the call.
    """
    reads: dict[Node, None] = {}
    return reads, _active_reads.set(reads)


def stop_recording_reads(token: Token[dict[Node, None] | None]) -> None:
    _active_reads.reset(token)
