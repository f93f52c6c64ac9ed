"""The Ray executor on a local instance (2 CPUs): tasks build their own client and agent from the
serializable spec in worker processes, talk to the scripted server over loopback, and return
records that the driver writes, so the run directory looks like a local one (and resumes alike)."""

from __future__ import annotations

from pathlib import Path

import pytest

pytest.importorskip("ray", reason="the Ray executor needs the [ray] extra (pip install 'optitrace[ray]')")

from agent.datasets import load_dataset
from agent.evaluation import AgentSolverSpec, ModelRef, RayExecutor, executors, load_run, run_evaluation
from agent.modeler import AgentOptions
from tests.test_evaluation import NOT_JSON, formulation_reaching, is_repair, problem_of
from trace_graph.llm import ChatRequest, ScriptedLLMServer

pytestmark = pytest.mark.ray


def test_ray_executor_on_a_local_instance(tmp_path: Path) -> None:
    import ray

    dataset = load_dataset("nl4opt", limit=3)

    def respond(request: ChatRequest) -> str:
        problem = problem_of(request, dataset)
        if problem.id == "nl4opt/1" and not is_repair(request):
            return NOT_JSON  # oneshot fails, the agent repairs: both modes really ran remotely
        return formulation_reaching(problem.label.objective or 0.0)

    with ScriptedLLMServer(responder=respond, latency=0.05) as server:
        spec = AgentSolverSpec(llm=server.llm_config(), options=AgentOptions(), cache=False)
        executor = RayExecutor(spec, workers=2, num_cpus=2)
        model = ModelRef(name=server.model, endpoint=server.base_url, identity=server.base_url)
        outcome = run_evaluation(dataset, tmp_path / "run", executor, modes=["oneshot", "agent"], model=model)
        assert not server.errors
        asked = server.request_count
        # Resume with everything done: the driver plans nothing, and no task reaches the server.
        again = run_evaluation(
            dataset, tmp_path / "run", executor, modes=["oneshot", "agent"], model=model, resume=True
        )
        assert server.request_count == asked and again.pending == 0 and again.already_done == 6
    assert not ray.is_initialized()  # the executor shut down the instance it started

    assert outcome.complete and outcome.written == 6
    records = {record.key: record for record in load_run(outcome.run_dir).records}
    assert set(records) == {(p.id, mode) for p in dataset.problems for mode in ("oneshot", "agent")}
    assert records[("nl4opt/0", "oneshot")].correct_under() and records[("nl4opt/2", "agent")].correct_under()
    assert records[("nl4opt/1", "oneshot")].status == "error"
    assert (
        records[("nl4opt/1", "agent")].correct_under() and records[("nl4opt/1", "agent")].repair_rounds >= 1
    )
    assert all(record.llm_calls >= 1 for record in records.values())  # usage came back from the workers
    assert asked == sum(record.llm_calls for record in records.values())
    # The solvers were built in Ray's worker processes from the spec, never in this driver.
    assert executors._worker_solvers == {}
