"""Where problems get solved: a thread pool on this machine, or tasks on a Ray cluster.

The work is LLM-bound (seconds waiting per call, milliseconds of solving), so threads sharing one
client are the right tool on one machine. Ray spreads the same tasks over many machines: each Ray
worker process builds its own client and agent from a serializable `SolverFactory` (once, then
reuses it), returns plain records, and the driver writes them, so resume works the same way.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
import threading
from collections.abc import Sequence
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict

from agent.answer import AgentAnswer, AgentMode
from agent.datasets import Problem
from agent.evaluation.records import DatasetRef, EvalRecord
from agent.evaluation.runner import EvalTask, ProblemSolver, RecordSink, error_record, evaluate_task
from agent.modeler import AgentOptions, ModelingAgent
from trace_graph.context import graph_context
from trace_graph.llm.client import LLMClient, LLMUnavailableError
from trace_graph.llm.config import LLMConfig

# --- the real agent as a ProblemSolver -----------------------------------------------------------
_warm_lock = threading.Lock()
_warmed_up = False


def warm_up_solver_stack() -> None:
    """Solve one tiny LP on this thread before worker threads start.

    Pyomo 6.10's LinearStandardFormCompiler fills its scipy hooks lazily and racily on first use
    (`_to_vector` is set before `_csr_matrix`), so the first concurrent solves fail with "'NoneType'
    object is not callable". One solve first makes every later one safe to run in parallel.
    """
    global _warmed_up
    with _warm_lock:
        if _warmed_up:
            return
        from solvers.api import solve_formulation
        from solvers.ir import Formulation

        tiny = Formulation.model_validate(
            {
                "variables": [{"name": "x", "upper": 1}],
                "objective": {"sense": "maximize", "expression": "x"},
            }
        )
        solve_formulation(tiny)
        _warmed_up = True


class AgentProblemSolver:
    """`ModelingAgent` per mode over one shared, thread-safe client; usage comes from each answer."""

    def __init__(
        self, client: LLMClient, options: AgentOptions | None = None, params_text: str | None = None
    ):
        self.client = client
        self.options = options or AgentOptions()
        self.params_text = params_text
        self._agents: dict[AgentMode, ModelingAgent] = {}
        self._lock = threading.Lock()
        warm_up_solver_stack()

    def __call__(self, problem: Problem, mode: AgentMode) -> AgentAnswer:
        agent = self.agent(mode)
        # A naming scope per problem keeps node names short and lets the scope be freed afterwards.
        with graph_context():
            return agent.solve(problem.question)

    def agent(self, mode: AgentMode) -> ModelingAgent:
        """The agent for `mode`, built on first use (parameters loaded then)."""
        with self._lock:
            if mode not in self._agents:
                agent = ModelingAgent(self.client, self.options.model_copy(update={"mode": mode}))
                if self.params_text is not None:
                    _load_params_text(agent, self.params_text)
                self._agents[mode] = agent
            return self._agents[mode]


def _load_params_text(agent: ModelingAgent, text: str) -> None:
    # The agent loads parameters from a file; on a Ray node the driver's file may not exist, so
    # the text travels in the spec and lands in a private temporary file here.
    descriptor, name = tempfile.mkstemp(suffix=".json", prefix="optitrace-params-")
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
            handle.write(text)
        agent.load_params(Path(name))
    finally:
        os.unlink(name)


class SolverFactory(Protocol):
    """A picklable recipe for a ProblemSolver, built once per Ray worker process."""

    def key(self) -> str: ...

    def build(self) -> ProblemSolver: ...


class AgentSolverSpec(BaseModel):
    """Everything a Ray worker needs to build the same agent the driver would: endpoint config,
    agent options, trained parameters (as text), and whether to use the reply cache."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    llm: LLMConfig
    options: AgentOptions = AgentOptions()
    params_text: str | None = None
    cache: bool = True

    def key(self) -> str:
        return hashlib.sha256(self.model_dump_json().encode()).hexdigest()

    def build(self) -> AgentProblemSolver:
        client = LLMClient(self.llm, cache=self.cache)
        return AgentProblemSolver(client, self.options, self.params_text)


# --- threads -------------------------------------------------------------------------------------
class LocalExecutor:
    """`workers` threads on this machine sharing one solver."""

    name = "local"

    def __init__(self, solver: ProblemSolver, workers: int = 1) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.solver = solver
        self.workers = workers

    def run(self, tasks: Sequence[EvalTask], dataset: DatasetRef, sink: RecordSink) -> str | None:
        stopped: str | None = None
        pool = ThreadPoolExecutor(self.workers, thread_name_prefix="optitrace-eval")
        futures: list[Future[EvalRecord]] = [
            pool.submit(evaluate_task, self.solver, task, dataset) for task in tasks
        ]
        try:
            for future in as_completed(futures):
                try:
                    record = future.result()
                except CancelledError:
                    continue
                except LLMUnavailableError as error:
                    # Stop asking; problems already in flight still get recorded if they finish.
                    stopped = stopped or str(error)
                    _cancel(futures)
                    continue
                sink(record)
        except BaseException:
            # Ctrl-C: drop the queue and return now; calls in flight end on their own (their
            # problems have no record, so --resume asks them again).
            pool.shutdown(wait=False, cancel_futures=True)
            raise
        pool.shutdown(wait=True)
        return stopped


def _cancel(futures: Sequence[Future[Any]]) -> None:
    for future in futures:
        future.cancel()


# --- Ray -----------------------------------------------------------------------------------------
class TaskOutcome(BaseModel):
    """What a Ray task sends back: a record, or the news that the endpoint is gone."""

    record: EvalRecord | None = None
    unavailable: str | None = None


_worker_solvers: dict[str, ProblemSolver] = {}
_worker_lock = threading.Lock()


def _solver_in_this_process(factory: SolverFactory) -> ProblemSolver:
    # Ray reuses worker processes, so building the client and agent once per process (not per task)
    # keeps connections and the cache handle alive across problems.
    key = factory.key()
    with _worker_lock:
        if key not in _worker_solvers:
            _worker_solvers[key] = factory.build()
        return _worker_solvers[key]


def solve_in_worker(factory: SolverFactory, task: EvalTask, dataset: DatasetRef) -> dict[str, Any]:
    """The body of one Ray task; returns a TaskOutcome as plain JSON-able data."""
    try:
        record = evaluate_task(_solver_in_this_process(factory), task, dataset)
    except LLMUnavailableError as error:
        return TaskOutcome(unavailable=str(error)).model_dump(mode="json")
    return TaskOutcome(record=record).model_dump(mode="json")


def default_ray_cpus(workers: int) -> int:
    """A local Ray instance gets no more CPUs than the machine has, nor than the run can use."""
    return max(1, min(os.cpu_count() or 1, workers))


class RayExecutor:
    """Tasks on a Ray cluster: a local instance by default, or `address` to join one.

    At most `workers` tasks are in flight, each reserving `task_cpus` CPUs. A local instance is
    started with `num_cpus` (default: min(cores, workers)) and shut down afterwards; a cluster
    that was already connected is left as it was. When joining a cluster by address, the code of
    this package is shipped to the workers (runtime_env py_modules). The LLM endpoint must be
    reachable from every node: a 127.0.0.1 endpoint only works on a local instance.
    """

    name = "ray"

    def __init__(
        self,
        factory: SolverFactory,
        workers: int = 1,
        *,
        address: str | None = None,
        num_cpus: int | None = None,
        task_cpus: float = 1.0,
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be >= 1")
        self.factory = factory
        self.workers = workers
        self.address = address
        self.num_cpus = num_cpus
        self.task_cpus = task_cpus

    def run(self, tasks: Sequence[EvalTask], dataset: DatasetRef, sink: RecordSink) -> str | None:
        ray = _import_ray()
        try:
            started_here = self._connect(ray)
        except (ConnectionError, RuntimeError, ValueError) as error:
            where = self.address or "a local instance"
            raise RayUnavailableError(f"cannot start or join Ray at {where}: {error}") from error
        try:
            return self._drive(ray, tasks, dataset, sink)
        finally:
            if started_here:
                ray.shutdown()

    def _connect(self, ray: Any) -> bool:
        if ray.is_initialized():
            return False
        if self.address is not None:
            ray.init(
                address=self.address,
                runtime_env={"py_modules": _package_dirs()},
                log_to_driver=False,
            )
        else:
            ray.init(
                num_cpus=self.num_cpus or default_ray_cpus(self.workers),
                include_dashboard=False,
                log_to_driver=False,
            )
        return True

    def _drive(
        self, ray: Any, tasks: Sequence[EvalTask], dataset: DatasetRef, sink: RecordSink
    ) -> str | None:
        remote = ray.remote(num_cpus=self.task_cpus, max_retries=0)(solve_in_worker)
        factory_ref = ray.put(self.factory)
        queue = list(reversed(tasks))
        in_flight: dict[Any, EvalTask] = {}
        stopped: str | None = None
        try:
            while queue or in_flight:
                while queue and stopped is None and len(in_flight) < self.workers:
                    task = queue.pop()
                    in_flight[remote.remote(factory_ref, task, dataset)] = task
                if not in_flight:
                    break
                ready, _ = ray.wait(list(in_flight), num_returns=1)
                task = in_flight.pop(ready[0])
                try:
                    outcome = TaskOutcome.model_validate(ray.get(ready[0]))
                except Exception as error:  # a crashed worker process: this problem's error, not the run's
                    sink(error_record(task, dataset, error, 0.0))
                    continue
                if outcome.unavailable is not None:
                    stopped = stopped or outcome.unavailable
                elif outcome.record is not None:
                    sink(outcome.record)
        except BaseException:
            for reference in in_flight:
                ray.cancel(reference, force=True)
            raise
        return stopped


class RayUnavailableError(RuntimeError):
    """Ray is not installed, or the cluster cannot be started or joined."""


def _import_ray() -> Any:
    try:
        import ray
    except ModuleNotFoundError as error:
        raise RayUnavailableError(
            "the Ray executor needs the [ray] extra: pip install 'optitrace[ray]'"
        ) from error
    return ray


def _package_dirs() -> list[str]:
    root = Path(__file__).resolve().parents[2]
    return [str(root / name) for name in ("agent", "solvers", "trace_graph")]
