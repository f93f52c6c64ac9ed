"""ChatSession end to end: whole conversations against the scripted loopback LLM server (real HTTP,
the real openai client, real HiGHS solves). The responders read the prompt and answer the way a
model would; every number the tests check comes from the solver (or is computed by hand here)."""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import highspy
import pytest

from agent.answer import AnswerStatus
from agent.chat import ChatSession, EditError, apply_edits, model_diff
from agent.chat.edits import (
    AddConstraint,
    SetParameter,
    SetRhs,
    SetVariableBounds,
    constant_side,
    parse_direct_edit,
)
from agent.chat.intents import classify_by_rules
from agent.modeler import AgentOptions, ModelingAgent
from solvers.api import solve_formulation
from solvers.ir import Formulation
from trace_graph.llm.client import LLMClient
from trace_graph.llm.scripted_server import ChatRequest, ScriptedLLMServer, ScriptedReply

BAKERY = (
    "A bakery bakes bread and cakes. A loaf of bread uses 1 hour of oven time and a cake uses 2 hours; "
    "the oven is available 40 hours a week. At most 15 cakes can be sold per week. Each loaf earns $3 "
    "profit and each cake $5. How many loaves and cakes should it bake to maximize profit?"
)
BAKERY_DRAFT: dict[str, Any] = {
    "notes": "oven hours, 40 available: bread uses 1, cake uses 2. cakes sold at most 15. "
    "profit: bread 3, cake 5.",
    "variables": [
        {"name": "bread", "meaning": "loaves baked (loaves)", "type": "integer"},
        {"name": "cake", "meaning": "cakes baked (cakes)", "type": "integer"},
    ],
    "objective": {"sense": "maximize", "expression": "3*bread + 5*cake", "meaning": "weekly profit ($)"},
    "constraints": [
        {"name": "oven", "expression": "bread + 2*cake <= 40", "meaning": "oven hours used within 40"},
        {"name": "cake_demand", "expression": "cake <= 15", "meaning": "at most 15 cakes sell"},
    ],
    "missing_information": [],
}
FACILITY = (
    "Two plants, A and B, can serve a demand of 50 units. Opening plant A costs $100 and shipping "
    "from it $2 per unit; opening plant B costs $120 and shipping $1 per unit. Each open plant ships "
    "at most 60 units. Which plants should open to minimize the total cost?"
)
FACILITY_DRAFT: dict[str, Any] = {
    "notes": "demand 50. plant A: fixed 100, 2 per unit, capacity 60. plant B: fixed 120, 1 per unit, "
    "capacity 60.",
    "sets": [{"name": "Plants", "elements": ["A", "B"]}],
    "parameters": [
        {"name": "fixed", "index": ["Plants"], "value": {"A": 100, "B": 120}},
        {"name": "unit", "index": ["Plants"], "value": {"A": 2, "B": 1}},
        {"name": "cap", "index": ["Plants"], "value": {"A": 60, "B": 60}},
    ],
    "variables": [
        {"name": "open", "meaning": "plant is open", "index": ["Plants"], "type": "binary"},
        {
            "name": "ship",
            "meaning": "units shipped from the plant",
            "index": ["Plants"],
            "type": "continuous",
        },
    ],
    "objective": {
        "sense": "minimize",
        "expression": "sum(fixed[p]*open[p] + unit[p]*ship[p] for p in Plants)",
        "meaning": "total cost ($)",
    },
    "constraints": [
        {"name": "demand", "expression": "sum(ship[p] for p in Plants) >= 50", "meaning": "meet demand"},
        {
            "name": "capacity",
            "for_all": ["p in Plants"],
            "expression": "ship[p] <= cap[p]*open[p]",
            "meaning": "only open plants ship",
        },
    ],
    "missing_information": [],
}


def as_json(draft: dict[str, Any], **changes: Any) -> str:
    changed = copy.deepcopy(draft)
    changed.update(changes)
    return json.dumps(changed)


def continuous(draft: dict[str, Any]) -> dict[str, Any]:
    changed = copy.deepcopy(draft)
    for variable in changed["variables"]:
        variable["type"] = "continuous"
    return changed


def edits_json(*edits: dict[str, Any]) -> str:
    return json.dumps({"edits": list(edits)})


Rule = tuple[str, str | Callable[[ChatRequest], str]]


class PromptReader:
    """Answers by the prompt, like a model would: the first rule whose text occurs in the last user
    message wins. An unexpected prompt is an HTTP error, so a test never passes by accident."""

    def __init__(self) -> None:
        self.rules: list[Rule] = []

    def on(self, text: str, reply: str | Callable[[ChatRequest], str]) -> PromptReader:
        self.rules.insert(0, (text, reply))  # later rules refine earlier ones
        return self

    def __call__(self, request: ChatRequest) -> ScriptedReply | str:
        prompt = request.last_user_text
        for text, reply in self.rules:
            if text in prompt:
                return reply(request) if callable(reply) else reply
        return ScriptedReply.error(400, f"no rule for this prompt: {prompt[-300:]}")


@pytest.fixture
def llm(scripted_llm: ScriptedLLMServer) -> Iterator[LLMClient]:
    with LLMClient(scripted_llm.llm_config(), cache=False) as client:
        yield client


@pytest.fixture
def reader(scripted_llm: ScriptedLLMServer) -> PromptReader:
    responder = PromptReader()
    scripted_llm.responder = responder
    return responder


def session_for(llm: LLMClient, **options: Any) -> ChatSession:
    return ChatSession(ModelingAgent(llm, AgentOptions(**options)), llm)


def bakery_reader(reader: PromptReader, draft: dict[str, Any] | None = None) -> PromptReader:
    reader.on("Problem: " + BAKERY, as_json(draft or BAKERY_DRAFT))
    return reader


# --- a whole conversation -------------------------------------------------------------------------
def test_create_edit_what_if_undo_save_reload_and_continue(
    scripted_llm: ScriptedLLMServer, reader: PromptReader, llm: LLMClient, tmp_path: Path
) -> None:
    bakery_reader(reader)
    reader.on("Request: oven hours are now 50", edits_json({"op": "set_rhs", "name": "oven", "value": 50}))
    reader.on(
        "Request: what if the oven had 45 hours?", edits_json({"op": "set_rhs", "name": "oven", "value": 45})
    )
    session = session_for(llm)

    created = session.send(BAKERY)
    assert created.intent == "new_problem" and created.ok
    assert created.answer is not None and created.answer.objective == pytest.approx(120.0)  # 40 loaves * $3
    assert "120" in created.reply
    original = session.answer
    assert original is not None

    edited = session.send("oven hours are now 50")
    assert edited.intent == "edit" and edited.ok, edited.reply
    assert edited.edits == [SetRhs(name="oven", value=50)]
    assert edited.diff is not None
    assert "-  oven: bread + 2*cake <= 40    # oven hours used within 40" in edited.diff.lines
    # the description stated the old limit, so it follows the edit
    assert "+  oven: bread + 2*cake <= 50    # oven hours used within 50" in edited.diff.lines
    assert edited.answer is not None and edited.answer.objective == pytest.approx(150.0)  # 50 loaves
    assert "was 120, +30, +25%" in edited.reply
    edit_prompt = scripted_llm.requests[-1].last_user_text
    assert "oven: bread + 2*cake <= 40" in edit_prompt and "set_rhs" in edit_prompt
    assert session.undo_depth == 2

    asked = session.send("what if the oven had 45 hours?")
    assert asked.intent == "what_if" and asked.ok
    comparison = asked.comparison
    assert comparison is not None
    assert comparison.base_objective == pytest.approx(150.0)
    assert comparison.new_objective == pytest.approx(135.0)
    assert comparison.delta == pytest.approx(-15.0) and comparison.percent == pytest.approx(-10.0)
    assert [(c.variable, c.before, c.after) for c in comparison.changes] == [("bread", 50.0, 45.0)]
    assert session.answer is not None and session.answer.objective == pytest.approx(150.0)  # base kept
    assert session.formulation is not None
    assert session.formulation.constraint_named("oven").expression == "bread + 2*cake <= 50"
    assert session.undo_depth == 2

    undone = session.send("undo")
    assert undone.intent == "undo" and undone.ok
    assert session.answer == original  # exactly the model and result before the edit

    path = tmp_path / "bakery-session.json"
    assert session.send(f"/save {path}").ok
    reloaded = ChatSession.load(path, session.agent, llm)
    assert reloaded.answer == original
    assert [t.intent for t in reloaded.history] == ["new_problem", "edit", "what_if", "undo"]
    assert reloaded.undo_depth == session.undo_depth == 1

    more = reloaded.send("/set oven 60")  # no LLM call: the command says it exactly
    assert more.ok and more.answer is not None and more.answer.objective == pytest.approx(180.0)
    assert reloaded.send("/undo").ok
    assert reloaded.answer == original
    assert reloaded.send("/undo").ok and reloaded.answer is None  # back before the first model
    assert not reloaded.send("/undo").ok  # nothing left


def test_broken_llm_replies_mid_conversation_leave_the_session_intact(
    scripted_llm: ScriptedLLMServer, reader: PromptReader, llm: LLMClient
) -> None:
    bakery_reader(reader)
    reader.on("Request: make the oven bigger", "Sure! I would give the oven some more hours.")
    reader.on("Request: the oven has 50 hours", edits_json({"op": "set_rhs", "name": "oven", "value": 50}))
    session = session_for(llm)
    session.send(BAKERY)
    before = session.state.model_copy(deep=True)

    broken = session.send("make the oven bigger")
    assert not broken.ok and broken.intent == "edit"
    assert "could not be used" in broken.reply and "Nothing changed" in broken.reply
    assert session.state.current == before.current and session.state.undo == before.undo
    # the client re-asked once with the parse error before giving up
    assert "could not be used" in scripted_llm.requests[-1].last_user_text

    scripted_llm.add(ScriptedReply.error(400, "context window exceeded"))
    refused = session.send("the oven has 50 hours")
    assert not refused.ok and "context window exceeded" in refused.reply
    assert session.state.current == before.current

    fixed = session.send("the oven has 50 hours")
    assert fixed.ok and fixed.answer is not None and fixed.answer.objective == pytest.approx(150.0)
    assert [t.ok for t in session.history] == [True, False, False, True]


def test_an_edit_that_does_not_apply_goes_back_to_the_llm_once(
    scripted_llm: ScriptedLLMServer, reader: PromptReader, llm: LLMClient
) -> None:
    bakery_reader(reader)
    reader.on("Request: at least 10 cakes", edits_json({"op": "set_rhs", "name": "cake_min", "value": 10}))
    reader.on(
        "there is no constraint named 'cake_min'",
        edits_json(
            {"op": "add_constraint", "name": "cake_min", "expression": "cake >= 10", "meaning": "min"}
        ),
    )
    reader.on("Request: cakes are free", edits_json({"op": "remove_constraint", "name": "profit"}))
    session = session_for(llm)
    session.send(BAKERY)

    turn = session.send("at least 10 cakes")
    assert turn.ok, turn.reply
    assert turn.edits == [AddConstraint(name="cake_min", expression="cake >= 10", description="min")]
    assert turn.answer is not None and turn.answer.objective == pytest.approx(110.0)  # 20 loaves + 10 cakes
    feedback = scripted_llm.requests[-1]
    assert (
        feedback.messages[-2].role == "assistant"
        and "Constraints: oven, cake_demand" in feedback.last_user_text
    )

    depth = session.undo_depth
    stubborn = session.send("cakes are free")  # wrong twice: reported, nothing changes
    assert not stubborn.ok and "no constraint named 'profit'" in stubborn.reply
    assert session.undo_depth == depth and session.answer == turn.answer


def test_slash_commands_edit_without_the_llm(
    scripted_llm: ScriptedLLMServer, reader: PromptReader, llm: LLMClient
) -> None:
    bakery_reader(reader)
    session = session_for(llm)
    session.send(BAKERY)
    calls = scripted_llm.request_count

    added = session.send("/add min_cakes: cake >= 10")
    assert added.ok and added.answer is not None and added.answer.objective == pytest.approx(110.0)
    relaxed = session.send("/bounds bread 0 12")  # 12 loaves at most: 12 + 2*14 = 40 oven hours
    assert relaxed.ok and relaxed.answer is not None and relaxed.answer.objective == pytest.approx(36 + 70)
    assert session.send("/remove min_cakes").ok
    assert session.send("/domain cake continuous").ok
    flipped = session.send("/objective minimize 3*bread + 5*cake")
    assert flipped.ok and flipped.answer is not None and flipped.answer.objective == pytest.approx(0.0)
    assert scripted_llm.request_count == calls

    bad = session.send("/set ovn 50")
    assert not bad.ok and "Did you mean oven" in bad.reply
    unknown = session.send("/frobnicate")
    assert not unknown.ok and "Unknown command /frobnicate" in unknown.reply and "/whatif" in unknown.reply
    assert scripted_llm.request_count == calls


# --- repair, infeasibility and diagnosis ----------------------------------------------------------
def test_repair_after_an_infeasible_first_model(reader: PromptReader, llm: LLMClient) -> None:
    impossible = copy.deepcopy(BAKERY_DRAFT)
    impossible["constraints"].append({"name": "cake_min", "expression": "cake >= 25", "meaning": "misread"})
    bakery_reader(reader, impossible)
    session = session_for(llm, max_repairs=0)

    first = session.send(BAKERY)
    assert first.ok and first.answer is not None and first.answer.status == AnswerStatus.INFEASIBLE
    assert "infeasible" in first.reply and "diagnose" in first.reply

    diagnosis = session.send("why is it infeasible?")
    assert diagnosis.intent == "diagnose" and diagnosis.diagnosis is not None
    report = diagnosis.diagnosis
    assert report.infeasible and any(line.startswith("cake_min: cake >= 25") for line in report.conflict)
    assert report.fix == [SetRhs(name="cake_min", value=15)] and report.fix_objective == pytest.approx(105.0)
    assert "/set cake_min 15" in diagnosis.reply

    repaired = session.send("/set cake_min 15")  # the proposed relaxation, applied
    assert repaired.answer is not None and repaired.answer.status == AnswerStatus.OPTIMAL
    assert repaired.answer.objective == pytest.approx(105.0)  # 15 cakes + 10 loaves


def test_the_agent_repairs_an_infeasible_first_model_within_a_turn(
    scripted_llm: ScriptedLLMServer, reader: PromptReader, llm: LLMClient
) -> None:
    impossible = copy.deepcopy(BAKERY_DRAFT)
    impossible["constraints"].append({"name": "cake_min", "expression": "cake >= 25"})
    bakery_reader(reader, impossible)
    reader.on("Evidence:", as_json(BAKERY_DRAFT))  # the repair prompt carries the diagnosis
    session = session_for(llm)
    turn = session.send(BAKERY)
    assert turn.ok and turn.answer is not None and turn.answer.objective == pytest.approx(120.0)
    assert turn.answer.repair_rounds == 1 and "repair round" in turn.reply
    assert "cake_min" in scripted_llm.requests[1].last_user_text
    assert turn.usage.calls == 2


def test_diagnosis_of_an_edit_that_makes_the_model_infeasible(reader: PromptReader, llm: LLMClient) -> None:
    bakery_reader(reader)
    reader.on(
        "Request: we must bake at least 30 cakes",
        edits_json({"op": "add_constraint", "name": "min_cakes", "expression": "cake >= 30"}),
    )
    session = session_for(llm)
    base = session.send(BAKERY).answer

    turn = session.send("we must bake at least 30 cakes")
    assert turn.ok and turn.answer is not None and turn.answer.status == AnswerStatus.INFEASIBLE
    assert "infeasible" in turn.reply and "min_cakes" in turn.reply

    diagnosis = session.send("/diagnose")
    report = diagnosis.diagnosis
    assert report is not None and report.infeasible and len(report.conflict) >= 2
    assert any(line.startswith("min_cakes: cake >= 30") for line in report.conflict)
    # 15 cakes sell at most: lowering the minimum by 15 is the smallest total relaxation
    assert report.fix == [SetRhs(name="min_cakes", value=15)]
    assert report.fix_objective == pytest.approx(105.0)

    assert session.send("undo").ok and session.answer == base
    feasible = session.send("/diagnose")
    assert feasible.diagnosis is not None and not feasible.diagnosis.infeasible
    assert "not infeasible" in feasible.reply


# --- why not, sensitivity --------------------------------------------------------------------------
def test_why_not_forces_a_closed_facility_open_and_prices_it(
    scripted_llm: ScriptedLLMServer, reader: PromptReader, llm: LLMClient
) -> None:
    reader.on("Problem: " + FACILITY, as_json(FACILITY_DRAFT))

    def pick(request: ChatRequest) -> str:
        assert "open[A] = 0  (plant is open (A))" in request.last_user_text
        return json.dumps({"variable": "open[A]", "value": None})

    reader.on("Question: why is plant A closed?", pick)
    session = session_for(llm)
    created = session.send(FACILITY)
    # B alone: 120 + 50 * $1 = 170; A alone would cost 100 + 50 * $2 = 200
    assert created.answer is not None and created.answer.objective == pytest.approx(170.0)
    assert created.answer.solve is not None and created.answer.solve.values["open[A]"] == pytest.approx(0.0)
    base = session.answer

    turn = session.send("why is plant A closed?")
    assert turn.intent == "why_not" and turn.ok, turn.reply
    comparison = turn.comparison
    assert comparison is not None and comparison.kind == "why_not"
    # with A forced open, B closes: 100 + 50 * $2 = 200
    assert comparison.new_objective == pytest.approx(200.0)
    assert comparison.delta == pytest.approx(30.0)
    assert "open['A'] == 1" in turn.reply and "cost 30" in turn.reply
    assert [(c.variable, c.after) for c in comparison.changes] == [
        ("open[A]", 1.0),
        ("open[B]", 0.0),
        ("ship[A]", 50.0),
        ("ship[B]", 0.0),
    ]
    assert session.answer == base

    calls = scripted_llm.request_count
    direct = session.send("/whynot ship[A] 70")  # more than plant A can ship
    assert direct.comparison is not None and direct.comparison.new_status == "infeasible"
    assert "impossible" in direct.reply and "capacity[A]" in direct.reply
    named = session.send("why is open[A] 0?")  # the decision is named: no LLM needed
    assert named.comparison is not None and named.comparison.new_objective == pytest.approx(200.0)
    assert scripted_llm.request_count == calls


def test_why_not_with_a_minimum_on_a_zero_decision(reader: PromptReader, llm: LLMClient) -> None:
    bakery_reader(reader, continuous(BAKERY_DRAFT))
    reader.on("Question: why don't we bake any cakes?", json.dumps({"variable": "cake", "value": None}))
    session = session_for(llm)
    session.send(BAKERY)
    turn = session.send("why don't we bake any cakes?")
    assert turn.comparison is not None
    # one cake takes 2 oven hours = 2 loaves: +5 - 6 = -1
    assert turn.comparison.new_objective == pytest.approx(119.0)
    assert "cake >= 1" in turn.reply and "cost 1" in turn.reply


def test_sensitivity_names_binding_constraints_duals_and_reduced_costs(
    reader: PromptReader, llm: LLMClient
) -> None:
    bakery_reader(reader, continuous(BAKERY_DRAFT))
    session = session_for(llm)
    session.send(BAKERY)
    turn = session.send("what is an extra oven hour worth?")
    assert turn.intent == "sensitivity" and turn.ok
    report = turn.sensitivity
    assert report is not None and report.available
    by_name = {c.name: c for c in report.constraints}
    assert (
        by_name["oven"].binding and by_name["oven"].dual == pytest.approx(3.0) and by_name["oven"].limit == 40
    )
    assert not by_name["cake_demand"].binding and by_name["cake_demand"].slack == pytest.approx(15.0)
    assert [(v.name, v.reduced_cost) for v in report.variables] == [("cake", pytest.approx(-1.0))]
    assert "oven (oven hours used within 40) is binding" in turn.reply
    assert "raises weekly profit ($) by 3 (dual 3)" in turn.reply
    assert "cake_demand (slack 15)" in turn.reply
    assert "lowers weekly profit ($) by 1 (reduced cost -1)" in turn.reply

    # the dual is what one more oven hour really brings
    one_more = session.send("/whatif oven 41").comparison
    assert one_more is not None and one_more.delta == pytest.approx(by_name["oven"].dual)


def test_sensitivity_of_an_integer_model_offers_what_if_instead(reader: PromptReader, llm: LLMClient) -> None:
    bakery_reader(reader)
    session = session_for(llm)
    session.send(BAKERY)
    turn = session.send("/sensitivity")
    assert not turn.ok and turn.sensitivity is not None and not turn.sensitivity.available
    assert "not available" in turn.reply and "bread, cake" in turn.reply and "/whatif" in turn.reply


# --- intents, clarification -------------------------------------------------------------------------
def test_a_long_message_is_classified_by_the_llm_and_a_new_problem_replaces_the_model(
    scripted_llm: ScriptedLLMServer, reader: PromptReader, llm: LLMClient
) -> None:
    bakery_reader(reader)
    reader.on("Problem: " + FACILITY, as_json(FACILITY_DRAFT))
    reader.on("Message: " + FACILITY, json.dumps({"intent": "new_problem"}))
    session = session_for(llm)
    bakery = session.send(BAKERY).answer
    turn = session.send(FACILITY)
    assert any("Categories:" in r.last_user_text for r in scripted_llm.requests)
    assert turn.intent == "new_problem" and turn.answer is not None
    assert turn.answer.objective == pytest.approx(170.0)
    assert session.send("undo").ok and session.answer == bakery


def test_clarifying_questions_are_asked_and_the_answer_completes_the_problem(
    reader: PromptReader, llm: LLMClient
) -> None:
    vague = "A bakery bakes bread and cakes for profit: $3 a loaf, $5 a cake. How many of each?"
    lacking = as_json(BAKERY_DRAFT, missing_information=["How many oven hours are available per week?"])
    reader.on("Problem: " + vague, lacking)
    reader.on("The oven has 40 hours and at most 15 cakes sell.", as_json(BAKERY_DRAFT))
    session = session_for(llm, interactive=True)
    asked = session.send(vague)
    assert asked.ok and "How many oven hours" in asked.reply and session.answer is None
    answered = session.send("The oven has 40 hours and at most 15 cakes sell.")
    assert answered.intent == "new_problem" and answered.answer is not None
    assert answered.answer.objective == pytest.approx(120.0)
    assert session.current.problem.startswith(vague) and session.state.pending_problem is None


def test_rules_classify_clear_phrasings_without_the_llm() -> None:
    cases = {
        "undo": "undo",
        "what if demand is 30?": "what_if",
        "why is plant B closed?": "why_not",
        "why don't we make any chairs?": "why_not",
        "why is cake 15?": "explain",
        "why is the model infeasible?": "diagnose",
        "how much is an extra oven hour worth?": "sensitivity",
        "show the model": "show",
        "save the session to s.json": "save",
        "export it to model.lp": "export",
        "oven hours are now 50": "edit",
        "open plant B": "edit",
    }
    for text, kind in cases.items():
        intent = classify_by_rules(text, has_model=True)
        assert intent is not None and intent.kind == kind, text
    assert classify_by_rules("A farm grows wheat.", has_model=False).kind == "new_problem"  # type: ignore[union-attr]
    long_text = " ".join(["word"] * 30)
    assert classify_by_rules(long_text, has_model=True) is None  # only an LLM can tell


def test_a_dead_endpoint_is_a_clear_turn_and_loses_nothing(reader: PromptReader, llm: LLMClient) -> None:
    bakery_reader(reader)
    session = session_for(llm)
    session.send(BAKERY)
    before = session.state.current.model_copy(deep=True)
    with ScriptedLLMServer() as server:
        dead_url = server.base_url
    dead = LLMClient(llm.config.model_copy(update={"base_url": dead_url, "retry_deadline": 0.2}), cache=False)
    with dead:
        cut_off = ChatSession(session.agent, dead, record=session.state)
        turn = cut_off.send("the oven has 50 hours")
    assert not turn.ok and "cannot be reached" in turn.reply
    assert session.state.current == before


# --- export ---------------------------------------------------------------------------------------
def _run_script(path: Path) -> dict[str, str]:
    """Run an exported script in a fresh interpreter; its "key: value" / "name = value" lines."""
    done = subprocess.run([sys.executable, str(path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    printed: dict[str, str] = {}
    for line in done.stdout.splitlines():
        key, sep, value = line.partition(": ")
        if not sep:
            key, sep, value = line.partition(" = ")
        if sep:
            printed[key.strip()] = value.strip()
    return printed


@pytest.mark.parametrize("problem, draft", [(BAKERY, BAKERY_DRAFT), (FACILITY, FACILITY_DRAFT)])
def test_exported_pyomo_script_runs_and_prints_the_same_optimum(
    reader: PromptReader, llm: LLMClient, tmp_path: Path, problem: str, draft: dict[str, Any]
) -> None:
    reader.on("Problem: " + problem, as_json(draft))
    session = session_for(llm)
    answer = session.send(problem).answer
    assert answer is not None and answer.solve is not None
    script = tmp_path / "model.py"
    turn = session.send(f"/export {script}")
    assert turn.ok and turn.files == [str(script)]
    assert "import optitrace" not in script.read_text() and "pickle" not in script.read_text()
    printed = _run_script(script)
    assert printed["status"] == "optimal"
    assert float(printed["objective"]) == pytest.approx(answer.objective)
    for key, value in answer.solve.values.items():
        assert float(printed[key]) == pytest.approx(value, abs=1e-6)


def test_exported_lp_file_solves_to_the_same_optimum(
    reader: PromptReader, llm: LLMClient, tmp_path: Path
) -> None:
    bakery_reader(reader)
    session = session_for(llm)
    session.send(BAKERY)
    session.send("/set oven 50")
    path = tmp_path / "bakery.lp"
    assert session.send(f"export the model to {path}").ok
    text = path.read_text()
    assert "oven" in text and "cake_demand" in text
    highs = highspy.Highs()
    highs.setOptionValue("output_flag", False)
    highs.readModel(str(path))
    highs.run()
    assert highs.getInfo().objective_function_value == pytest.approx(150.0)


def test_export_and_load_errors_are_turns_not_crashes(
    reader: PromptReader, llm: LLMClient, tmp_path: Path
) -> None:
    session = session_for(llm)
    assert "no model yet" in session.send(f"/export {tmp_path / 'm.py'}").reply
    bakery_reader(reader)
    session.send(BAKERY)
    assert "use a .py" in session.send(f"/export {tmp_path / 'm.txt'}").reply
    before = session.state.model_copy(deep=True)
    garbage = tmp_path / "garbage.json"
    garbage.write_text("{not json")
    assert "not JSON" in session.send(f"/load {garbage}").reply
    foreign = tmp_path / "foreign.json"
    foreign.write_text(json.dumps({"hello": 1}))
    assert "not an OptiTrace chat session" in session.send(f"/load {foreign}").reply
    assert "cannot read" in session.send(f"/load {tmp_path / 'missing.json'}").reply
    assert session.state.current == before.current and session.state.undo == before.undo


# --- the edit language, deterministic ---------------------------------------------------------------
def facility_formulation() -> Formulation:
    from agent.draft import FormulationDraft, draft_to_formulation

    return draft_to_formulation(FormulationDraft.model_validate(FACILITY_DRAFT))


def test_edits_apply_to_a_copy_and_diff_shows_table_entries() -> None:
    f = facility_formulation()
    edited = apply_edits(
        f,
        [
            SetParameter(name="unit", index=["A"], value=0.5),
            SetVariableBounds(name="ship", lower=0, upper=55),
        ],
    )
    assert f.parameter_named("unit").value == {"A": 2, "B": 1}  # type: ignore[union-attr]
    assert edited.parameter_named("unit").value == {"A": 0.5, "B": 1}  # type: ignore[union-attr]
    diff = model_diff(f, edited, [])
    assert "-  unit[A] = 2" in diff.lines and "+  unit[A] = 0.5" in diff.lines
    assert any(line.startswith("+  ship[Plants] in [0, 55]") for line in diff.lines)
    result = solve_formulation(edited)
    assert result.objective == pytest.approx(100 + 0.5 * 50)  # A is now the cheaper plant


def test_edit_errors_list_every_problem() -> None:
    f = facility_formulation()
    with pytest.raises(EditError) as caught:
        apply_edits(
            f,
            [
                SetParameter(name="unit", index=["C"], value=1),
                SetRhs(name="capacity", value=10),
                AddConstraint(name="extra", expression="ship[A] + nothing <= 3"),
            ],
        )
    problems = "\n".join(caught.value.problems)
    assert "'C' is not an element of Plants" in problems
    assert "no single number as its limit" in problems
    assert len(caught.value.problems) == 2  # expressions are compiled once the names are right
    with pytest.raises(EditError, match="not defined"):
        apply_edits(f, [AddConstraint(name="extra", expression="ship['A'] + nothing <= 3")])


def test_constant_side_and_direct_parsing() -> None:
    found = constant_side("40 >= bread + 2*cake")
    assert found is not None and found.value == 40 and found.side == "left"
    assert constant_side("a <= b <= 3") is None and constant_side("x <= cap") is None
    f = facility_formulation()
    assert parse_direct_edit("set", "unit[B] 3", f) == [SetParameter(name="unit", index=["B"], value=3)]
    assert parse_direct_edit("bounds", "ship 0 none", f) == [
        SetVariableBounds(name="ship", lower=0, upper=None)
    ]
    with pytest.raises(EditError, match="/add NAME: EXPRESSION"):
        parse_direct_edit("add", "no colon here", f)
