"""Run a solver over a dataset into a run directory, resumably.

`run_evaluation` plans one task per (problem, mode), skips the ones the run directory already has a
record for, hands the rest to an executor (threads or Ray), and appends each record the moment it
comes back. The solver only ever sees a copy of the problem with its label removed: scoring happens
here, after the answer is final, so nothing can retry until the label matches.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict

from agent.answer import AgentAnswer, AgentMode, AnswerStatus
from agent.datasets import Label, LoadedDataset, Problem
from agent.evaluation.records import (
    EXECUTED_STATUSES,
    RECORDS_NAME,
    DatasetRef,
    EvalRecord,
    ModelRef,
    ParamsRef,
    RecordLog,
    RunDirError,
    RunManifest,
    RunMismatchError,
    RunOptions,
    RunSession,
    read_manifest,
    utc_now,
    write_manifest,
)
from agent.modeler import AgentOptions
from agent.scoring import rule_names, score
from solvers.result import SolveStatus
from trace_graph.llm.client import LLMUnavailableError

UNLABELLED = Label(status="unlabelled")
# AnswerStatus values that are also solver verdicts; the rest (clarification) predict nothing.
_SOLVE_STATUS = {
    status: SolveStatus(status.value)
    for status in AnswerStatus
    if status.value in {verdict.value for verdict in SolveStatus}
}


class ProblemSolver(Protocol):
    """Solves one problem in one mode. Must be safe to call from several threads at once; may raise
    LLMUnavailableError (the run stops) or anything else (recorded as that problem's error)."""

    def __call__(self, problem: Problem, mode: AgentMode) -> AgentAnswer: ...


class EvalTask(BaseModel):
    model_config = ConfigDict(frozen=True)

    problem: Problem
    mode: AgentMode


RecordSink = Callable[[EvalRecord], None]


class Executor(Protocol):
    """Runs tasks and passes each finished record to `sink` (on the caller's thread)."""

    name: str

    def run(self, tasks: Sequence[EvalTask], dataset: DatasetRef, sink: RecordSink) -> str | None:
        """Returns why the run stopped early (the LLM endpoint became unavailable), else None."""
        ...


class ProgressHook(Protocol):
    def start(self, pending: int, already_done: int) -> None: ...

    def advance(self, record: EvalRecord) -> None: ...


class RunOutcome(BaseModel):
    run_dir: Path
    manifest: RunManifest
    already_done: int
    written: int
    pending: int
    stopped: str | None = None

    @property
    def complete(self) -> bool:
        return self.stopped is None and self.written == self.pending


def blind(problem: Problem) -> Problem:
    """The problem as a solver may see it: no label, so no answer can be steered toward it."""
    return problem.model_copy(update={"label": UNLABELLED})


def evaluate_task(solver: ProblemSolver, task: EvalTask, dataset: DatasetRef) -> EvalRecord:
    """Solve one task and score it. LLMUnavailableError propagates; any other exception becomes
    this problem's error record."""
    started = time.perf_counter()
    try:
        answer = solver(blind(task.problem), task.mode)
    except LLMUnavailableError:
        raise
    except Exception as error:  # one broken problem must not end a run of hundreds
        return error_record(task, dataset, error, time.perf_counter() - started)
    return answer_record(task, dataset, answer, time.perf_counter() - started)


def answer_record(task: EvalTask, dataset: DatasetRef, answer: AgentAnswer, seconds: float) -> EvalRecord:
    problem, label = task.problem, task.problem.label
    scored = label.status != "unlabelled"
    correct: dict[str, bool] = {}
    if scored:
        card = score(label, answer.objective, _SOLVE_STATUS.get(answer.status), problem.id)
        correct = card.correct
    usage = answer.usage
    return EvalRecord(
        **_identity(task, dataset),
        status=answer.status,
        predicted_objective=answer.objective,
        sense=answer.sense,
        confidence=answer.confidence,
        scored=scored,
        correct=correct,
        executed=answer.status in EXECUTED_STATUSES,
        repair_rounds=answer.repair_rounds,
        llm_calls=usage.calls,
        cache_hits=usage.cache_hits,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        llm_seconds=usage.seconds,
        seconds=round(seconds, 3),
        error=answer.error,
    )


def error_record(task: EvalTask, dataset: DatasetRef, error: BaseException, seconds: float) -> EvalRecord:
    scored = task.problem.label.status != "unlabelled"
    return EvalRecord(
        **_identity(task, dataset),
        status=AnswerStatus.ERROR,
        scored=scored,
        correct=dict.fromkeys(rule_names(), False) if scored else {},
        executed=False,
        seconds=round(seconds, 3),
        error=f"{type(error).__name__}: {error}",
        exception=type(error).__name__,
    )


def _identity(task: EvalTask, dataset: DatasetRef) -> dict[str, object]:
    label = task.problem.label
    return {
        "dataset": dataset.name,
        "dataset_version": dataset.version,
        "dataset_checksum": dataset.checksum,
        "subset": task.problem.dataset,
        "problem_id": task.problem.id,
        "mode": task.mode,
        "label_status": label.status,
        "label_objective": label.objective,
        "label_raw": label.raw,
    }


def plan_tasks(dataset: LoadedDataset, modes: Sequence[AgentMode]) -> list[EvalTask]:
    """Problem-major order, so a stopped --mode both run holds both modes of the same items."""
    return [EvalTask(problem=problem, mode=mode) for problem in dataset.problems for mode in modes]


def prepare_manifest(run_dir: Path, fresh: RunManifest, resume: bool) -> RunManifest:
    """The manifest to continue: the existing one when resuming (after checking it matches),
    else `fresh`. Refuses to overwrite a run without --resume."""
    existing = read_manifest(run_dir)
    has_records = (run_dir / RECORDS_NAME).is_file()
    if existing is None:
        if has_records:
            raise RunDirError(f"{run_dir} has {RECORDS_NAME} but no manifest; it is not a run directory")
        return fresh
    if not resume:
        raise RunDirError(
            f"{run_dir} already holds a run of {existing.dataset.name}; pass --resume to continue it, "
            "or choose another --out"
        )
    problems = existing.mismatches(fresh)
    if problems:
        raise RunMismatchError(
            f"refusing to resume {run_dir}: its records would mix with different ones: "
            + "; ".join(problems)
            + ". Use another --out for this configuration."
        )
    return existing


def run_evaluation(
    dataset: LoadedDataset,
    run_dir: Path,
    executor: Executor,
    *,
    modes: Sequence[AgentMode],
    model: ModelRef,
    params: ParamsRef | None = None,
    agent_options: AgentOptions | None = None,
    options: RunOptions | None = None,
    resume: bool = False,
    progress: ProgressHook | None = None,
) -> RunOutcome:
    """Evaluate `dataset` in each of `modes` into `run_dir`; see the module docstring.

    Raises RunDirError / RunMismatchError before any work when the directory cannot be used.
    An endpoint that goes down ends the run cleanly: `RunOutcome.stopped` says why.
    """
    if not modes:
        raise ValueError("at least one mode is needed")
    run_dir.mkdir(parents=True, exist_ok=True)
    reference = DatasetRef.of(dataset)
    session_options = options or RunOptions(modes=list(modes))
    fresh = RunManifest(
        dataset=reference,
        model=model,
        params=params,
        agent_options=agent_options.model_copy(update={"mode": "agent"}) if agent_options else None,
    )
    manifest = prepare_manifest(run_dir, fresh, resume)
    log = RecordLog(run_dir / RECORDS_NAME)
    existing = log.load(repair=True)
    foreign = [r for r in existing if r.dataset_checksum != reference.checksum]
    if foreign:
        raise RunMismatchError(
            f"refusing to resume {run_dir}: {len(foreign)} record(s) were scored on dataset checksum "
            f"{foreign[0].dataset_checksum[:12]}, not {reference.checksum[:12]}"
        )
    done = {record.key for record in existing}
    plan = plan_tasks(dataset, modes)
    tasks = [task for task in plan if (task.problem.id, task.mode) not in done]
    session = RunSession(
        options=session_options,
        problem_ids=[problem.id for problem in dataset.problems],
        already_done=len(plan) - len(tasks),
        pending=len(tasks),
    )
    manifest.sessions.append(session)
    if tasks:
        manifest.finished = None
    write_manifest(run_dir, manifest)

    def sink(record: EvalRecord) -> None:
        log.append(record)
        session.written += 1
        if progress is not None:
            progress.advance(record)

    if progress is not None:
        progress.start(len(tasks), session.already_done)
    try:
        session.stopped = executor.run(tasks, reference, sink) if tasks else None
    except BaseException as error:  # Ctrl-C or a broken disk: say so in the manifest, keep the records
        session.stopped = f"interrupted: {type(error).__name__}: {error}".rstrip(": ")
        raise
    finally:
        session.finished = utc_now()
        if session.stopped is None and session.written == session.pending:
            manifest.finished = session.finished
        write_manifest(run_dir, manifest)
    return RunOutcome(
        run_dir=run_dir,
        manifest=manifest,
        already_done=session.already_done,
        written=session.written,
        pending=len(tasks),
        stopped=session.stopped,
    )
