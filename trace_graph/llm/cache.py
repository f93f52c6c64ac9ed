"""A persistent sqlite cache of chat replies, keyed by the whole request.

The key covers everything that can change a reply: endpoint scope, model, messages, temperature,
max_tokens, response_format, seed and the sample index. Temperature is part of the key (TextGrad
keyed without it and served T=0 answers for T=0.7 requests); the sample index keeps repeated samples
of one prompt distinct while re-runs of an experiment still cost nothing.

WAL mode with one connection per thread lets a thread pool and several processes share one file.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from trace_graph.llm.usage import TokenUsage

log = logging.getLogger(__name__)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS replies (
    key TEXT PRIMARY KEY,
    reply TEXT NOT NULL,
    created REAL NOT NULL
)
"""


class CachedReply(BaseModel):
    """What the cache keeps of a reply: enough to answer again without the server."""

    text: str
    finish_reason: str | None
    model: str
    usage: TokenUsage
    seconds: float


def request_key(request: dict[str, Any]) -> str:
    """sha256 of the request's canonical JSON (sorted keys), so equal requests share a key."""
    canonical = json.dumps(request, sort_keys=True, ensure_ascii=False, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


class LLMCache:
    """Reply cache in one sqlite file; safe to share between threads and processes."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path).expanduser()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._connection()  # create the file and table now, so a bad path fails at construction

    def get(self, key: str) -> CachedReply | None:
        try:
            row = self._connection().execute("SELECT reply FROM replies WHERE key = ?", (key,)).fetchone()
        except sqlite3.Error as error:
            # a cache that cannot be read must not stop the work; the call just goes to the server
            log.warning("LLM cache %s unreadable (%s); asking the server", self.path, error)
            return None
        if row is None:
            return None
        try:
            return CachedReply.model_validate_json(row[0])
        except ValidationError:
            log.warning("LLM cache %s: entry %s is from an incompatible version; ignoring it", self.path, key)
            return None

    def put(self, key: str, reply: CachedReply) -> None:
        try:
            with self._connection() as connection:
                connection.execute(
                    "INSERT OR REPLACE INTO replies (key, reply, created) VALUES (?, ?, ?)",
                    (key, reply.model_dump_json(), time.time()),
                )
        except sqlite3.Error as error:
            log.warning("LLM cache %s not written (%s); the reply is still returned", self.path, error)

    def __len__(self) -> int:
        return int(self._connection().execute("SELECT COUNT(*) FROM replies").fetchone()[0])

    def clear(self) -> None:
        with self._connection() as connection:
            connection.execute("DELETE FROM replies")

    def close(self) -> None:
        """Close every thread's connection; the cache reopens lazily if used again."""
        with self._lock:
            connections, self._connections = self._connections, []
            self._local = threading.local()
        for connection in connections:
            connection.close()

    def _connection(self) -> sqlite3.Connection:
        connection: sqlite3.Connection | None = getattr(self._local, "connection", None)
        if connection is None:
            # check_same_thread=False only so close() may run from another thread; each thread
            # otherwise uses its own connection
            connection = sqlite3.connect(self.path, timeout=30.0, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.execute(_SCHEMA)
            connection.commit()
            self._local.connection = connection
            with self._lock:
                self._connections.append(connection)
        return connection

    def __repr__(self) -> str:
        return f"LLMCache({str(self.path)!r})"
