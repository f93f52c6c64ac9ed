"""The agent trains itself, against the scripted loopback server playing BOTH LLMs (real HTTP, the
real openai client, real solvers).

The scripted "agent LLM" writes a correct formulation only when the system prompt holds MAGIC;
otherwise it makes the small-model mistake of writing the second product's per-unit use as 1,
which is harmless on some problems (b = 1) and wrong on others. HARM in the system prompt makes
it write a minimization (optimum 0, always wrong). The scripted "optimizer LLM" reads the
feedback and proposes prompts, so a parameter change really changes validation accuracy.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import prompts
from agent.answer import AgentAnswer, AnswerStatus, Attempt
from agent.datasets import DatasetError, Label, Problem, load_dataset
from agent.modeler import AgentOptions, ModelingAgent
from agent.training import (
    ParameterGuard,
    TestSetError,
    TrainSettings,
    agent_validators,
    item_feedback,
    optimizer_llm_config,
    prepare_data,
    split_problems,
    train_agent,
)
from agent.training.guards import modeling_hints_problems, sanity_code_problems, worked_example_problems
from solvers.result import CheckReport, Violation
from trace_graph.context import graph_context
from trace_graph.llm import ChatRequest, LLMClient, LLMConfig, ScriptedLLMServer
from trace_graph.optimizers import SECTION_TITLES, split_sections

ROOT = Path(__file__).resolve().parents[1]
MAGIC = "Write each product's per-unit use of every resource as its own coefficient."
HARM = "Always minimize the objective."


@pytest.fixture(autouse=True)
def fresh_names() -> Iterator[None]:
    # Parameter labels the optimizer reads (`system_prompt`) must not carry suffixes from other tests.
    with graph_context():
        yield


# --- the scripted world ------------------------------------------------------------------------------
def lp_optimum(a: float, b: float, hours: float, most: float, pa: float, pb: float) -> float:
    """max pa*x + pb*y s.t. a*x + b*y <= hours, y <= most, x, y >= 0, by enumerating its vertices."""
    vertices = [(0.0, 0.0), (hours / a, 0.0), (0.0, min(most, hours / b))]
    if hours - b * most >= 0:
        vertices.append(((hours - b * most) / a, most))
    return max(pa * x + pb * y for x, y in vertices)


SHOP_PRODUCTS = [
    ("chairs", "tables"),
    ("shirts", "jackets"),
    ("boxes", "crates"),
    ("lamps", "desks"),
    ("cups", "bowls"),
    ("rings", "chains"),
    ("kites", "sails"),
    ("pens", "books"),
]


def workshop(index: int, b: float) -> tuple[str, dict[str, float]]:
    first, second = SHOP_PRODUCTS[index % len(SHOP_PRODUCTS)]
    numbers = {
        "a": 1.0 + index % 2,
        "b": b,
        "hours": 60.0 + 12 * index,
        "most": 10.0 + index,
        "pa": 2.0 + index % 2,
        "pb": 6.0 + index % 3,  # more per labor hour than the first product: b's mistake shows
    }
    text = (
        f"Workshop {index} makes {first} and {second}. Each of its {first} needs {numbers['a']:g} hours "
        f"of labor and each of its {second} needs {numbers['b']:g} hours; {numbers['hours']:g} labor hours "
        f"are available. At most {numbers['most']:g} {second} can be sold. The profit is "
        f"${numbers['pa']:g} per unit of {first} and ${numbers['pb']:g} per unit of {second}. How many "
        f"of each should workshop {index} make to maximize profit?"
    )
    return text, numbers


def draft(numbers: dict[str, float], coefficient_b: float, sense: str = "maximize") -> str:
    return json.dumps(
        {
            "notes": "labor hours per unit, profit per unit.",
            "variables": [
                {"name": "x", "meaning": "first product made (units)", "type": "continuous"},
                {"name": "y", "meaning": "second product made (units)", "type": "continuous"},
            ],
            "objective": {"sense": sense, "expression": f"{numbers['pa']:g}*x + {numbers['pb']:g}*y"},
            "constraints": [
                {
                    "name": "labor",
                    "expression": f"{numbers['a']:g}*x + {coefficient_b:g}*y <= {numbers['hours']:g}",
                },
                {"name": "demand", "expression": f"y <= {numbers['most']:g}"},
            ],
            "missing_information": [],
        }
    )


class World:
    """Problems with labels, and the two scripted LLMs behind one server."""

    def __init__(self) -> None:
        self.numbers: dict[str, dict[str, float]] = {}
        self.items: dict[str, list[dict[str, Any]]] = {"train": [], "val": []}
        self.proposals: list[Callable[[str], dict[str, str] | None]] = []
        self.optimizer_prompts: list[str] = []
        self._lock = threading.Lock()
        # easy items (b = 1: the sloppy draft is right anyway) and hard ones (b = 3)
        layout = {"train": [1, 3, 1, 3], "val": [1, 3, 1, 3]}
        index = 0
        for split, coefficients in layout.items():
            for b in coefficients:
                text, numbers = workshop(index, b)
                label = lp_optimum(**numbers)
                sloppy = lp_optimum(**{**numbers, "b": 1.0})
                assert (b == 1) == (sloppy == label)  # the mistake matters exactly on the hard items
                self.numbers[text] = numbers
                self.items[split].append({"id": f"w{index}", "question": text, "answer": label})
                index += 1

    def write(self, folder: Path) -> tuple[Path, Path]:
        paths = []
        for split in ("train", "val"):
            path = folder / f"{split}.jsonl"
            path.write_text("".join(json.dumps(item) + "\n" for item in self.items[split]))
            paths.append(path)
        return paths[0], paths[1]

    def __call__(self, request: ChatRequest) -> str:
        system = request.messages[0].text if request.messages else ""
        if system.startswith(("You improve a program", "You are an optimizer")):
            return self.optimize(request)
        # first-round and repair prompts both carry the question on its own "Problem: ..." line
        question = request.last_user_text.rsplit("Problem: ", 1)[1].split("\n", 1)[0].strip()
        numbers = self.numbers[question]
        if HARM in system:
            return draft(numbers, numbers["b"], sense="minimize")
        # the lesson works from the system prompt or, as a learned hint, from the user prompt
        learned = MAGIC in system or MAGIC in request.last_user_text
        return draft(numbers, numbers["b"] if learned else 1.0)

    def optimize(self, request: ChatRequest) -> str:
        prompt = request.last_user_text
        with self._lock:
            self.optimizer_prompts.append(prompt)
            proposal = self.proposals.pop(0)(prompt) if self.proposals else None
        if proposal is not None and "lesson" in proposal:  # the lessons optimizer's reply shape
            return json.dumps({"reasoning": "read the feedback", **proposal})
        return json.dumps({"reasoning": "read the feedback", "suggestion": proposal or {}})


def label_of(prompt: str, name: str = "system_prompt") -> str:
    """The optimizer's label for an agent parameter, as its prompt shows it."""
    match = re.search(rf"\((?:str|code)\) ({re.escape(name)}\w*)", prompt)
    assert match, f"{name} is not among the prompt's variables"
    return match.group(1)


def propose_system_prompt(extra: str, *, needs: str = "") -> Callable[[str], dict[str, str] | None]:
    def proposal(prompt: str) -> dict[str, str] | None:
        if needs and needs not in prompt:
            return None  # this optimizer only acts on feedback it has read
        return {label_of(prompt): f"{prompts.SYSTEM_PROMPT} {extra}"}

    return proposal


@pytest.fixture
def world(scripted_llm: ScriptedLLMServer) -> World:
    scripted = World()
    scripted_llm.responder = scripted
    return scripted


def settings_for(tmp_path: Path, train: Path, val: Path, **changes: Any) -> TrainSettings:
    values: dict[str, Any] = {
        "train": str(train),
        "val": str(val),
        "batch_size": 2,
        "epochs": 1,
        "out": tmp_path / "params.json",
        "progress": False,
    }
    values.update(changes)
    return TrainSettings(**values)


# --- training runs ---------------------------------------------------------------------------------------
def test_training_reverts_a_regression_then_learns_and_saves_params_that_load_back(
    scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient, world: World, tmp_path: Path
) -> None:
    world.proposals = [propose_system_prompt(HARM), propose_system_prompt(MAGIC, needs="Wrong objective")]
    train, val = world.write(tmp_path)
    settings = settings_for(tmp_path, train, val, threads=2)
    report = train_agent(settings, scripted_llm_client, scripted_llm_client)

    assert scripted_llm.errors == []
    steps = [json.loads(line) for line in (tmp_path / "params-log" / "steps.jsonl").read_text().splitlines()]
    assert [s["status"] for s in steps] == ["baseline", "reverted", "accepted"]
    assert [s["val_score"] for s in steps] == [0.5, 0.0, 1.0]
    assert report.baseline_val_accuracy == 0.5 and report.best_val_accuracy == 1.0
    assert report.statuses == {"reverted": 1, "accepted": 1} and report.changed_parameters == [
        "system_prompt"
    ]
    # the step after the revert started from the restored prompt and saw numbers-and-direction feedback
    second = split_sections(world.optimizer_prompts[1], SECTION_TITLES)
    assert HARM not in second["Variables"] and MAGIC not in second["Variables"]
    assert re.search(
        r"Wrong objective: the model's optimum is [\d.]+ \(maximize\), the correct optimum is "
        r"[\d.]+\. The model's optimum is too high by",
        second["Feedback"],
    )
    assert steps[2]["train_outcomes"] and steps[0]["val_outcomes"] == {"correct": 2, "wrong_objective": 2}

    # readable params with provenance; a fresh agent loads them and really solves a hard item
    document = json.loads(settings.out.read_text())
    assert document["parameters"]["system_prompt"] == f"{prompts.SYSTEM_PROMPT} {MAGIC}"
    assert document["training"]["best_val_accuracy"] == 1.0 and document["training"]["rule"] == "rel_1e-6"
    fresh = ModelingAgent(scripted_llm_client, AgentOptions(mode="oneshot"), params=settings.out)
    assert fresh.state_dict() == {
        path: "\n".join(value) if isinstance(value, list) else value
        for path, value in document["parameters"].items()
    }
    hard = world.items["val"][1]
    answer = fresh.solve(hard["question"])
    assert answer.objective == pytest.approx(hard["answer"], rel=1e-9)

    items = (tmp_path / "params-log" / "items.jsonl").read_text().splitlines()
    assert len(items) == 4 + (2 + 4) * 2  # baseline validation, then per step: a minibatch and validation
    assert (tmp_path / "params-log" / "learning_curve.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_invalid_rewrites_are_rejected_as_feedback_and_not_applied(
    scripted_llm_client: LLMClient, world: World, tmp_path: Path
) -> None:
    def broken_example(prompt: str) -> dict[str, str]:
        return {label_of(prompt, "worked_example"): "Problem: a tiny shop.\nJSON: {notes: oops"}

    world.proposals = [broken_example, propose_system_prompt(MAGIC, needs="rejected and NOT applied")]
    train, val = world.write(tmp_path)
    report = train_agent(
        settings_for(tmp_path, train, val, train_limit=2), scripted_llm_client, scripted_llm_client
    )

    retry = split_sections(world.optimizer_prompts[1], SECTION_TITLES)["Feedback"]
    assert "worked_example was rejected and NOT applied" in retry and "not one valid JSON object" in retry
    assert report.rejected_updates == 1 and report.changed_parameters == ["system_prompt"]
    document = json.loads((tmp_path / "params.json").read_text())
    assert document["parameters"]["worked_example"] == prompts.WORKED_EXAMPLE
    step = json.loads((tmp_path / "params-log" / "steps.jsonl").read_text().splitlines()[1])
    assert step["status"] == "accepted" and step["rejected"][0]["parameter"] == "worked_example"


def test_opro_learns_from_the_score_history(
    scripted_llm_client: LLMClient, world: World, tmp_path: Path
) -> None:
    world.proposals = [propose_system_prompt(MAGIC, needs="score: 0.5")]
    train, val = world.write(tmp_path)
    settings = settings_for(
        tmp_path, train, val, optimizer="opro", train_limit=2, parameters=["system_prompt"]
    )
    report = train_agent(settings, scripted_llm_client, scripted_llm_client)
    assert "#History" in world.optimizer_prompts[0]
    assert report.baseline_val_accuracy == 0.5 and report.best_val_accuracy == 1.0


def test_the_embedded_model_optimizes_one_parameter_per_step(
    scripted_llm: ScriptedLLMServer, world: World, tmp_path: Path
) -> None:
    world.proposals = [propose_system_prompt(MAGIC), lambda prompt: None]
    train, val = world.write(tmp_path)
    # the embedded model's config is recognized by its cache scope: 4k context, so prompts take turns
    small = scripted_llm.llm_config(cache_scope="embedded:qwen:abc")
    settings = settings_for(tmp_path, train, val, parameters=["system_prompt", "formulation_instructions"])
    with LLMClient(small, cache=False) as client:
        report = train_agent(settings, client, client)
    first, second = (split_sections(p, SECTION_TITLES)["Variables"] for p in world.optimizer_prompts)
    assert first.startswith("(str) system_prompt=") and "formulation_instructions=" not in first
    assert second.startswith("(str) formulation_instructions=") and "system_prompt=" not in second
    assert all(len(p) <= 6_000 for p in world.optimizer_prompts)
    assert report.statuses == {"accepted": 1, "unchanged": 1} and report.best_val_accuracy == 1.0


def test_the_embedded_model_learns_short_hints_by_default_and_the_agent_reads_them(
    scripted_llm: ScriptedLLMServer, world: World, tmp_path: Path
) -> None:
    def propose_hint(prompt: str) -> dict[str, str]:
        return {label_of(prompt, "modeling_hints"): f"- {MAGIC}"}

    # too many lessons: refused by the guard and asked again
    too_many = "\n".join(f"- lesson {n}" for n in range(7))
    world.proposals = [lambda prompt: {label_of(prompt, "modeling_hints"): too_many}, propose_hint]
    train, val = world.write(tmp_path)
    small = scripted_llm.llm_config(cache_scope="embedded:qwen:abc")
    with LLMClient(small, cache=False) as client:
        report = train_agent(settings_for(tmp_path, train, val, epochs=1), client, client)
    variables = split_sections(world.optimizer_prompts[0], SECTION_TITLES)["Variables"]
    assert variables.startswith("(str) modeling_hints=") and "system_prompt=" not in variables
    assert report.trained_parameters == ["modeling_hints"] and report.best_val_accuracy == 1.0
    assert "keep the 6 most useful" in world.optimizer_prompts[1]  # the guard's reason went back
    saved = json.loads((tmp_path / "params.json").read_text())["parameters"]
    assert saved["modeling_hints"] == f"- {MAGIC}" and saved["system_prompt"] == prompts.SYSTEM_PROMPT
    with LLMClient(small, cache=False) as client:
        agent = ModelingAgent(client, params=tmp_path / "params.json")
        before = scripted_llm.request_count
        agent.solve(world.items["val"][1]["question"])
    formulation = scripted_llm.requests[before].last_user_text
    assert f"Lessons from earlier problems (follow them):\n- {MAGIC}" in formulation


def test_the_lessons_optimizer_adds_a_general_lesson_after_refusing_a_specific_one(
    scripted_llm_client: LLMClient, world: World, tmp_path: Path
) -> None:
    world.proposals = [
        lambda prompt: {"lesson": "Use 60 labor hours for the chairs."},  # one problem's numbers
        lambda prompt: {"lesson": MAGIC} if "quotes one problem's numbers" in prompt else None,
    ]
    train, val = world.write(tmp_path)
    settings = settings_for(tmp_path, train, val, optimizer="lessons", train_limit=2)
    report = train_agent(settings, scripted_llm_client, scripted_llm_client)
    assert report.trained_parameters == ["modeling_hints"]
    assert "Wrong objective" in world.optimizer_prompts[0] and "(none yet)" in world.optimizer_prompts[0]
    assert report.rejected_updates == 1 and report.statuses == {"accepted": 1}
    assert report.baseline_val_accuracy == 0.5 and report.best_val_accuracy == 1.0
    saved = json.loads((tmp_path / "params.json").read_text())["parameters"]
    assert saved["modeling_hints"] == f"- {MAGIC}" and saved["system_prompt"] == prompts.SYSTEM_PROMPT


def test_the_lessons_optimizer_only_trains_lesson_lists(
    scripted_llm_client: LLMClient, world: World, tmp_path: Path
) -> None:
    train, val = world.write(tmp_path)
    settings = settings_for(tmp_path, train, val, optimizer="lessons", parameters=["system_prompt"])
    with pytest.raises(ValueError, match="hold no lessons"):
        train_agent(settings, scripted_llm_client, scripted_llm_client)


def test_untrained_hints_leave_the_prompt_unchanged(scripted_llm: ScriptedLLMServer, world: World) -> None:
    with LLMClient(scripted_llm.llm_config(), cache=False) as client:
        ModelingAgent(client).solve(world.items["val"][0]["question"])
    assert "Lessons from earlier problems" not in scripted_llm.requests[0].last_user_text


def test_a_dead_optimizer_endpoint_ends_the_run_with_the_best_params_saved(
    scripted_llm_client: LLMClient, world: World, tmp_path: Path
) -> None:
    train, val = world.write(tmp_path)
    dead = LLMConfig(base_url="http://127.0.0.1:9/v1", cache_path=None, max_retries=0, retry_deadline=0.2)
    with LLMClient(dead, cache=False) as optimizer_llm:
        report = train_agent(settings_for(tmp_path, train, val), scripted_llm_client, optimizer_llm)
    assert report.stopped is not None and "unavailable" in report.stopped
    assert report.baseline_val_accuracy == 0.5 and report.steps == 0
    saved = json.loads((tmp_path / "params.json").read_text())
    assert saved["parameters"]["system_prompt"] == prompts.SYSTEM_PROMPT and saved["training"]["stopped"]


def test_resume_continues_the_logged_run(
    scripted_llm_client: LLMClient, world: World, tmp_path: Path
) -> None:
    world.proposals = [propose_system_prompt(MAGIC)]
    train, val = world.write(tmp_path)
    first = train_agent(
        settings_for(tmp_path, train, val, train_limit=2), scripted_llm_client, scripted_llm_client
    )
    assert first.steps == 1
    memory = json.loads((tmp_path / "params-log" / "checkpoint.json").read_text())["optimizer_memory"]
    assert memory["steps_taken"] == 1  # the optimizer's count and memory survive a resume
    again = settings_for(tmp_path, train, val, train_limit=2, epochs=2, resume=True)
    second = train_agent(again, scripted_llm_client, scripted_llm_client)
    assert second.steps == 2 and second.best_val_accuracy == 1.0
    steps = (tmp_path / "params-log" / "steps.jsonl").read_text().splitlines()
    assert [json.loads(line)["step"] for line in steps] == [0, 1, 2]  # appended, not restarted
    with pytest.raises(ValueError, match="other data or settings"):
        train_agent(
            settings_for(tmp_path, train, val, epochs=2, resume=True),
            scripted_llm_client,
            scripted_llm_client,
        )


# --- feedback for each outcome -------------------------------------------------------------------------
BAKERY = (
    "A bakery bakes bread and cakes. A loaf of bread uses 1 hour of oven time and a cake uses 2 hours; "
    "the oven is available 40 hours a week. At most 15 cakes can be sold per week. Each loaf earns $3 "
    "profit and each cake $5. How many loaves and cakes should it bake to maximize profit?"
)


def bakery_draft(constraints: list[dict[str, str]], sense: str = "maximize") -> str:
    return json.dumps(
        {
            "notes": "oven hours 40: bread 1, cake 2. cakes at most 15.",
            "variables": [{"name": "bread", "type": "integer"}, {"name": "cake", "type": "integer"}],
            "objective": {"sense": sense, "expression": "3*bread + 5*cake"},
            "constraints": constraints,
            "missing_information": [],
        }
    )


OVEN = {"name": "oven", "expression": "bread + 2*cake <= 40"}
LABELLED = Problem(
    id="t/bakery", dataset="t", question=BAKERY, label=Label(status="optimal", objective=120.0, raw="120")
)


def oneshot_answer(scripted_llm: ScriptedLLMServer, client: LLMClient, *replies: str) -> AgentAnswer:
    scripted_llm.add(*replies)
    return ModelingAgent(client, AgentOptions(mode="oneshot")).solve(BAKERY)


def test_feedback_for_solved_answers(scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient) -> None:
    right = item_feedback(LABELLED, oneshot_answer(scripted_llm, scripted_llm_client, bakery_draft([OVEN])))
    assert (
        right.kind == "correct"
        and right.score == 1.0
        and right.feedback.startswith("Correct: the optimum 120")
    )

    loose = oneshot_answer(
        scripted_llm,
        scripted_llm_client,
        bakery_draft([{"name": "oven", "expression": "bread + cake <= 40"}]),
    )
    wrong = item_feedback(LABELLED, loose)
    assert wrong.kind == "wrong_objective" and wrong.score == 0.0
    assert "optimum is 200 (maximize), the correct optimum is 120" in wrong.feedback
    assert "too high by 80" in wrong.feedback and "too loose" in wrong.feedback
    assert "oven: bread + cake <= 40" in wrong.feedback  # the model it wrote

    tight = oneshot_answer(
        scripted_llm,
        scripted_llm_client,
        bakery_draft([{"name": "oven", "expression": "2*bread + 2*cake <= 40"}]),
    )
    assert "too low by" in item_feedback(LABELLED, tight).feedback
    assert "too restrictive" in item_feedback(LABELLED, tight).feedback

    infeasible_label = LABELLED.model_copy(
        update={"label": Label(status="infeasible", raw="No Best Solution")}
    )
    missed = item_feedback(
        infeasible_label, oneshot_answer(scripted_llm, scripted_llm_client, bakery_draft([OVEN]))
    )
    assert missed.kind == "missed_infeasibility" and "no feasible plan" in missed.feedback
    unbounded_label = LABELLED.model_copy(update={"label": Label(status="unbounded", raw="unbounded")})
    limited = item_feedback(
        unbounded_label, oneshot_answer(scripted_llm, scripted_llm_client, bakery_draft([OVEN]))
    )
    assert limited.kind == "missed_unboundedness" and "without limit" in limited.feedback


def test_feedback_for_failed_answers(scripted_llm: ScriptedLLMServer, scripted_llm_client: LLMClient) -> None:
    infeasible = oneshot_answer(
        scripted_llm,
        scripted_llm_client,
        bakery_draft([OVEN, {"name": "bread_min", "expression": "bread >= 50"}]),
    )
    outcome = item_feedback(LABELLED, infeasible)
    assert outcome.kind == "infeasible" and "the problem has the optimum 120" in outcome.feedback
    assert "bread_min" in outcome.feedback  # the diagnosis names the conflict

    unbounded = item_feedback(LABELLED, oneshot_answer(scripted_llm, scripted_llm_client, bakery_draft([])))
    assert unbounded.kind == "unbounded" and "unbounded" in unbounded.feedback

    unreadable = item_feedback(
        LABELLED, oneshot_answer(scripted_llm, scripted_llm_client, "no JSON here", "still none")
    )
    assert unreadable.kind == "parse_error" and "could not be read" in unreadable.feedback

    misspelled = oneshot_answer(
        scripted_llm,
        scripted_llm_client,
        bakery_draft([{"name": "oven", "expression": "bread + 2*cakes <= 40"}]),
    )
    built = item_feedback(LABELLED, misspelled)
    assert built.kind == "build_error" and "cakes" in built.feedback


def test_feedback_for_verification_clarification_and_crash() -> None:
    check = CheckReport(
        ok=False,
        tolerance=1e-6,
        violations=[Violation(kind="constraint", name="oven", message="oven: lhs 41 > rhs 40", amount=1.0)],
    )
    answer = AgentAnswer(
        question=BAKERY,
        status=AnswerStatus.OPTIMAL,
        objective=125.0,
        sense="maximize",
        check=check,
        repair_rounds=2,
        attempts=[
            Attempt(round=0, stage="verify", outcome="verification failed", feedback="x"),
            Attempt(round=1, stage="verify", outcome="verification failed", feedback="y"),
            Attempt(round=2, stage="verify", outcome="verification failed", feedback="z"),
        ],
    )
    verified = item_feedback(LABELLED, answer)
    assert verified.kind == "verification_failed" and "oven: lhs 41 > rhs 40" in verified.feedback
    assert "Rounds: round 0: verification failed -> round 1" in verified.feedback

    asking = AgentAnswer(
        question=BAKERY,
        status=AnswerStatus.NEEDS_CLARIFICATION,
        clarifying_questions=["How many oven hours?"],
    )
    assert item_feedback(LABELLED, asking).kind == "needs_clarification"

    broken = AgentAnswer(question=BAKERY, status=AnswerStatus.ERROR, error="internal error")
    crashed = item_feedback(LABELLED, broken, crash="Calling `compose` raised (KeyError) 'x'")
    assert crashed.kind == "crash" and "(KeyError) 'x'" in crashed.feedback
    with pytest.raises(ValueError, match="no label"):
        item_feedback(LABELLED.model_copy(update={"label": Label(status="unlabelled")}), broken)


# --- guards ---------------------------------------------------------------------------------------------
def test_default_parameters_pass_their_guard_and_broken_ones_do_not(scripted_llm_client: LLMClient) -> None:
    agent = ModelingAgent(scripted_llm_client)
    guard = ParameterGuard(agent_validators(agent), forbidden_texts=[BAKERY])
    assert all(guard.problems(path, p.value) == [] for path, p in agent.named_parameters())

    assert "limit is 400" in guard.problems("system_prompt", "x" * 401)[0]
    assert guard.problems("system_prompt", "  ") == ["it is empty"]
    no_notes = prompts.FORMULATION_INSTRUCTIONS.replace("notes", "remarks")
    assert "must still name notes" in guard.problems("formulation_instructions", no_notes)[0]
    assert "from_table" in guard.problems("data_instructions", "Use the tables.")[0]
    assert (
        "copies a sentence of a training problem"
        in guard.problems("repair_instructions", prompts.REPAIR_INSTRUCTIONS + " " + BAKERY)[0]
    )

    notes_last = prompts.WORKED_EXAMPLE.replace('JSON: {"notes": "', 'JSON: {"remark": "', 1)
    assert "notes" in worked_example_problems(notes_last)[0]
    unsolvable = prompts.WORKED_EXAMPLE.replace("<= 240", ">= 24000")  # infeasible with testing <= 140
    assert "does not solve" in worked_example_problems(unsolvable)[0]
    two = prompts.WORKED_EXAMPLE + "\n" + prompts.WORKED_EXAMPLE
    assert "exactly one example" in worked_example_problems(two)[0]
    assert "build_model" in guard.problems("code_worked_example", "Problem: x\n```python\nx = 1\n```")[0]


def test_hints_that_quote_one_problem_are_refused() -> None:
    # the embedded optimizer's two real proposals from a training run on synth-v1
    real = [
        "- Write constraints in Python-like algebra. For example, `stock_end_q1 = city_q1 + 100`.",
        "- Add the constraint `minimize 190*dawn + 150*day + 130*split + 150*swing`.",
    ]
    for hint in real:
        [problem] = modeling_hints_problems(hint)
        assert "quotes one problem's numbers or names" in problem
    assert "stock_end_q1" in modeling_hints_problems(real[0])[0]
    general = (
        "- A minimum requirement is written with >=, a capacity with <=.\n"
        "- Use for_all for one constraint per member of a set; sum over x[i] for totals.\n"
        "- Every variable in an expression must be declared first."
    )
    assert modeling_hints_problems(general) == []


def test_a_hint_that_reports_the_feedback_instead_of_a_rule_is_refused() -> None:
    # accepted on a validation tie in a real run with the lessons optimizer, before this check
    real = (
        "- The feedback indicates that the model was unable to build the model due to an undefined "
        "objective in the input prompt."
    )
    [problem] = modeling_hints_problems(real)
    assert "describes the feedback" in problem


def test_sanity_code_must_keep_its_signature_and_accept_a_right_answer() -> None:
    assert "compile" in sanity_code_problems("def sanity_rules(facts):\n  return [")[0]
    assert "one argument" in sanity_code_problems("def sanity_rules(facts, extra):\n    return []")[0]
    assert "raised" in sanity_code_problems("def sanity_rules(facts):\n    return facts.nothing")[0]
    assert "list of strings" in sanity_code_problems("def sanity_rules(facts):\n    return 3")[0]
    assert "known-correct" in sanity_code_problems("def sanity_rules(facts):\n    return ['always wrong']")[0]
    assert sanity_code_problems("def sanity_rules(facts):\n    return []") == []


# --- data: splits and the test-set guard --------------------------------------------------------------------
def user_file(path: Path, questions: list[str]) -> Path:
    path.write_text("".join(json.dumps({"question": q, "answer": 1}) + "\n" for q in questions))
    return path


def test_a_single_set_is_split_deterministically_without_overlap(tmp_path: Path) -> None:
    data = user_file(tmp_path / "synth.jsonl", [f"Problem number {i}: maximize x." for i in range(12)])
    first = prepare_data(str(data), None, val_fraction=0.25, seed=3)
    again = prepare_data(str(data), str(data), val_fraction=0.25, seed=3)
    other = prepare_data(str(data), None, val_fraction=0.25, seed=4)
    assert first.split_from_train and len(first.val) == 3 and len(first.train) == 9
    assert {p.id for p in first.train}.isdisjoint({p.id for p in first.val})
    assert [p.id for p in first.val] == [p.id for p in again.val]
    assert [p.id for p in first.val] != [p.id for p in other.val]
    problems = load_dataset(str(data)).problems
    with pytest.raises(ValueError):
        split_problems(problems, 1.5, 0)


def test_the_rejected_set_beside_synthesized_data_joins_training_on_request(tmp_path: Path) -> None:
    accepted = user_file(tmp_path / "data.jsonl", [f"Accepted problem {i}: maximize x." for i in range(3)])
    user_file(tmp_path / "data.rejected.jsonl", [f"Hard problem {i}: maximize y." for i in range(5)])
    alone = prepare_data(str(accepted), None, val_fraction=0.25)
    both = prepare_data(str(tmp_path), None, val_fraction=0.25, with_rejected=True)
    assert len(alone.train) + len(alone.val) == 3
    assert len(both.train) + len(both.val) == 8 and both.train_name.endswith("+rejected")
    assert both.train_checksum != alone.train_checksum
    (tmp_path / "data.rejected.jsonl").unlink()
    with pytest.raises(DatasetError, match=r"data\.rejected\.jsonl is missing"):
        prepare_data(str(accepted), None, with_rejected=True)


def test_public_test_sets_are_refused_unless_allowed(tmp_path: Path) -> None:
    with pytest.raises(TestSetError, match="nl4opt is a registered public benchmark"):
        prepare_data("nl4opt")
    allowed = prepare_data("nl4opt", val_limit=5, allow_test_set=True)
    assert any("--allow-test-set" in warning for warning in allowed.warnings)
    # a converted copy is caught by its questions, also when only used for validation
    copied = user_file(
        tmp_path / "copy.jsonl", [p.question for p in load_dataset("nl4opt", limit=3).problems]
    )
    mine = user_file(tmp_path / "mine.jsonl", [f"My own problem {i}." for i in range(4)])
    with pytest.raises(TestSetError, match="3 question\\(s\\) also in nl4opt"):
        prepare_data(str(mine), str(copied))
    # validation items that repeat a training question are dropped
    overlap = user_file(tmp_path / "overlap.jsonl", ["My own problem 0.", "Another one."])
    split = prepare_data(str(mine), str(overlap))
    assert [p.question for p in split.val] == ["Another one."] and split.dropped_overlap == 1


def test_optimizer_endpoint_defaults_to_the_agents(monkeypatch: pytest.MonkeyPatch) -> None:
    agent = LLMConfig(base_url="http://127.0.0.1:8011/v1", model="small", cache_scope="embedded:small")
    for name in ("OPTITRACE_OPTIMIZER_BASE_URL", "OPTITRACE_OPTIMIZER_MODEL", "OPTITRACE_OPTIMIZER_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    assert optimizer_llm_config(agent) == agent
    assert optimizer_llm_config(agent, model="bigger").model == "bigger"
    monkeypatch.setenv("OPTITRACE_OPTIMIZER_BASE_URL", "http://127.0.0.1:9000/v1")
    monkeypatch.setenv("OPTITRACE_OPTIMIZER_MODEL", "strong")
    other = optimizer_llm_config(agent)
    assert (other.base_url, other.model, other.cache_scope) == ("http://127.0.0.1:9000/v1", "strong", None)


# --- the CLI, as a real subprocess -------------------------------------------------------------------------
RUN_CLI = "import agent.cli.train_commands; from agent.cli import main; main()"


def cli_env(base_url: str, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("OPENAI_", "OPTITRACE_"))}
    env.update(
        OPENAI_BASE_URL=base_url,
        OPTITRACE_CONFIG=str(tmp_path / "no-config.toml"),
        PYTHONPATH=str(ROOT) + os.pathsep + env.get("PYTHONPATH", ""),
    )
    return env


def run_cli(args: list[str], env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", RUN_CLI, *args], capture_output=True, text=True, timeout=240, env=env, cwd=cwd
    )


def test_cli_trains_end_to_end_and_solve_loads_the_params(
    scripted_llm: ScriptedLLMServer, world: World, tmp_path: Path
) -> None:
    world.proposals = [propose_system_prompt(MAGIC, needs="Wrong objective")]
    train, val = world.write(tmp_path)
    env = cli_env(scripted_llm.base_url, tmp_path)
    done = run_cli(
        [
            "train",
            "--train",
            str(train),
            "--val",
            str(val),
            "--batch",
            "4",
            "--out",
            "trained.json",
            "--log-dir",
            "logs",
            "--no-cache",
            "--json",
        ],
        env,
        tmp_path,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["baseline_val_accuracy"] == 0.5 and report["best_val_accuracy"] == 1.0
    assert "step 1 (accepted)" in done.stderr
    assert json.loads((tmp_path / "trained.json").read_text())["parameters"]["system_prompt"].endswith(MAGIC)
    assert len((tmp_path / "logs" / "steps.jsonl").read_text().splitlines()) == 2
    assert (tmp_path / "logs" / "learning_curve.png").stat().st_size > 1000

    hard = world.items["val"][3]
    solved = run_cli(["solve", hard["question"], "--params", "trained.json", "--json"], env, tmp_path)
    assert solved.returncode == 0, solved.stderr
    assert json.loads(solved.stdout)["objective"] == pytest.approx(hard["answer"], rel=1e-9)

    refused = run_cli(["train", "--train", "nl4opt", "--out", "x.json"], env, tmp_path)
    assert refused.returncode == 2 and "public test set" in refused.stderr
    assert not (tmp_path / "x.json").exists()


def test_hints_are_short_dash_lessons_or_nothing(scripted_llm_client: LLMClient) -> None:
    guard = ParameterGuard(agent_validators(ModelingAgent(scripted_llm_client)))
    assert guard.problems("modeling_hints", "") == [] and guard.problems("modeling_hints", "- a\n- b") == []
    assert "starting with '- '" in guard.problems("modeling_hints", "- a\nb")[0]
    assert "keep the 6 most useful" in guard.problems("modeling_hints", "\n".join(["- x"] * 7))[0]
    assert "limit is 700" in guard.problems("modeling_hints", "- " + "x" * 800)[0]


def test_hints_in_another_layout_are_put_in_lessons_form() -> None:
    from agent.training.guards import as_lessons

    assert as_lessons("Read every limit.") == "- Read every limit."
    assert as_lessons("1. Read every limit.\n* Keep units.\n\n• Whole items are integer") == (
        "- Read every limit.\n- Keep units.\n- Whole items are integer"
    )
    assert as_lessons("- already fine") == "- already fine"


def test_a_rotating_optimizer_checkpoints_each_parts_memory_and_the_turn(
    scripted_llm_client: LLMClient,
) -> None:
    from agent.training.guards import GuardedLessons
    from agent.training.rotation import RotatingOptimizer
    from trace_graph.nodes import node

    def rotation() -> RotatingOptimizer:
        hints = node("", name="hints", trainable=True)
        other = node("", name="other_hints", trainable=True)
        return RotatingOptimizer(
            [GuardedLessons([hints], scripted_llm_client), GuardedLessons([other], scripted_llm_client)]
        )

    first = rotation()
    first.turn = 1
    first.parts[1].proposed.append("Check every sign.")
    restored = rotation()
    restored.load_memory_state(json.loads(json.dumps(first.memory_state())))
    assert restored.turn == 1 and restored.parts[1].was_proposed("check every sign")
    assert not restored.parts[0].proposed
