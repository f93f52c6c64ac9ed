"""Batch evaluation end to end: the real agent over real dataset slices through the scripted
loopback server (real HTTP, real openai client, real solver), the CLI, the report files, the
scoring columns, errors that must not kill a run, an endpoint that dies, and refused resumes."""

from __future__ import annotations

import csv
import importlib.util
import json
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest
from typer.testing import CliRunner

from agent.answer import AgentAnswer, AgentMode
from agent.cli import app
from agent.datasets import LoadedDataset, Problem, load_dataset
from agent.evaluation import (
    AgentProblemSolver,
    EvalRecord,
    LocalExecutor,
    ModelRef,
    RecordLog,
    RunDirError,
    RunMismatchError,
    load_run,
    run_evaluation,
    summarize,
    write_report,
)
from agent.modeler import AgentOptions, ModelingAgent
from trace_graph.llm import ChatRequest, LLMClient, ScriptedLLMServer, ScriptedReply


# --- what the scripted "LLM" writes ----------------------------------------------------------------
def formulation_reaching(value: float) -> str:
    """A valid formulation whose optimum is exactly `value` (value >= 0)."""
    return json.dumps(
        {
            "notes": f"one quantity, at most {value:g}",
            "variables": [{"name": "amount", "meaning": "units made (units)", "type": "continuous"}],
            "objective": {"sense": "maximize", "expression": "amount", "meaning": "units ($)"},
            "constraints": [{"name": "cap", "expression": f"amount <= {value!r}", "meaning": "capacity"}],
            "missing_information": [],
        }
    )


INFEASIBLE_FORMULATION = json.dumps(
    {
        "notes": "at least 5 and at most 3",
        "variables": [{"name": "amount", "meaning": "units made (units)", "type": "continuous"}],
        "objective": {"sense": "maximize", "expression": "amount", "meaning": "units"},
        "constraints": [
            {"name": "floor", "expression": "amount >= 5", "meaning": "at least 5"},
            {"name": "cap", "expression": "amount <= 3", "meaning": "at most 3"},
        ],
        "missing_information": [],
    }
)
NOT_JSON = "I would make as many as possible."


def problem_of(request: ChatRequest, dataset: LoadedDataset) -> Problem:
    """Which problem a request is about: the agent puts the problem text in every prompt."""
    text = request.prompt_text  # a corrective re-ask puts the problem in an earlier message
    matches = [p for p in dataset.problems if f"Problem: {p.question.strip()}" in text]
    assert len(matches) == 1, f"request matches {len(matches)} problems"
    return matches[0]


def is_repair(request: ChatRequest) -> bool:
    return "Evidence:" in request.prompt_text


Behaviour = Callable[[ChatRequest], str]


def scripted_responder(
    dataset: LoadedDataset, behaviours: dict[str, Behaviour], default: Behaviour
) -> Behaviour:
    def respond(request: ChatRequest) -> str:
        return behaviours.get(problem_of(request, dataset).id, default)(request)

    return respond


def cli_env(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, server: ScriptedLLMServer, model: str = ""
) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", server.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "test-key")
    monkeypatch.setenv("OPTITRACE_MODEL", model or server.model)
    config = tmp_path / "config.toml"  # quick retries, so a dead endpoint is declared dead quickly
    config.write_text("[llm]\nretry_initial_wait = 0.01\nretry_max_wait = 0.05\nretry_deadline = 2.0\n")
    monkeypatch.setenv("OPTITRACE_CONFIG", str(config))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))


def read_jsonl(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def model_ref(server: ScriptedLLMServer) -> ModelRef:
    return ModelRef(name=server.model, endpoint=server.base_url, identity=server.base_url)


@pytest.fixture
def client(scripted_llm: ScriptedLLMServer) -> Iterator[LLMClient]:
    with LLMClient(scripted_llm.llm_config(), cache=False) as llm:
        yield llm


# --- the CLI on a slice of the real NL4OPT file, both modes ----------------------------------------
def test_cli_eval_real_slice_both_modes_writes_records_report_csv_and_chart(
    scripted_llm: ScriptedLLMServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = load_dataset("nl4opt", limit=17)
    behaviours: dict[str, Behaviour] = {
        "nl4opt/0": lambda r: formulation_reaching(1160.0),  # right in both modes
        # unreadable twice (the client's re-ask included): oneshot fails, the agent's repair fixes it
        "nl4opt/1": lambda r: formulation_reaching(350.0) if is_repair(r) else NOT_JSON,
        "nl4opt/2": lambda r: formulation_reaching(105.0),  # 5% off: right only under ORLM's rule
        "nl4opt/16": lambda r: INFEASIBLE_FORMULATION,  # labelled "No Best Solution": right
    }
    scripted_llm.responder = scripted_responder(dataset, behaviours, lambda r: formulation_reaching(0.5))
    cli_env(monkeypatch, tmp_path, scripted_llm)
    run_dir = tmp_path / "run"
    args = ["eval", "--dataset", "nl4opt", "--limit", "17", "--mode", "both", "--workers", "2"]
    result = CliRunner().invoke(app, [*args, "--out", str(run_dir), "--json"])
    assert result.exit_code == 0, result.output
    assert not scripted_llm.errors

    records = {(r["problem_id"], r["mode"]): r for r in read_jsonl(run_dir / "records.jsonl")}
    assert len(records) == 34 and len(read_jsonl(run_dir / "records.jsonl")) == 34
    assert all(r["dataset_checksum"] == dataset.checksum for r in records.values())
    assert all(r["dataset_version"] == dataset.version for r in records.values())
    for mode in ("oneshot", "agent"):
        assert all(records[("nl4opt/0", mode)]["correct"].values())
        assert records[("nl4opt/2", mode)]["correct"] == {
            "rel_1e-6": False,
            "orlm_round_5pct": True,
            "abs_1e-4": False,
            "mamo_rel_1e-4": False,
        }
        infeasible = records[("nl4opt/16", mode)]
        assert infeasible["label_status"] == "infeasible" and infeasible["status"] == "infeasible"
        assert all(infeasible["correct"].values()) and infeasible["executed"]
    oneshot_1, agent_1 = records[("nl4opt/1", "oneshot")], records[("nl4opt/1", "agent")]
    assert oneshot_1["status"] == "error" and not oneshot_1["executed"]
    assert oneshot_1["llm_calls"] + oneshot_1["cache_hits"] == 2
    assert agent_1["status"] == "optimal" and agent_1["correct"]["rel_1e-6"] and agent_1["repair_rounds"] >= 1
    # Through the reply cache: agent mode's first two requests equal oneshot's, and may be hits.
    assert agent_1["llm_calls"] + agent_1["cache_hits"] == 3
    assert agent_1["prompt_tokens"] > 0 and agent_1["seconds"] > 0

    document = json.loads(result.stdout)
    assert document["written"] == 34 and document["stopped"] is None
    groups = {g["mode"]: g for g in document["summary"]["groups"]}
    assert groups["oneshot"]["labelled"] == 17 and groups["oneshot"]["infeasible_labelled"] == 1
    assert groups["oneshot"]["accuracy"]["rel_1e-6"] == pytest.approx(2 / 17)  # items 0 and 16
    assert groups["agent"]["accuracy"]["rel_1e-6"] == pytest.approx(3 / 17)  # + the repaired item 1
    assert groups["oneshot"]["accuracy"]["orlm_round_5pct"] == pytest.approx(3 / 17)
    assert groups["oneshot"]["execution_rate"] == pytest.approx(16 / 17)
    (lift,) = document["summary"]["lifts"]
    assert lift["items"] == 17 and lift["fixed"] == 1 and lift["broken"] == 0
    assert lift["lift"]["rel_1e-6"] == pytest.approx(1 / 17)

    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["dataset"] == {
        "name": "nl4opt",
        "version": dataset.version,
        "checksum": dataset.checksum,
        "split": None,
    }
    assert manifest["model"]["name"] == "scripted-model" and manifest["finished"] is not None

    report = (run_dir / "report.md").read_text()
    assert dataset.version in report and dataset.checksum in report and "scripted-model" in report
    assert (
        "| nl4opt | scripted-model | oneshot | 17 | 17 | 1 (1) | 11.8 | 17.6 | 11.8 | 11.8 | 94.1 |" in report
    )
    assert "## Agent lift over one-shot" in report and "| nl4opt/1 | oneshot | 350 | - | error |" in report
    assert "| nl4opt/0 |" not in report.split("## Wrong items")[1]  # right items are not listed

    with (run_dir / "results.csv").open(newline="") as handle:
        csv_rows = list(csv.DictReader(handle))
    assert len(csv_rows) == 34
    near = next(row for row in csv_rows if (row["problem_id"], row["mode"]) == ("nl4opt/2", "agent"))
    assert (near["correct_rel_1e-6"], near["correct_orlm_round_5pct"]) == ("false", "true")
    assert near["dataset_checksum"] == dataset.checksum and near["predicted_objective"] == "105.0"
    assert (run_dir / "accuracy.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # Re-rendering needs no LLM: same summary, no new requests.
    asked = scripted_llm.request_count
    for name in ("report.md", "results.csv", "accuracy.png"):
        (run_dir / name).unlink()
    rerun = CliRunner().invoke(app, ["eval", "report", str(run_dir), "--json"])
    assert rerun.exit_code == 0, rerun.output
    assert json.loads(rerun.stdout)["groups"] == document["summary"]["groups"]
    assert (run_dir / "report.md").read_text() == report and (run_dir / "accuracy.png").is_file()
    assert scripted_llm.request_count == asked
    only = CliRunner().invoke(app, ["eval", "--report-only", "--out", str(run_dir)])
    assert only.exit_code == 0 and "rel_1e-6" in only.stdout


# --- scoring columns on a user file: infeasible labels, unlabelled items ----------------------------
def test_infeasible_labels_are_explicit_and_unlabelled_items_are_not_scored(
    scripted_llm: ScriptedLLMServer, client: LLMClient, tmp_path: Path
) -> None:
    rows = [
        {"id": "exact", "question": "Make at most 120 units; how many?", "answer": 120},
        {"id": "near", "question": "Make at most 121 units (near); how many?", "answer": "121"},
        {"id": "none", "question": "At least 5 and at most 3 units; how many?", "answer": "infeasible"},
        {"id": "missed", "question": "No plan works here; how many?", "answer": "No Best Solution"},
        {"id": "open", "question": "Make at most 7 units; how many?"},
    ]
    path = tmp_path / "my_set.jsonl"
    path.write_text("\n".join(json.dumps(row) for row in rows) + "\n")
    dataset = load_dataset(path)
    behaviours: dict[str, Behaviour] = {
        "my_set/exact": lambda r: formulation_reaching(120.0),
        "my_set/near": lambda r: formulation_reaching(120.0),
        "my_set/none": lambda r: INFEASIBLE_FORMULATION,
        "my_set/missed": lambda r: formulation_reaching(9.0),
    }
    scripted_llm.responder = scripted_responder(dataset, behaviours, lambda r: formulation_reaching(7.0))
    outcome = run_evaluation(
        dataset,
        tmp_path / "run",
        LocalExecutor(AgentProblemSolver(client, AgentOptions(mode="oneshot")), workers=2),
        modes=["oneshot"],
        model=model_ref(scripted_llm),
    )
    assert outcome.complete and outcome.written == 5
    run = load_run(outcome.run_dir)
    by_id = {r.problem_id: r for r in run.records}
    assert by_id["my_set/open"].scored is False and by_id["my_set/open"].correct == {}
    assert by_id["my_set/open"].predicted_objective == pytest.approx(7.0) and by_id["my_set/open"].executed
    assert by_id["my_set/none"].correct_under() and by_id["my_set/none"].label_status == "infeasible"
    assert not any(by_id["my_set/missed"].correct.values())  # a number never matches an infeasible label
    # 120 against a label written "121": within 5% for ORLM, within one unit of the last written
    # digit for Mamo's checker, wrong under the strict rules.
    assert by_id["my_set/near"].correct == {
        "rel_1e-6": False,
        "orlm_round_5pct": True,
        "abs_1e-4": False,
        "mamo_rel_1e-4": True,
    }
    (group,) = summarize([run]).groups
    assert (group.items, group.labelled, group.unlabelled) == (5, 4, 1)
    assert (group.infeasible_labelled, group.infeasible_correct) == (2, 1)
    assert group.accuracy["rel_1e-6"] == pytest.approx(2 / 4)
    assert group.accuracy["orlm_round_5pct"] == pytest.approx(3 / 4)
    assert group.execution_rate == pytest.approx(1.0)


def test_an_unlabelled_set_has_no_accuracy(
    scripted_llm: ScriptedLLMServer, client: LLMClient, tmp_path: Path
) -> None:
    dataset = load_dataset("nl4opt-competition-test", limit=2)
    scripted_llm.responder = lambda r: formulation_reaching(3.0)
    outcome = run_evaluation(
        dataset,
        tmp_path / "run",
        LocalExecutor(AgentProblemSolver(client, AgentOptions(mode="oneshot"))),
        modes=["oneshot"],
        model=model_ref(scripted_llm),
    )
    summary = write_report([outcome.run_dir])
    (group,) = summary.groups
    assert group.labelled == 0 and group.unlabelled == 2 and group.accuracy["rel_1e-6"] is None
    assert summary.wrong == [] and "| - | - | - | - |" in (outcome.run_dir / "report.md").read_text()


# --- honesty and robustness of the runner ------------------------------------------------------------
class RecordingSolver:
    """The real agent, noting what the runner hands it and failing on request for one problem."""

    def __init__(self, inner: AgentProblemSolver, fail_on: str | None = None) -> None:
        self.inner = inner
        self.fail_on = fail_on
        self.seen: list[Problem] = []
        self._lock = threading.Lock()

    def __call__(self, problem: Problem, mode: AgentMode) -> AgentAnswer:
        with self._lock:
            self.seen.append(problem)
        if problem.id == self.fail_on:
            raise RuntimeError("a bug in one problem's code path")
        return self.inner(problem, mode)


def test_the_solver_never_sees_a_label(
    scripted_llm: ScriptedLLMServer, client: LLMClient, tmp_path: Path
) -> None:
    dataset = load_dataset("nl4opt", limit=3)
    scripted_llm.responder = lambda r: formulation_reaching(1160.0)
    solver = RecordingSolver(AgentProblemSolver(client))
    run_evaluation(
        dataset,
        tmp_path / "run",
        LocalExecutor(solver),
        modes=["oneshot", "agent"],
        model=model_ref(scripted_llm),
    )
    assert len(solver.seen) == 6
    assert all(p.label.status == "unlabelled" and p.label.objective is None for p in solver.seen)
    assert dataset.problems[0].label.objective == 1160.0  # the caller's copy is untouched
    records = load_run(tmp_path / "run").records
    assert [r.label_objective for r in records if r.problem_id == "nl4opt/0"] == [1160.0, 1160.0]


def test_an_exception_in_one_problem_is_recorded_and_the_run_goes_on(
    scripted_llm: ScriptedLLMServer, client: LLMClient, tmp_path: Path
) -> None:
    dataset = load_dataset("nl4opt", limit=4)
    scripted_llm.responder = lambda r: formulation_reaching(350.0)
    solver = RecordingSolver(AgentProblemSolver(client, AgentOptions(mode="oneshot")), fail_on="nl4opt/2")
    outcome = run_evaluation(
        dataset,
        tmp_path / "run",
        LocalExecutor(solver, workers=2),
        modes=["oneshot"],
        model=model_ref(scripted_llm),
    )
    assert outcome.complete and outcome.written == 4 and outcome.manifest.finished is not None
    by_id = {r.problem_id: r for r in load_run(outcome.run_dir).records}
    broken = by_id["nl4opt/2"]
    assert broken.status == "error" and broken.exception == "RuntimeError"
    assert broken.error == "RuntimeError: a bug in one problem's code path" and not broken.executed
    assert broken.scored and not any(broken.correct.values())
    assert by_id["nl4opt/1"].correct_under() and by_id["nl4opt/3"].status == "optimal"
    summary = write_report([outcome.run_dir])
    assert summary.groups[0].exceptions == 1 and summary.groups[0].errors == 1
    assert "a bug in one problem" in (outcome.run_dir / "report.md").read_text()


def test_a_dead_endpoint_stops_the_run_cleanly_and_resume_finishes_it(
    scripted_llm: ScriptedLLMServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = load_dataset("nl4opt", limit=5)
    healthy = {"on": True}
    answered: list[str] = []

    def respond(request: ChatRequest) -> ScriptedReply | str:
        problem = problem_of(request, dataset)
        if not healthy["on"] or (len(set(answered)) >= 2 and problem.id not in answered):
            return ScriptedReply.error(503, "overloaded")
        answered.append(problem.id)
        return formulation_reaching(problem.label.objective or 0.0)

    scripted_llm.responder = respond
    cli_env(monkeypatch, tmp_path, scripted_llm)
    run_dir = tmp_path / "run"
    args = [
        "eval",
        "--dataset",
        "nl4opt",
        "--limit",
        "5",
        "--mode",
        "oneshot",
        "--no-cache",
        "--out",
        str(run_dir),
    ]
    first = CliRunner().invoke(app, args)
    assert first.exit_code == 1
    assert "stopped early" in first.stderr and "--resume" in first.stderr and "503" in first.stderr
    kept = read_jsonl(run_dir / "records.jsonl")
    assert sorted(r["problem_id"] for r in kept) == ["nl4opt/0", "nl4opt/1"]  # finished work is kept
    manifest = json.loads((run_dir / "manifest.json").read_text())
    assert manifest["finished"] is None and "overloaded" in manifest["sessions"][0]["stopped"]
    assert (run_dir / "report.md").is_file()  # what finished is reported

    answered.clear()
    scripted_llm.responder = lambda r: formulation_reaching(problem_of(r, dataset).label.objective or 0.0)
    before = scripted_llm.request_count
    second = CliRunner().invoke(app, [*args, "--resume"])
    assert second.exit_code == 0, second.output
    asked_again = {problem_of(r, dataset).id for r in scripted_llm.requests[before:]}
    assert asked_again == {"nl4opt/2", "nl4opt/3", "nl4opt/4"}
    final = read_jsonl(run_dir / "records.jsonl")
    assert sorted(r["problem_id"] for r in final) == [f"nl4opt/{i}" for i in range(5)]
    assert all(r["correct"]["rel_1e-6"] for r in final)
    assert json.loads((run_dir / "manifest.json").read_text())["finished"] is not None


# --- refusing to mix runs ----------------------------------------------------------------------------
def test_resume_refuses_another_model_or_changed_data_and_a_plain_rerun(
    scripted_llm: ScriptedLLMServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "tiny.jsonl"
    path.write_text(
        json.dumps({"id": "a", "question": "Make at most 4 units; how many?", "answer": 4})
        + "\n"
        + json.dumps({"id": "b", "question": "Make at most 6 units; how many?", "answer": 6})
        + "\n"
    )
    scripted_llm.responder = lambda r: formulation_reaching(4.0)
    cli_env(monkeypatch, tmp_path, scripted_llm)
    run_dir = tmp_path / "run"
    args = ["eval", "--dataset", str(path), "--mode", "oneshot", "--out", str(run_dir)]
    assert CliRunner().invoke(app, [*args, "--limit", "1"]).exit_code == 0
    asked = scripted_llm.request_count

    again = CliRunner().invoke(app, args)
    assert again.exit_code == 1 and "pass --resume" in again.stderr

    cli_env(monkeypatch, tmp_path, scripted_llm, model="another-model")
    other_model = CliRunner().invoke(app, [*args, "--resume"])
    assert other_model.exit_code == 1
    assert "refusing to resume" in other_model.stderr and "another-model" in other_model.stderr

    cli_env(monkeypatch, tmp_path, scripted_llm)
    other_options = CliRunner().invoke(app, [*args, "--resume", "--max-repairs", "1"])
    assert other_options.exit_code == 1 and "agent options" in other_options.stderr

    path.write_text(path.read_text().replace('"answer": 6', '"answer": 7'))  # a silently edited copy
    changed = CliRunner().invoke(app, [*args, "--resume"])
    assert changed.exit_code == 1 and "checksum" in changed.stderr and "data file changed" in changed.stderr
    assert scripted_llm.request_count == asked  # nothing was asked by the refused runs
    assert len(read_jsonl(run_dir / "records.jsonl")) == 1


def test_records_of_another_checksum_are_refused_by_the_runner(
    scripted_llm: ScriptedLLMServer, client: LLMClient, tmp_path: Path
) -> None:
    dataset = load_dataset("nl4opt", limit=1)
    scripted_llm.responder = lambda r: formulation_reaching(1.0)
    executor = LocalExecutor(AgentProblemSolver(client))
    run_evaluation(dataset, tmp_path / "run", executor, modes=["agent"], model=model_ref(scripted_llm))
    log = tmp_path / "run" / "records.jsonl"
    record = EvalRecord.model_validate_json(log.read_text().splitlines()[0])
    forged = record.model_copy(update={"dataset_checksum": "0" * 64, "problem_id": "nl4opt/1"})
    log.write_text(log.read_text() + forged.model_dump_json() + "\n")
    with pytest.raises(RunMismatchError, match="checksum"):
        run_evaluation(
            dataset, tmp_path / "run", executor, modes=["agent"], model=model_ref(scripted_llm), resume=True
        )


# --- the record log ------------------------------------------------------------------------------------
def _record(problem_id: str, mode: AgentMode = "oneshot") -> EvalRecord:
    return EvalRecord(
        dataset="d",
        dataset_version="v",
        dataset_checksum="c",
        subset="d",
        problem_id=problem_id,
        mode=mode,
        status="optimal",
        predicted_objective=1.0,
        label_status="optimal",
        label_objective=1.0,
        scored=True,
        correct={"rel_1e-6": True},
        executed=True,
        seconds=0.1,
    )


def test_a_torn_last_line_is_cut_and_a_corrupt_one_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "records.jsonl"
    log = RecordLog(path)
    log.append(_record("p1"))
    log.append(_record("p2"))
    with path.open("a") as handle:
        handle.write(_record("p3").model_dump_json()[:40])  # killed mid-write
    assert [r.problem_id for r in log.load()] == ["p1", "p2"]
    assert [r.problem_id for r in log.load(repair=True)] == ["p1", "p2"]
    log.append(_record("p3"))
    assert [r.problem_id for r in log.load()] == ["p1", "p2", "p3"]
    assert all(json.loads(line) for line in path.read_text().splitlines())

    path.write_text(path.read_text() + "{not json}\n" + _record("p4").model_dump_json() + "\n")
    with pytest.raises(RunDirError, match=r"records.jsonl:4"):
        log.load()
    path.write_text(_record("p1").model_dump_json() + "\n" + _record("p1").model_dump_json() + "\n")
    with pytest.raises(RunDirError, match="second record for p1"):
        log.load()


# --- the throughput benchmark stays honest -------------------------------------------------------------
def _benchmark_module() -> ModuleType:
    path = Path(__file__).resolve().parents[1] / "benchmarks" / "eval_throughput.py"
    spec = importlib.util.spec_from_file_location("eval_throughput", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["eval_throughput"] = module  # pydantic resolves the module's annotations through it
    spec.loader.exec_module(module)
    return module


def test_throughput_benchmark_labels_are_exact_and_its_pipeline_scores_them_all() -> None:
    bench = _benchmark_module()
    # max 3x + 2y, x + y <= 4, x + 3y <= 6: vertices (4,0)=12, (3,1)=11, (0,2)=4
    item = bench.LPItem(text="", sense="maximize", costs=[3, 2], matrix=[[1, 1], [1, 3]], rhs=[4, 6])
    assert bench.exact_optimum(item) == 12
    # min 2x + 3y, x + y >= 4, x + 3y >= 6: vertices (6,0)=12, (3,1)=9, (0,4)=12
    item = bench.LPItem(text="", sense="minimize", costs=[2, 3], matrix=[[1, 1], [1, 3]], rhs=[4, 6])
    assert bench.exact_optimum(item) == 9
    report = bench.run(items=6, latency=0.0)
    assert [r.workers for r in report.results] == [1, 2, 4, 8]
    assert all(r.accuracy == 1.0 and r.executed == 1.0 and r.llm_calls == 6 for r in report.results)
    assert report.speedup_8 is not None and report.speedup_8 > 0


# --- trained parameters against the defaults ------------------------------------------------------
def test_report_keeps_trained_runs_apart_and_compares_them_with_the_defaults(
    scripted_llm: ScriptedLLMServer, client: LLMClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    dataset = load_dataset("nl4opt", limit=3)
    first, second, third = dataset.problems
    labels = {p.id: p.label.objective for p in dataset.problems}
    assert all(value is not None and value >= 0 for value in labels.values())
    marker = "TRAINED-MARKER: read every number twice."
    trained = ModelingAgent(client)
    trained.system_prompt.value = f"{trained.system_prompt.value}\n{marker}"
    params_file = tmp_path / "trained.json"
    trained.save(params_file)

    def respond(request: ChatRequest) -> str:
        # Defaults: only the first problem right. Trained: the second one too, the third never.
        problem = problem_of(request, dataset)
        right = problem.id == first.id or (problem.id == second.id and marker in request.prompt_text)
        return formulation_reaching(labels[problem.id] if right else labels[problem.id] + 7)

    scripted_llm.responder = respond
    cli_env(monkeypatch, tmp_path, scripted_llm)
    runner = CliRunner()
    common = ["eval", "--dataset", "nl4opt", "--limit", "3", "--max-repairs", "0", "--no-cache"]
    for name, extra in (("before", []), ("after", ["--params", str(params_file)])):
        result = runner.invoke(app, [*common, "--out", str(tmp_path / name), *extra])
        assert result.exit_code == 0, result.output
    runs = [str(tmp_path / "before"), str(tmp_path / "after")]
    result = runner.invoke(app, ["eval", "report", *runs, "--out", str(tmp_path / "both")])
    assert result.exit_code == 0, result.output

    summary = summarize([load_run(tmp_path / "before"), load_run(tmp_path / "after")])
    accuracy = {group.params: group.accuracy["rel_1e-6"] for group in summary.groups}
    trained_label = next(label for label in accuracy if label != "default")
    assert trained_label.startswith("trained@")
    assert accuracy == {"default": pytest.approx(1 / 3), trained_label: pytest.approx(2 / 3)}
    (change,) = summary.params_changes
    assert (change.items, change.fixed, change.broken, change.mode) == (3, 1, 0, "agent")
    assert change.change["rel_1e-6"] == pytest.approx(1 / 3)
    wrong = {(w.problem_id, w.params) for w in summary.wrong}
    assert wrong == {(second.id, "default"), (third.id, "default"), (third.id, trained_label)}
    report = (tmp_path / "both" / "report.md").read_text()
    assert "## Trained parameters vs default" in report and "33.3 → 66.7 (+33.3)" in report
    assert f"| nl4opt | scripted-model | {trained_label} | agent |" in report
    rows = list(csv.DictReader((tmp_path / "both" / "results.csv").open()))
    assert sorted(row["params"] for row in rows) == ["default"] * 3 + [trained_label] * 3
