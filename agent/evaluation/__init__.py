"""Batch evaluation: honest, resumable, parallel, distributed.

    optitrace eval --dataset nl4opt --limit 60 --mode both --workers 4 --out runs/nl4opt-60
    optitrace eval --dataset nl4opt --limit 60 --mode both --out runs/nl4opt-60 --resume
    optitrace eval report runs/nl4opt-60                 # re-render from the records, no LLM
    optitrace eval --dataset mamo --split easy --executor ray [--ray-address HOST:6379]

A run directory holds `manifest.json` (dataset name/version/sha256, model, parameters hash, agent
options, one entry per session), `records.jsonl` (one fsync'd line per (problem, mode) as it
finishes), and the rendered `report.md`, `results.csv`, `accuracy.png`, `summary.json`.

Honesty rules, enforced in code: the solver receives the problem with its label removed
(`runner.blind`), scoring happens once on the final answer under every rule of `agent.scoring`
side by side, infeasible labels are matched only by infeasible predictions, unlabelled items are
never scored, and resume refuses to mix records of another dataset checksum, model, parameter
file or agent options.

Python API:

    from agent.evaluation import run_evaluation, LocalExecutor, AgentProblemSolver, write_report
    solver = AgentProblemSolver(LLMClient(config), AgentOptions())   # or any ProblemSolver
    outcome = run_evaluation(load_dataset("nl4opt", limit=20), Path("runs/x"), LocalExecutor(solver, 4),
                             modes=["oneshot", "agent"], model=ModelRef(...))
    summary = write_report([outcome.run_dir])

A `ProblemSolver` is any thread-safe callable `(problem, mode) -> AgentAnswer`. For Ray, pass a
picklable `SolverFactory` (`key()`, `build()`), such as `AgentSolverSpec(llm=config, options=...)`.

Adding a dataset
----------------
1. Write a JSON Lines file (or a JSON array), one object per problem:

       {"id": "p1", "question": "A bakery ... maximize profit?", "answer": 120}
       {"id": "p2", "question": "...", "answer": "infeasible"}
       {"id": "p3", "question": "..."}

   `answer` is a number (or numeric string), a no-solution marker ("infeasible", "No Best
   Solution", -99999: scored as infeasible), or absent/null (unlabelled: run, never scored).
   `id` defaults to the row index; other fields are kept as metadata.
2. Evaluate it by path: `optitrace eval --dataset path/to/my_set.jsonl` (the name is the file's
   stem, the version "file", the checksum the file's sha256).
3. To give it a name and a version for reports, register it before running (e.g. in a script):
   `agent.datasets.register_dataset("my-set", "path/to/my_set.jsonl", version="v1")`, and for a
   public set also copy the file under `datasets/` with a SOURCE.md and add it to the registry in
   `agent/datasets.py` (its owner's module), with its expected row count.
"""

from agent.evaluation.executors import (
    AgentProblemSolver,
    AgentSolverSpec,
    LocalExecutor,
    RayExecutor,
    SolverFactory,
)
from agent.evaluation.records import (
    DatasetRef,
    EvalRecord,
    ModelRef,
    ParamsRef,
    RecordLog,
    RunDirError,
    RunManifest,
    RunMismatchError,
    RunOptions,
)
from agent.evaluation.report import RunSummary, load_run, summarize, write_report
from agent.evaluation.runner import (
    EvalTask,
    Executor,
    ProblemSolver,
    RunOutcome,
    blind,
    evaluate_task,
    run_evaluation,
)

__all__ = [
    "AgentProblemSolver",
    "AgentSolverSpec",
    "DatasetRef",
    "EvalRecord",
    "EvalTask",
    "Executor",
    "LocalExecutor",
    "ModelRef",
    "ParamsRef",
    "ProblemSolver",
    "RayExecutor",
    "RecordLog",
    "RunDirError",
    "RunManifest",
    "RunMismatchError",
    "RunOptions",
    "RunOutcome",
    "RunSummary",
    "SolverFactory",
    "blind",
    "evaluate_task",
    "load_run",
    "run_evaluation",
    "summarize",
    "write_report",
]
