"""What a run directory holds: one `EvalRecord` per (problem, mode) in `records.jsonl`, and a
`RunManifest` naming the dataset, model, parameters and options the records came from.

Records are appended one line at a time, flushed and fsync'd as each problem finishes, so a run
killed at any moment loses at most the problems that were still in flight. A line torn by the kill
(no trailing newline) is cut off when the log is opened again; any other unreadable line is an
error, because silently skipping it would re-ask a finished problem or hide a result.
"""

from __future__ import annotations

import hashlib
import os
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.answer import AgentMode, AnswerStatus
from agent.datasets import LabelStatus, LoadedDataset
from agent.modeler import AgentOptions
from agent.scoring import HEADLINE_RULE, ScoringRule, scoring_rules

MANIFEST_NAME = "manifest.json"
RECORDS_NAME = "records.jsonl"
MANIFEST_FORMAT = 1

# A usable model was built and the solver reached a definite verdict (an optimum, or a proof of
# infeasibility/unboundedness). Errors and clarification requests are not executions.
EXECUTED_STATUSES = frozenset(
    {
        AnswerStatus.OPTIMAL,
        AnswerStatus.INFEASIBLE,
        AnswerStatus.UNBOUNDED,
        AnswerStatus.INFEASIBLE_OR_UNBOUNDED,
        AnswerStatus.TIME_LIMIT,
    }
)

RecordKey = tuple[str, str]  # (problem id, mode)


def utc_now() -> datetime:
    return datetime.now(UTC)


class RunDirError(RuntimeError):
    """The run directory cannot be used as asked (already holds a run, corrupt log, ...)."""


class RunMismatchError(RunDirError):
    """Resuming would mix records of a different dataset, model, parameters or agent options."""


class DatasetRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    version: str
    checksum: str = Field(description="sha256 of the data file(s), as the loader computed it")
    split: str | None = None

    @classmethod
    def of(cls, dataset: LoadedDataset) -> DatasetRef:
        return cls(name=dataset.name, version=dataset.version, checksum=dataset.checksum, split=dataset.split)

    @property
    def short(self) -> str:
        return f"{self.name} ({self.version}, sha256 {self.checksum[:12]})"


class ModelRef(BaseModel):
    """Which model answered. `identity` is what the LLM cache keys replies by (cache_scope, else
    base_url): the same model behind a new on-demand port keeps its identity."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    name: str
    endpoint: str
    identity: str


class ParamsRef(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str
    sha256: str

    @classmethod
    def of_file(cls, path: Path) -> ParamsRef:
        return cls(path=str(path), sha256=hashlib.sha256(path.read_bytes()).hexdigest())


class EvalRecord(BaseModel):
    """One problem solved in one mode, scored under every rule. One JSONL line."""

    model_config = ConfigDict(extra="forbid")

    dataset: str
    dataset_version: str
    dataset_checksum: str
    subset: str = Field(description="the member set the problem comes from (differs from dataset for groups)")
    problem_id: str
    mode: AgentMode
    status: AnswerStatus
    predicted_objective: float | None = None
    sense: Literal["minimize", "maximize"] | None = None
    confidence: Literal["high", "medium", "low"] | None = None
    label_status: LabelStatus
    label_objective: float | None = None
    label_raw: str = ""
    scored: bool = Field(description="False for unlabelled items, which no accuracy counts")
    correct: dict[str, bool] = Field(default_factory=dict, description="rule -> verdict; empty if unscored")
    executed: bool = Field(description="a usable model was built and the solver reached a verdict")
    repair_rounds: int = 0
    llm_calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    llm_seconds: float = 0.0
    seconds: float = Field(description="wall time of this problem, measured by the runner")
    error: str | None = None
    exception: str | None = Field(default=None, description="type of the exception the solver raised, if any")
    finished_at: datetime = Field(default_factory=utc_now)

    @property
    def key(self) -> RecordKey:
        return (self.problem_id, self.mode)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def correct_under(self, rule: str = HEADLINE_RULE) -> bool:
        return self.correct.get(rule, False)


class RunOptions(BaseModel):
    """How one invocation ran; they may differ between sessions of one run (more modes, workers)."""

    model_config = ConfigDict(extra="forbid")

    modes: list[AgentMode]
    workers: int = 1
    executor: Literal["local", "ray"] = "local"
    ray_address: str | None = None
    limit: int | None = None
    cache: bool = True


class RunSession(BaseModel):
    """One invocation on the run directory (the first run, then each --resume)."""

    started: datetime = Field(default_factory=utc_now)
    finished: datetime | None = None
    options: RunOptions
    problem_ids: list[str] = Field(default_factory=list, description="planned: each in every mode of options")
    already_done: int = Field(default=0, description="planned items that had a record before this session")
    pending: int = 0
    written: int = 0
    stopped: str | None = Field(default=None, description="why it ended early; None if it completed")

    def planned_keys(self) -> set[RecordKey]:
        return {(problem_id, mode) for problem_id in self.problem_ids for mode in self.options.modes}


class RunManifest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    format: int = MANIFEST_FORMAT
    dataset: DatasetRef
    model: ModelRef
    params: ParamsRef | None = None
    agent_options: AgentOptions | None = Field(
        default=None,
        description="the agent's options (mode aside: it is per record); None for a custom solver",
    )
    headline_rule: str = HEADLINE_RULE
    scoring_rules: list[ScoringRule] = Field(default_factory=scoring_rules)
    started: datetime = Field(default_factory=utc_now)
    finished: datetime | None = Field(default=None, description="set when every planned item has a record")
    sessions: list[RunSession] = Field(default_factory=list)

    def mismatches(self, other: RunManifest) -> list[str]:
        """Why records of `other` must not be mixed into this run (empty when they may)."""
        problems: list[str] = []
        if self.dataset.name != other.dataset.name or self.dataset.split != other.dataset.split:
            problems.append(
                f"dataset {self.dataset.name}{_split(self.dataset.split)} in the run dir vs "
                f"{other.dataset.name}{_split(other.dataset.split)} now"
            )
        if self.dataset.checksum != other.dataset.checksum:
            problems.append(
                f"dataset checksum {self.dataset.checksum[:12]} in the run dir vs "
                f"{other.dataset.checksum[:12]} now (the data file changed)"
            )
        if self.model.name != other.model.name or self.model.identity != other.model.identity:
            problems.append(
                f"model {self.model.name!r} ({self.model.identity}) in the run dir vs "
                f"{other.model.name!r} ({other.model.identity}) now"
            )
        mine = self.params.sha256 if self.params else None
        theirs = other.params.sha256 if other.params else None
        if mine != theirs:
            problems.append(
                f"parameters {_params(self.params)} in the run dir vs {_params(other.params)} now"
            )
        if _comparable(self.agent_options) != _comparable(other.agent_options):
            problems.append(
                f"agent options {_comparable(self.agent_options)} in the run dir vs "
                f"{_comparable(other.agent_options)} now"
            )
        return problems


def _split(split: str | None) -> str:
    return f" split {split}" if split else ""


def _params(params: ParamsRef | None) -> str:
    return "default" if params is None else f"{params.path} (sha256 {params.sha256[:12]})"


def _comparable(options: AgentOptions | None) -> dict[str, object] | None:
    # The mode is chosen per record (--mode both keeps both in one run), so it is not compared.
    return None if options is None else options.model_dump(mode="json", exclude={"mode"})


# --- files ---------------------------------------------------------------------------------------
def write_manifest(run_dir: Path, manifest: RunManifest) -> None:
    """Atomically: a kill mid-write leaves the previous manifest, never half of one."""
    path = run_dir / MANIFEST_NAME
    temporary = path.with_suffix(".json.tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        handle.write(manifest.model_dump_json(indent=2))
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
    _fsync_dir(run_dir)


def read_manifest(run_dir: Path) -> RunManifest | None:
    path = run_dir / MANIFEST_NAME
    if not path.is_file():
        return None
    try:
        return RunManifest.model_validate_json(path.read_text(encoding="utf-8"))
    except ValidationError as error:
        raise RunDirError(f"{path} is not a readable run manifest: {error}") from error


def _fsync_dir(directory: Path) -> None:
    # Makes a newly created file's directory entry durable too (POSIX; a no-op where unsupported).
    try:
        descriptor = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(descriptor)
    except OSError:
        pass
    finally:
        os.close(descriptor)


class RecordLog:
    """The append-only JSONL of records; `append` is safe to call from several threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def load(self, *, repair: bool = False) -> list[EvalRecord]:
        """Every complete record. With `repair`, a torn last line is cut off the file first so the
        next append starts on a fresh line; without it the torn line is just ignored."""
        if not self.path.is_file():
            return []
        data = self.path.read_bytes()
        complete_end = data.rfind(b"\n") + 1
        if complete_end < len(data) and repair:
            with self.path.open("r+b") as handle:
                handle.truncate(complete_end)
                handle.flush()
                os.fsync(handle.fileno())
        records: list[EvalRecord] = []
        seen: set[RecordKey] = set()
        for number, line in enumerate(data[:complete_end].splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = EvalRecord.model_validate_json(line)
            except ValidationError as error:
                raise RunDirError(f"{self.path}:{number}: not a valid record: {error}") from error
            if record.key in seen:
                raise RunDirError(
                    f"{self.path}:{number}: a second record for {record.problem_id} ({record.mode}); "
                    "the log was edited or two runs wrote to it at once"
                )
            seen.add(record.key)
            records.append(record)
        return records

    def append(self, record: EvalRecord) -> None:
        line = record.model_dump_json() + "\n"
        with self._lock:
            created = not self.path.exists()
            with self.path.open("a", encoding="utf-8") as handle:
                handle.write(line)
                handle.flush()
                os.fsync(handle.fileno())
            if created:
                _fsync_dir(self.path.parent)


def records_by_key(records: list[EvalRecord]) -> dict[RecordKey, EvalRecord]:
    return {record.key: record for record in records}
