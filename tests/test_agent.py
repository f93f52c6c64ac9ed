"""The modeling agent end to end against the scripted loopback LLM server (real HTTP, real openai
client, real solvers): formulation, repair on each kind of failure, voting, code mode, data
tables, usage accounting, parameters on disk and the trace graph."""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from agent import prompts
from agent.answer import AnswerStatus
from agent.data_tables import load_table
from agent.modeler import AgentOptions, Candidate, ModelingAgent
from agent.steps import Solved
from solvers.result import CheckReport, SolveResult, SolveStatus, Violation
from trace_graph.llm.client import LLMClient, LLMUnavailableError
from trace_graph.llm.scripted_server import ChatRequest, ScriptedLLMServer, ScriptedReply
from trace_graph.nodes import ExceptionNode

BAKERY = (
    "A bakery bakes bread and cakes. A loaf of bread uses 1 hour of oven time and a cake uses 2 hours; "
    "the oven is available 40 hours a week. At most 15 cakes can be sold per week. Each loaf earns $3 "
    "profit and each cake $5. How many loaves and cakes should it bake to maximize profit?"
)
GOOD: dict[str, Any] = {
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


def variant(**changes: Any) -> str:
    """GOOD with some top-level fields replaced, as the JSON text an LLM would send."""
    draft = copy.deepcopy(GOOD)
    draft.update(changes)
    return json.dumps(draft)


def with_constraint(name: str, expression: str, meaning: str = "") -> str:
    extra = {"name": name, "expression": expression, "meaning": meaning}
    return variant(constraints=[*GOOD["constraints"], extra])


GOOD_JSON = json.dumps(GOOD)


@pytest.fixture
def client(scripted_llm: ScriptedLLMServer) -> Iterator[LLMClient]:
    with LLMClient(scripted_llm.llm_config(), cache=False) as llm:
        yield llm


def agent_for(client: LLMClient, **options: Any) -> ModelingAgent:
    return ModelingAgent(client, AgentOptions(**options))


# --- formulation and the answer ------------------------------------------------------------------
def test_oneshot_bakery_is_solved_verified_and_explained(
    scripted_llm: ScriptedLLMServer, client: LLMClient
) -> None:
    scripted_llm.add(GOOD_JSON)
    answer = agent_for(client, mode="oneshot").solve(BAKERY)
    assert answer.status == AnswerStatus.OPTIMAL
    assert answer.objective == pytest.approx(120.0)
    assert answer.sense == "maximize" and answer.mode == "oneshot"
    assert answer.check is not None and answer.check.ok
    assert {d.variable: d.value for d in answer.decisions} == {"bread": 40.0, "cake": 0.0}
    assert answer.decisions[0].meaning == "loaves baked (loaves)"
    assert answer.binding_constraints == ["oven"]
    assert "oven: bread + 2*cake <= 40" in answer.model_math
    assert "120" in answer.explanation and "independent check" in answer.explanation
    assert answer.repair_rounds == 0 and [a.outcome for a in answer.attempts] == ["ok"]
    assert answer.formulation is not None and answer.formulation.notes.startswith("oven hours")
    # what was asked: the schema (notes first), the worked example, then the problem
    request = scripted_llm.requests[0]
    assert request.temperature == 0.0
    assert request.response_format is not None
    schema = request.response_format["json_schema"]["schema"]
    assert next(iter(schema["properties"])) == "notes"
    assert "Example:" in request.last_user_text and request.last_user_text.rstrip().endswith(
        BAKERY + "\nJSON:"
    )


def test_oneshot_does_not_repair(scripted_llm: ScriptedLLMServer, client: LLMClient) -> None:
    scripted_llm.add(with_constraint("min_bread", "bread >= 50"))
    answer = agent_for(client, mode="oneshot").solve(BAKERY)
    assert answer.status == AnswerStatus.INFEASIBLE
    assert scripted_llm.request_count == 1 and answer.repair_rounds == 0
    assert answer.confidence == "low" and "infeasible" in (answer.error or "")


def test_broken_json_is_re_asked_by_the_client(scripted_llm: ScriptedLLMServer, client: LLMClient) -> None:
    scripted_llm.add('{"notes": "oven 40", "variables": [', GOOD_JSON)
    answer = agent_for(client).solve(BAKERY)
    assert answer.status == AnswerStatus.OPTIMAL and answer.objective == pytest.approx(120.0)
    assert answer.usage.calls == 2 and answer.repair_rounds == 0


def test_unreadable_replies_are_repaired_with_the_error(
    scripted_llm: ScriptedLLMServer, client: LLMClient
) -> None:
    scripted_llm.add("I think you should bake bread.", "Still no JSON, sorry.", GOOD_JSON)
    answer = agent_for(client).solve(BAKERY)
    assert answer.status == AnswerStatus.OPTIMAL
    assert answer.repair_rounds == 1
    assert answer.attempts[0].stage == "formulate" and answer.attempts[0].outcome == "unreadable reply"
    repair_prompt = scripted_llm.requests[2].last_user_text
    assert "Still no JSON, sorry." in repair_prompt and "could not be read" in repair_prompt


def test_infeasible_model_is_repaired_with_the_diagnosis(
    scripted_llm: ScriptedLLMServer, client: LLMClient
) -> None:
    scripted_llm.add(with_constraint("min_bread", "bread >= 50", "at least 50 loaves"), GOOD_JSON)
    answer = agent_for(client).solve(BAKERY)
    assert answer.status == AnswerStatus.OPTIMAL and answer.objective == pytest.approx(120.0)
    assert [a.outcome for a in answer.attempts] == ["infeasible", "ok"]
    repair_prompt = scripted_llm.requests[1].last_user_text
    evidence = repair_prompt.split("Evidence:", 1)[1]
    # the diagnosis names the conflicting constraints, and the repair prompt carries them
    assert "min_bread" in evidence and "oven" in evidence and "infeasible" in evidence
    assert '"bread >= 50"' in repair_prompt  # the previous JSON is shown
    assert scripted_llm.requests[1].temperature == pytest.approx(0.3)


def test_build_error_is_repaired_with_the_names_that_exist(
    scripted_llm: ScriptedLLMServer, client: LLMClient
) -> None:
    objective = {"sense": "maximize", "expression": "3*bread + 5*cakes", "meaning": "profit"}
    scripted_llm.add(variant(objective=objective), GOOD_JSON)
    answer = agent_for(client).solve(BAKERY)
    assert answer.status == AnswerStatus.OPTIMAL
    assert answer.attempts[0].stage == "build" and answer.attempts[0].outcome == "build error"
    evidence = scripted_llm.requests[1].last_user_text.split("Evidence:", 1)[1]
    assert "cakes" in evidence and "Names that exist: bread, cake" in evidence


def test_invalid_names_in_the_draft_are_repaired(scripted_llm: ScriptedLLMServer, client: LLMClient) -> None:
    # "loaves of bread" would be tidied into loaves_of_bread; a leading digit has no safe reading
    variables = [{"name": "2 loaves"}, {"name": "cake"}]
    scripted_llm.add(variant(variables=variables), GOOD_JSON)
    answer = agent_for(client).solve(BAKERY)
    assert answer.status == AnswerStatus.OPTIMAL
    assert answer.attempts[0].outcome == "invalid model"
    assert "not an identifier" in answer.attempts[0].feedback


def test_unbounded_model_is_repaired(scripted_llm: ScriptedLLMServer, client: LLMClient) -> None:
    constraints = [{"name": "oven", "expression": "bread + 2*cake >= 40"}]
    scripted_llm.add(variant(constraints=constraints), GOOD_JSON)
    answer = agent_for(client).solve(BAKERY)
    assert answer.status == AnswerStatus.OPTIMAL
    assert answer.attempts[0].outcome in ("unbounded", "infeasible_or_unbounded")
    assert "without limit" in answer.attempts[0].feedback


def test_sanity_rules_reject_a_do_nothing_plan(scripted_llm: ScriptedLLMServer, client: LLMClient) -> None:
    constraints = [{"name": "oven", "expression": "bread + 2*cake <= 0", "meaning": "oven hours"}]
    scripted_llm.add(variant(constraints=constraints), GOOD_JSON)
    answer = agent_for(client).solve(BAKERY)
    assert answer.status == AnswerStatus.OPTIMAL and answer.objective == pytest.approx(120.0)
    assert answer.attempts[0].stage == "sanity" and answer.attempts[0].outcome == "sanity rejected"
    assert "does nothing" in scripted_llm.requests[1].last_user_text


def test_a_persistent_sanity_objection_keeps_the_answer_with_low_confidence(
    scripted_llm: ScriptedLLMServer, client: LLMClient
) -> None:
    zero = variant(constraints=[{"name": "oven", "expression": "bread + 2*cake <= 0"}])
    scripted_llm.add(zero, zero)
    answer = agent_for(client, max_repairs=1).solve(BAKERY)
    assert answer.status == AnswerStatus.OPTIMAL and answer.objective == pytest.approx(0.0)
    assert answer.confidence == "low"
    assert any("sanity rejected" in note for note in answer.assumptions)


def test_assess_turns_verification_violations_into_feedback(client: LLMClient) -> None:
    agent = agent_for(client)
    candidate = Candidate(round=0, style="ir")
    solved = Solved(
        stage="solve",
        outcome="optimal",
        solve=SolveResult(status=SolveStatus.OPTIMAL, objective=1.0, values={"x": 1.5}),
    )
    report = CheckReport(
        ok=False,
        tolerance=1e-6,
        violations=[Violation(kind="integrality", name="x", amount=0.5, message="x = 1.5 is not integer")],
    )
    evaluation = agent.assess(candidate, solved, report, []).value
    assert evaluation.stage == "verify" and not evaluation.accepted and evaluation.usable
    assert "x = 1.5 is not integer" in evaluation.feedback


def test_max_repairs_exhausted_is_an_error_with_every_attempt(
    scripted_llm: ScriptedLLMServer, client: LLMClient
) -> None:
    scripted_llm.responder = lambda request: "no json here"
    answer = agent_for(client, max_repairs=2).solve(BAKERY)
    assert answer.status == AnswerStatus.ERROR
    assert answer.repair_rounds == 2 and len(answer.attempts) == 3
    assert all(a.outcome == "unreadable reply" for a in answer.attempts)
    assert "could not be read" in (answer.error or "")
    assert scripted_llm.request_count == 6  # each round: the request and the client's one re-ask
    assert answer.usage.calls == 6


# --- clarifying questions --------------------------------------------------------------------------
def test_missing_data_asks_when_interactive(scripted_llm: ScriptedLLMServer, client: LLMClient) -> None:
    scripted_llm.add(variant(missing_information=["the profit per cake"]))
    answer = agent_for(client, interactive=True).solve("A bakery bakes bread and cakes. Maximize profit.")
    assert answer.status == AnswerStatus.NEEDS_CLARIFICATION
    assert answer.clarifying_questions == ["Please provide: the profit per cake."]
    assert scripted_llm.request_count == 1


def test_missing_data_becomes_an_assumption_when_not_interactive(
    scripted_llm: ScriptedLLMServer, client: LLMClient
) -> None:
    scripted_llm.add(variant(missing_information=["the profit per cake"]))
    answer = agent_for(client).solve(BAKERY)
    assert answer.status == AnswerStatus.OPTIMAL
    assert answer.assumptions == ["Not stated in the problem: the profit per cake (a value was assumed)"]


# --- self-consistency --------------------------------------------------------------------------------
def test_samples_that_agree_give_high_confidence(scripted_llm: ScriptedLLMServer, client: LLMClient) -> None:
    scripted_llm.add(GOOD_JSON, GOOD_JSON, GOOD_JSON)
    answer = agent_for(client, samples=3).solve(BAKERY)
    assert answer.status == AnswerStatus.OPTIMAL and answer.objective == pytest.approx(120.0)
    assert answer.votes == [120.0, 120.0, 120.0] and answer.confidence == "high"
    assert all(r.temperature == pytest.approx(0.7) for r in scripted_llm.requests)


def test_samples_that_disagree_are_reported_as_low_confidence(
    scripted_llm: ScriptedLLMServer, client: LLMClient
) -> None:
    cheaper = {"sense": "maximize", "expression": "3*bread + 4*cake", "meaning": "profit"}
    tighter = [{"name": "oven", "expression": "bread + 2*cake <= 30"}]
    scripted_llm.add(GOOD_JSON, variant(objective=cheaper, constraints=tighter))
    answer = agent_for(client, samples=2).solve(BAKERY)
    assert sorted(answer.votes) == [90.0, 120.0]
    assert answer.confidence == "low"
    assert any("Samples disagree" in note for note in answer.assumptions)


def test_a_majority_wins_with_medium_confidence(scripted_llm: ScriptedLLMServer, client: LLMClient) -> None:
    wrong = variant(constraints=[{"name": "oven", "expression": "bread + 2*cake <= 30"}])
    scripted_llm.add(wrong, GOOD_JSON, GOOD_JSON)
    answer = agent_for(client, samples=3, mode="oneshot").solve(BAKERY)
    assert answer.objective == pytest.approx(120.0) and answer.confidence == "medium"
    assert sorted(answer.votes) == [90.0, 120.0, 120.0]


# --- code style --------------------------------------------------------------------------------------
PROGRAM = """Here is the model:
```python
import pyomo.environ as pyo


def build_model():
    m = pyo.ConcreteModel()
    m.bread = pyo.Var(domain=pyo.NonNegativeIntegers)
    m.cake = pyo.Var(domain=pyo.NonNegativeIntegers)
    m.profit = pyo.Objective(expr=3 * m.bread + 5 * m.cake, sense=pyo.maximize)
    m.oven = pyo.Constraint(expr=m.bread + 2 * m.cake <= 40)
    m.cake_demand = pyo.Constraint(expr=m.cake <= 15)
    return m
```"""


def test_code_style_runs_the_program_in_the_sandbox_and_repairs_a_crash(
    scripted_llm: ScriptedLLMServer, client: LLMClient
) -> None:
    crashing = PROGRAM.replace("m.cake <= 15", "m.cakes <= 15")
    scripted_llm.add(crashing, PROGRAM)
    answer = agent_for(client, style="code").solve(BAKERY)
    assert answer.status == AnswerStatus.OPTIMAL and answer.objective == pytest.approx(120.0)
    assert answer.style == "code" and answer.code is not None and "def build_model" in answer.code
    assert answer.sense == "maximize"
    assert answer.attempts[0].stage == "build" and answer.attempts[0].outcome == "runtime error"
    assert "cakes" in scripted_llm.requests[1].last_user_text.split("Evidence:", 1)[1]
    assert scripted_llm.requests[0].response_format is None  # code is asked as plain text


# --- data tables -------------------------------------------------------------------------------------
def test_data_tables_are_described_not_pasted_and_fill_the_parameters(
    scripted_llm: ScriptedLLMServer, client: LLMClient, tmp_path: Path
) -> None:
    rows = [(f"feed{n}", 1 + n % 7, 5 + n % 11) for n in range(40)]
    path = tmp_path / "feeds.csv"
    path.write_text(
        "feed,cost,protein\n" + "".join(f"{name},{cost},{protein}\n" for name, cost, protein in rows)
    )
    draft = {
        "notes": "protein per kg of each feed and cost per kg are in the feeds table; need 100 protein",
        "sets": [{"name": "Feeds", "from_table": "feeds.feed"}],
        "parameters": [
            {"name": "cost", "index": ["Feeds"], "from_table": "feeds.cost", "key_columns": ["feed"]},
            {"name": "protein", "index": ["Feeds"], "from_table": "feeds.protein", "key_columns": ["feed"]},
        ],
        "variables": [{"name": "kg", "index": ["Feeds"], "meaning": "kg of feed used"}],
        "objective": {"sense": "minimize", "expression": "sum(cost[f] * kg[f] for f in Feeds)"},
        "constraints": [
            {"name": "protein_need", "expression": "sum(protein[f] * kg[f] for f in Feeds) >= 100"}
        ],
    }
    scripted_llm.add(json.dumps(draft))
    question = "Mix feeds to get at least 100 units of protein at the lowest cost. Feed data is attached."
    answer = agent_for(client).solve(question, tables=[load_table(path)])
    assert answer.status == AnswerStatus.OPTIMAL
    assert answer.objective == pytest.approx(100 * min(cost / protein for _, cost, protein in rows))
    prompt = scripted_llm.requests[0].last_user_text
    assert "Table feeds: 40 rows x 3 columns" in prompt and "from_table" in prompt
    assert "feed2," in prompt and "feed20," not in prompt  # a few sample rows, not the table
    assert answer.binding_constraints == ["protein_need"]


def test_a_wrong_column_is_repaired(
    scripted_llm: ScriptedLLMServer, client: LLMClient, tmp_path: Path
) -> None:
    path = tmp_path / "limits.csv"
    path.write_text("resource,available\noven,40\n")
    parameters = [{"name": "oven_hours", "from_table": "limits.hours"}]
    constraints = [{"name": "oven", "expression": "bread + 2*cake <= oven_hours"}, GOOD["constraints"][1]]
    fixed = [{"name": "oven_hours", "from_table": "limits.available"}]
    scripted_llm.add(
        variant(parameters=parameters, constraints=constraints),
        variant(parameters=fixed, constraints=constraints),
    )
    answer = agent_for(client).solve(BAKERY, tables=[load_table(path)])
    assert answer.status == AnswerStatus.OPTIMAL and answer.objective == pytest.approx(120.0)
    assert "no column 'hours' (columns: resource, available)" in answer.attempts[0].feedback


# --- problems with tables of numbers in the text -------------------------------------------------------
GRAIN = (
    "A cooperative moves grain from four farms (Ash, Birch, Cedar, Dale) to three mills (East, North, "
    "West), and at most 100 tonnes move in total. The farms can supply at most Ash 30, Birch 40, Cedar "
    "20 and Dale 10 tonnes. The mills need East 25, North 35 and West 30 tonnes. Cost per tonne ($): "
    "Ash: East 2, North 4, West 5; Birch: East 3, North 1, West 6; Cedar: East 5, North 6, West 2; "
    "Dale: East 4, North 3, West 1. What is the least total cost?"
)
FARMS, MILLS = ["Ash", "Birch", "Cedar", "Dale"], ["East", "North", "West"]
GRAIN_COSTS = [[2, 4, 5], [3, 1, 6], [5, 6, 2], [4, 3, 1]]
GRAIN_DRAFT: dict[str, Any] = {
    "notes": "farms Ash, Birch, Cedar, Dale; mills East, North, West",
    "sets": [{"name": "Farms", "elements": FARMS}, {"name": "Mills", "elements": MILLS}],
    "parameters": [
        {"name": "supply", "index": ["Farms"], "value": dict(zip(FARMS, [30, 40, 20, 10], strict=True))},
        {"name": "need", "index": ["Mills"], "value": dict(zip(MILLS, [25, 35, 30], strict=True))},
        {
            "name": "cost",
            "index": ["Farms", "Mills"],
            "value": {
                f: dict(zip(MILLS, row, strict=True)) for f, row in zip(FARMS, GRAIN_COSTS, strict=True)
            },
        },
    ],
    "variables": [{"name": "move", "meaning": "tonnes from farm f to mill m", "index": ["Farms", "Mills"]}],
    "objective": {
        "sense": "minimize",
        "expression": "sum(cost[f, m] * move[f, m] for f in Farms for m in Mills)",
    },
    "constraints": [
        {
            "name": "farm_supply",
            "expression": "sum(move[f, m] for m in Mills) <= supply[f]",
            "for_all": ["f in Farms"],
        },
        {
            "name": "mill_need",
            "expression": "sum(move[f, m] for f in Farms) >= need[m]",
            "for_all": ["m in Mills"],
        },
    ],
}


def test_a_problem_with_tables_is_asked_for_an_indexed_model(
    scripted_llm: ScriptedLLMServer, client: LLMClient
) -> None:
    undeclared = copy.deepcopy(GRAIN_DRAFT)
    undeclared["objective"]["expression"] = "sum(price[f, m] * move[f, m] for f in Farms for m in Mills)"
    scripted_llm.add(json.dumps(undeclared), json.dumps(GRAIN_DRAFT))
    answer = agent_for(client, indexed_from_numbers=20).solve(GRAIN)
    # each mill from its cheapest farm, except West: Dale's 10 tonnes at 1, then Cedar's 20 at 2
    assert answer.status == AnswerStatus.OPTIMAL and answer.objective == pytest.approx(135.0)
    assert answer.repair_rounds == 1
    for request in scripted_llm.requests:  # the first formulation and the repair alike
        prompt = request.last_user_text
        assert prompts.INDEXED_INSTRUCTIONS in prompt
        assert request.response_format is not None
        schema = request.response_format["json_schema"]["schema"]
        assert {"sets", "parameters"} <= set(schema["required"])
        assert schema["properties"]["sets"]["minItems"] == 1
    first = scripted_llm.requests[0].last_user_text
    assert prompts.INDEXED_EXAMPLE in first and prompts.WORKED_EXAMPLE not in first


def test_a_small_problem_keeps_the_scalar_example_and_indexing_is_off_by_default(
    scripted_llm: ScriptedLLMServer, client: LLMClient
) -> None:
    scripted_llm.add(GOOD_JSON, json.dumps(GRAIN_DRAFT))
    assert agent_for(client, indexed_from_numbers=20).solve(BAKERY).objective == pytest.approx(120.0)
    assert agent_for(client).solve(GRAIN).objective == pytest.approx(135.0)
    for request in scripted_llm.requests:
        prompt = request.last_user_text
        assert prompts.WORKED_EXAMPLE in prompt and prompts.INDEXED_INSTRUCTIONS not in prompt
        assert request.response_format is not None
        assert "sets" not in request.response_format["json_schema"]["schema"]["required"]


# --- bad input and endpoints -------------------------------------------------------------------------
def test_empty_question_is_an_error_without_llm_calls(
    scripted_llm: ScriptedLLMServer, client: LLMClient
) -> None:
    answer = agent_for(client).solve("   ")
    assert answer.status == AnswerStatus.ERROR and "empty" in (answer.error or "")
    assert scripted_llm.request_count == 0 and answer.usage.calls == 0


def test_dead_endpoint_raises_unavailable(tmp_path: Path) -> None:
    with ScriptedLLMServer() as server:
        config = server.llm_config(retry_deadline=0.2, max_retries=1)
    # the server is stopped: nothing listens on that port any more
    dead = LLMClient(config, cache=False)
    with dead, pytest.raises(LLMUnavailableError, match="cannot be reached"):
        agent_for(dead).solve(BAKERY)


def test_a_refused_request_is_an_error_answer(scripted_llm: ScriptedLLMServer, client: LLMClient) -> None:
    scripted_llm.responder = lambda request: ScriptedReply.error(400, "prompt exceeds the context window")
    answer = agent_for(client, max_repairs=1).solve(BAKERY)
    assert answer.status == AnswerStatus.ERROR
    assert "context window" in (answer.error or "")


# --- usage, parameters and the graph -----------------------------------------------------------------
def test_usage_is_counted_per_problem_across_threads(
    scripted_llm: ScriptedLLMServer, client: LLMClient
) -> None:
    easy = BAKERY
    hard = BAKERY.replace("bakery", "pastry shop")
    seen: dict[str, int] = {}
    lock = threading.Lock()

    def respond(request: ChatRequest) -> str:
        text = request.last_user_text
        with lock:
            key = "hard" if "pastry shop" in text else "easy"
            seen[key] = seen.get(key, 0) + 1
            count = seen[key]
        if key == "hard" and count <= 2:
            return with_constraint("min_bread", "bread >= 50")  # two infeasible rounds, then right
        return GOOD_JSON

    scripted_llm.responder = respond
    scripted_llm.latency = 0.05  # so the two problems' calls interleave
    agent = agent_for(client)
    answers: dict[str, Any] = {}
    threads = [
        threading.Thread(target=lambda q=q, k=k: answers.__setitem__(k, agent.solve(q)))
        for k, q in (("easy", easy), ("hard", hard))
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert answers["easy"].usage.calls == 1 and answers["hard"].usage.calls == 3
    assert answers["hard"].repair_rounds == 2
    assert client.usage.calls == 4


def test_parameters_save_and_load(tmp_path: Path, client: LLMClient) -> None:
    agent = agent_for(client)
    assert {name for name, _ in agent.named_parameters()} == {
        "system_prompt",
        "formulation_instructions",
        "worked_example",
        "indexed_instructions",
        "indexed_example",
        "data_instructions",
        "code_instructions",
        "code_worked_example",
        "repair_instructions",
        "modeling_hints",
        "sanity_rules.code",
    }
    # the optimizer is told, per parameter, what a rewrite must keep (and the length budget)
    assert all(parameter.constraint and parameter.description for parameter in agent.parameters())
    agent.system_prompt.value = "You are a careful modeler."
    path = tmp_path / "params.json"
    agent.save(path)
    saved = json.loads(path.read_text())
    assert saved["parameters"]["system_prompt"] == "You are a careful modeler."
    assert any("def sanity_rules" in line for line in saved["parameters"]["sanity_rules.code"])

    fresh = ModelingAgent(client, params=path)
    assert fresh.system_prompt.value == "You are a careful modeler."
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps({"format": "optitrace.parameters/1", "parameters": {"temperature": 1}}))
    with pytest.raises(KeyError, match="temperature"):
        fresh.load_params(wrong)
    assert fresh.system_prompt.value == "You are a careful modeler."


def test_backward_on_the_answer_reaches_the_trainable_parameters(
    scripted_llm: ScriptedLLMServer, client: LLMClient
) -> None:
    scripted_llm.add(with_constraint("min_bread", "bread >= 50"), GOOD_JSON)
    agent = agent_for(client)
    trace = agent.solve_traced(BAKERY)
    assert trace.answer.objective == pytest.approx(120.0) and len(trace.rounds) == 2
    subgraph = trace.answer_node.backward("The label says 120: correct.")
    reached = {name for name, parameter in agent.named_parameters() if parameter.feedback}
    assert reached == {
        "system_prompt",
        "formulation_instructions",
        "worked_example",
        "repair_instructions",
        "modeling_hints",
        "sanity_rules.code",
    }
    operations = {n.operation.name for n in subgraph if hasattr(n, "operation")}
    assert {"formulate", "repair", "build_and_solve", "assess", "compose", "sanity_rules"} <= operations


def test_trained_sanity_code_takes_effect_and_a_crash_does_not_cost_the_answer(
    scripted_llm: ScriptedLLMServer, client: LLMClient
) -> None:
    agent = agent_for(client)
    code = agent.sanity_rules.parameter
    assert code is not None
    code.value = code.value.replace("concerns: list[str] = []", "concerns: list[str] = ['always wrong']")
    scripted_llm.responder = lambda request: GOOD_JSON
    answer = agent_for(client).solve(BAKERY)  # a different agent keeps the default code
    assert answer.confidence == "medium"
    stubborn = agent.solve(BAKERY.replace("bakery", "Bakery"))
    assert stubborn.attempts[0].outcome == "sanity rejected" and stubborn.confidence == "low"

    code.value = "def sanity_rules(facts):\n    return 1 / 0\n"
    trace = agent.solve_traced(BAKERY.replace("bakery", "BAKERY"))
    assert trace.answer.status == AnswerStatus.OPTIMAL
    assert trace.failures and isinstance(trace.failures[0], ExceptionNode)
    assert "ZeroDivisionError" in trace.failures[0].value


def test_options_are_validated(client: LLMClient) -> None:
    with pytest.raises(ValueError):
        ModelingAgent(client, max_repairs=-1)
    agent = ModelingAgent(client, samples=2, style="code")
    assert agent.options.samples == 2 and agent.options.style == "code"


# --- the command line ----------------------------------------------------------------------------------
def write_cli_config(path: Path, base_url: str) -> None:
    cache = path.parent / "cache.sqlite"
    path.write_text(
        f'[llm]\nbase_url = "{base_url}"\nmax_retries = 1\nretry_deadline = 0.3\ncache_path = "{cache}"\n'
    )


@pytest.fixture
def cli_env(scripted_llm: ScriptedLLMServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Point the CLI at the scripted server through a config file, with the cache under tmp_path."""
    config = tmp_path / "config.toml"
    write_cli_config(config, scripted_llm.base_url)
    for variable in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "OPTITRACE_MODEL", "OPENAI_MODEL"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("OPTITRACE_CONFIG", str(config))
    return config


def test_cli_solve_json(scripted_llm: ScriptedLLMServer, cli_env: Path) -> None:
    from typer.testing import CliRunner

    from agent.cli import app

    scripted_llm.add(GOOD_JSON)
    result = CliRunner().invoke(app, ["solve", BAKERY, "--json"])
    assert result.exit_code == 0, result.output
    document = json.loads(result.stdout)
    assert document["status"] == "optimal" and document["objective"] == pytest.approx(120.0)
    assert document["values"] == {"bread": 40.0, "cake": 0.0}
    assert document["formulation"]["objective"]["expression"] == "3*bread + 5*cake"
    assert document["usage"]["calls"] == 1 and document["llm"]["base_url"] == scripted_llm.base_url


def test_cli_solve_rich_from_file_with_model(
    scripted_llm: ScriptedLLMServer, cli_env: Path, tmp_path: Path
) -> None:
    from typer.testing import CliRunner

    from agent.cli import app

    problem = tmp_path / "bakery.txt"
    problem.write_text(BAKERY)
    scripted_llm.add(GOOD_JSON)
    result = CliRunner().invoke(app, ["solve", "--file", str(problem), "--show-model", "--mode", "oneshot"])
    assert result.exit_code == 0, result.output
    assert "optimal" in result.output and "120" in result.output and "loaves baked" in result.output
    assert "bread + 2*cake <= 40" in result.output  # --show-model prints the math
    assert scripted_llm.requests[0].last_user_text.rstrip().endswith(BAKERY + "\nJSON:")


def test_cli_reports_a_dead_endpoint_and_bad_inputs(cli_env: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from agent.cli import app

    runner = CliRunner()
    missing = runner.invoke(app, ["solve", BAKERY, "--data", str(tmp_path / "nope.csv")])
    assert missing.exit_code == 1 and "cannot read data table" in missing.output
    bad_option = runner.invoke(app, ["solve", BAKERY, "--style", "prose"])
    assert bad_option.exit_code == 1 and "style" in bad_option.output
    broken_params = tmp_path / "params.json"
    broken_params.write_text("{not json")
    bad_params = runner.invoke(app, ["solve", BAKERY, "--params", str(broken_params)])
    assert bad_params.exit_code == 1 and "cannot load parameters" in bad_params.output

    with ScriptedLLMServer() as server:
        dead_url = server.base_url
    write_cli_config(cli_env, dead_url)
    dead = runner.invoke(app, ["solve", BAKERY, "--json"])
    assert dead.exit_code == 1 and "cannot be reached" in dead.output


def test_a_sandbox_that_cannot_start_is_an_error_answer(
    scripted_llm: ScriptedLLMServer, client: LLMClient
) -> None:
    from solvers.sandbox import Sandbox

    def strict_sandbox() -> Sandbox:  # insists on bwrap, which is not at that path
        return Sandbox(isolation="bwrap", bwrap_path="/nonexistent/bwrap")

    agent = ModelingAgent(client, AgentOptions(style="code"), sandbox_factory=strict_sandbox)
    answer = agent.solve(BAKERY)
    assert answer.status == AnswerStatus.ERROR
    assert "SandboxUnavailableError" in (answer.error or "") and scripted_llm.request_count == 0


def test_unbounded_feedback_names_the_variable_no_constraint_limits(
    scripted_llm: ScriptedLLMServer, client: LLMClient
) -> None:
    muffin = {"name": "muffin", "meaning": "muffins baked", "type": "integer"}
    objective = {"sense": "maximize", "expression": "3*bread + 5*cake + 2*muffin"}
    scripted_llm.add(variant(variables=[*GOOD["variables"], muffin], objective=objective), GOOD_JSON)
    answer = agent_for(client).solve(BAKERY)
    assert answer.status == AnswerStatus.OPTIMAL
    assert "muffin appear(s) in no constraint" in answer.attempts[0].feedback


def test_a_repair_that_repeats_itself_gets_a_fresh_warmer_attempt(
    scripted_llm: ScriptedLLMServer, tmp_path: Path
) -> None:
    # With the reply cache on, a repair round whose prompt equals the previous round's would be
    # answered from the cache with the same mistake; each round must reach the LLM anew.
    do_nothing = variant(constraints=[{"name": "oven", "expression": "bread + 2*cake <= 0"}])
    scripted_llm.add(do_nothing, do_nothing, do_nothing, GOOD_JSON)
    config = scripted_llm.llm_config(cache_path=tmp_path / "cache.sqlite")
    with LLMClient(config) as cached:
        answer = agent_for(cached, max_repairs=3).solve(BAKERY)
    assert answer.status == AnswerStatus.OPTIMAL and answer.objective == pytest.approx(120.0)
    assert scripted_llm.request_count == 4 and answer.repair_rounds == 3
    repair_temperatures = [request.temperature for request in scripted_llm.requests[1:]]
    assert repair_temperatures == sorted(repair_temperatures) and len(set(repair_temperatures)) == 3
