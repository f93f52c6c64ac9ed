"""The synthesis pipeline end to end against the scripted loopback LLM server (real HTTP, real
openai client, the real ModelingAgent and HiGHS): rejection sampling keeps a story whose
formulation reproduces the label and rejects one whose formulation does not; duplicates and
untranslatable items are dropped; the output loads as an eval dataset; runs resume."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from agent.datasets import load_dataset
from agent.modeler import AgentOptions, ModelingAgent
from agent.synthesis.backtranslate import SYSTEM_PROMPT, StoryWriter, instance_facts
from agent.synthesis.dedup import DedupIndex
from agent.synthesis.families import SynthInstance
from agent.synthesis.generate import InstanceLabel
from agent.synthesis.pipeline import (
    AgentFormulator,
    ForwardResult,
    ItemPlan,
    SynthConfig,
    forward_verdict,
    pick_instance,
    plan_items,
    reachable_bands,
    run_pipeline,
)
from solvers.ir import Formulation
from trace_graph.llm.client import LLMClient
from trace_graph.llm.scripted_server import ChatRequest, ScriptedLLMServer, ScriptedReply


# --- a scripted world: stories from the facts, formulations from the IR ----------------------------
def story_from_prompt(prompt: str) -> str:
    """A faithful story: the facts of the prompt, reworded a little, ending in a question."""
    facts = prompt.split("Facts:\n", 1)[1].split("\n\nProblem:", 1)[0]
    body = facts.replace("Setting: ", "This happens at ").replace("Decide: ", "We must decide the ")
    return body + "\nWhat is the best plan?"


def draft_of(f: Formulation, change: Callable[[dict[str, Any]], None] | None = None) -> str:
    """The IR as the compact draft the agent asks for (optionally with one datum changed). Drafts
    have no `where` and no parameter defaults, so tests use families whose easy levels need neither
    (production mix, diet, knapsack, portfolio)."""
    assert not any(c.where for c in f.constraints) and all(p.default is None for p in f.parameters)
    draft: dict[str, Any] = {
        "notes": "written from the instance",
        "sets": [{"name": s.name, "elements": s.elements} for s in f.sets],
        "parameters": [{"name": p.name, "index": p.index, "value": p.value} for p in f.parameters],
        "variables": [
            {"name": v.name, "meaning": v.description, "index": v.index, "type": v.domain, "lower": v.lower,
             "upper": v.upper}
            for v in f.variables
        ],
        "objective": {"sense": f.objective.sense, "expression": f.objective.expression},
        "constraints": [
            {"name": c.name, "expression": c.expression, "meaning": c.description,
             "for_all": [f"{b.index} in {b.set}" for b in c.for_all]}
            for c in f.constraints
        ],
        "missing_information": [],
    }  # fmt: skip
    if change is not None:
        change(draft)
    return json.dumps(draft)


def double_first_parameter(draft: dict[str, Any]) -> None:
    """Profits, values or costs: the first parameter of these families is a one-index table."""
    first = draft["parameters"][0]
    assert len(first["index"]) == 1
    first["value"] = {k: 2 * v for k, v in first["value"].items()}


class World:
    """Answers story requests from the facts and formulation requests from the instances."""

    def __init__(self, instances: list[SynthInstance], wrong: set[str] = frozenset()) -> None:  # type: ignore[assignment]
        self.instances = instances
        self.wrong = wrong
        self.story_requests = 0
        self.formulation_requests = 0

    def owner(self, text: str) -> SynthInstance:
        for instance in self.instances:
            first_set = instance.formulation.sets[0]
            if all(str(e) in text for e in first_set.elements):
                return instance
        raise AssertionError(f"no instance matches: {text[:200]}")

    def __call__(self, request: ChatRequest) -> str:
        if request.messages[0].text == SYSTEM_PROMPT:
            self.story_requests += 1
            if '{"opening": "...", "question": "..."}' in request.messages[1].text:  # framed style
                return json.dumps({"opening": "We must plan this.", "question": "What is the best plan?"})
            return story_from_prompt(request.messages[1].text)
        self.formulation_requests += 1
        instance = self.owner(request.last_user_text)
        change = double_first_parameter if instance.family in self.wrong else None
        return draft_of(instance.formulation, change)


def planned_instances(config: SynthConfig) -> list[SynthInstance]:
    picked = [pick_instance(plan) for plan in plan_items(config)]
    return [p[0] for p in picked if p is not None]


@pytest.fixture
def client(scripted_llm: ScriptedLLMServer) -> Iterator[LLMClient]:
    with LLMClient(scripted_llm.llm_config(), cache=False) as llm:
        yield llm


def run(config: SynthConfig, client: LLMClient, index: DedupIndex | None = None, **agent: Any):  # type: ignore[no-untyped-def]
    writer = StoryWriter(client, max_rounds=2)
    formulator = AgentFormulator(ModelingAgent(client, AgentOptions(max_repairs=1, **agent)))
    return run_pipeline(config, writer, formulator, index)


def rows(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


# --- rejection sampling ----------------------------------------------------------------------------
def test_rejection_sampling_keeps_the_right_formulation_and_rejects_the_wrong_one(
    scripted_llm: ScriptedLLMServer, client: LLMClient, tmp_path: Path
) -> None:
    config = SynthConfig(
        families=["knapsack", "production_mix"], n=1, difficulty="easy", out=tmp_path / "s.jsonl"
    )
    instances = planned_instances(config)
    world = World(instances, wrong={"production_mix"})
    scripted_llm.responder = world
    summary = run(config, client)

    assert (summary.planned, summary.generated, summary.solved, summary.translated) == (2, 2, 2, 2)
    assert (summary.accepted, summary.rejected, summary.duplicates) == (1, 1, 0)
    assert world.story_requests == 2 and world.formulation_requests >= 2
    (kept,) = rows(config.out)
    (hard,) = rows(config.rejected_path)
    assert kept["family"] == "knapsack" and hard["family"] == "production_mix"
    assert "differs from the label" in hard["reason"]
    # the label is HiGHS's optimum; the kept item's formulator reproduced it exactly
    provenance = kept["provenance"]
    assert (
        kept["answer"]
        == provenance["label"]["objective"]
        == pytest.approx(provenance["forward"]["objective"])
    )
    assert provenance["forward"]["matches"] is True and hard["provenance"]["forward"]["matches"] is False
    assert hard["provenance"]["forward"]["objective"] != pytest.approx(hard["answer"])
    for key in ("family", "seed", "knob", "complexity", "formulation", "model", "backtranslation", "label"):
        assert key in provenance
    assert provenance["model"] == "scripted-model" and provenance["backtranslation"]["rounds"] == 1
    assert provenance["complexity"]["band"] == "easy" == kept["difficulty"]
    assert Formulation.model_validate(provenance["formulation"]) == next(
        i.formulation for i in instances if i.family == "knapsack"
    )
    # both files are eval datasets as they are
    accepted = load_dataset(config.out)
    assert accepted.problems[0].label.status == "optimal"
    assert accepted.problems[0].label.objective == pytest.approx(kept["answer"])
    assert accepted.problems[0].question == kept["question"]
    assert load_dataset(config.rejected_path).problems[0].label.objective == pytest.approx(hard["answer"])
    ledger = rows(config.ledger_path)
    assert sorted(r["outcome"] for r in ledger) == ["accepted", "rejected"]


def test_infeasible_labels_are_kept_only_with_an_infeasible_answer(
    scripted_llm: ScriptedLLMServer, client: LLMClient, tmp_path: Path
) -> None:
    config = SynthConfig(
        families=["diet_blend", "portfolio"],
        n=1,
        difficulty="easy",
        infeasible_share=1.0,
        out=tmp_path / "inf.jsonl",
    )
    instances = planned_instances(config)
    assert all(i.variant == "infeasible" for i in instances)
    world = World(instances)

    def responder(request: ChatRequest) -> str:
        reply = world(request)
        if (
            request.messages[0].text != SYSTEM_PROMPT
            and world.owner(request.last_user_text).family == "portfolio"
        ):
            # the formulator forgets that all the money must be invested: feasible, so wrong
            draft = json.loads(reply)
            draft["constraints"] = [c for c in draft["constraints"] if c["name"] != "invest_all"]
            return json.dumps(draft)
        return reply

    scripted_llm.responder = responder
    summary = run(config, client)
    assert (summary.accepted, summary.rejected) == (1, 1)
    (kept,) = rows(config.out)
    (hard,) = rows(config.rejected_path)
    assert (
        kept["family"] == "diet_blend"
        and kept["answer"] == "infeasible"
        and kept["label_status"] == "infeasible"
    )
    assert hard["family"] == "portfolio" and "label infeasible, formulator said optimal" in hard["reason"]
    assert load_dataset(config.out).problems[0].label.status == "infeasible"


def test_an_unbounded_label_is_written_so_that_eval_loads_it_as_unbounded(tmp_path: Path) -> None:
    from agent.synthesis.pipeline import answer_of

    rows_written = [
        {"id": "u", "question": "q", "answer": answer_of(InstanceLabel(status="unbounded"))},
        {"id": "i", "question": "q", "answer": answer_of(InstanceLabel(status="infeasible"))},
        {"id": "o", "question": "q", "answer": answer_of(InstanceLabel(status="optimal", objective=4.5))},
    ]
    path = tmp_path / "mixed.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows_written))
    labels = [problem.label for problem in load_dataset(path).problems]
    assert [label.status for label in labels] == ["unbounded", "infeasible", "optimal"]
    assert labels[2].objective == 4.5


def test_forward_verdict_uses_rel_1e6_on_abs_label_plus_one() -> None:
    label = InstanceLabel(status="optimal", objective=1000.0)
    assert forward_verdict(label, ForwardResult(status="optimal", objective=1000.0009))[0]  # 9e-7 relative
    ok, why = forward_verdict(label, ForwardResult(status="optimal", objective=1000.01))
    assert not ok and "differs from the label" in why
    assert not forward_verdict(label, ForwardResult(status="infeasible"))[0]
    assert not forward_verdict(label, ForwardResult(status="needs_clarification"))[0]
    infeasible = InstanceLabel(status="infeasible")
    assert forward_verdict(infeasible, ForwardResult(status="infeasible"))[0]
    assert forward_verdict(infeasible, ForwardResult(status="infeasible_or_unbounded"))[0]
    assert not forward_verdict(infeasible, ForwardResult(status="optimal", objective=3.0))[0]
    unbounded = InstanceLabel(status="unbounded")
    assert forward_verdict(unbounded, ForwardResult(status="unbounded"))[0]
    assert not forward_verdict(unbounded, ForwardResult(status="optimal", objective=1.0))[0]


# --- drops -----------------------------------------------------------------------------------------
def test_a_story_copying_a_test_item_is_dropped_as_a_duplicate(
    scripted_llm: ScriptedLLMServer, client: LLMClient, tmp_path: Path
) -> None:
    config = SynthConfig(families=["knapsack"], n=1, difficulty="easy", out=tmp_path / "d.jsonl")
    (instance,) = planned_instances(config)
    world = World([instance])
    scripted_llm.responder = world
    index = DedupIndex()
    index.add("planted", "planted/7", "Another problem entirely about ferries and tides?")
    # the exact story the world will write, planted as a "test item"
    from agent.synthesis.backtranslate import PERSONAS, story_prompt

    story = story_from_prompt(story_prompt(instance_facts(instance), PERSONAS[0]))
    index.add("planted", "planted/8", story)
    summary = run(config, client, index)
    assert summary.duplicates == 1 and summary.accepted == summary.rejected == 0
    assert world.formulation_requests == 0  # no forward modeling for a duplicate
    assert not rows(config.out) and not rows(config.rejected_path)
    (entry,) = rows(config.ledger_path)
    assert entry["outcome"] == "duplicate" and entry["closest_test_match"]["id"] == "planted/8"


def test_kept_items_report_their_closest_test_match(
    scripted_llm: ScriptedLLMServer, client: LLMClient, tmp_path: Path
) -> None:
    config = SynthConfig(families=["knapsack"], n=1, difficulty="easy", out=tmp_path / "c.jsonl")
    scripted_llm.responder = World(planned_instances(config))
    index = DedupIndex.from_datasets(["nl4opt"])
    summary = run(config, client, index)
    assert summary.accepted == 1
    match = rows(config.out)[0]["provenance"]["closest_test_match"]
    assert match["dataset"] == "nl4opt" and match["id"].startswith("nl4opt/") and not match["duplicate"]
    assert 0 <= match["similarity"] < 0.5


def test_a_story_that_never_passes_the_number_check_is_untranslated(
    scripted_llm: ScriptedLLMServer, client: LLMClient, tmp_path: Path
) -> None:
    config = SynthConfig(families=["knapsack"], n=1, difficulty="easy", out=tmp_path / "u.jsonl")
    world = World(planned_instances(config))
    scripted_llm.responder = lambda request: re.sub(r"\?$", " Founded in 1987?", world(request))
    summary = run(config, client)
    assert summary.outcomes == {"untranslated": 1} and summary.translated == 0
    assert world.formulation_requests == 0 and scripted_llm.request_count == 2  # two story rounds
    (entry,) = rows(config.ledger_path)
    assert "1987" in entry["reason"]


# --- resume ----------------------------------------------------------------------------------------
def test_a_rerun_skips_done_items_and_extends_the_output(
    scripted_llm: ScriptedLLMServer, client: LLMClient, tmp_path: Path
) -> None:
    first = SynthConfig(families=["knapsack"], n=2, difficulty="easy", out=tmp_path / "r.jsonl")
    bigger = first.model_copy(update={"n": 3})
    world = World(planned_instances(bigger))
    scripted_llm.responder = world
    summary = run(first, client)
    assert summary.planned == 2 and summary.accepted == 2 and summary.resumed == 0
    requests_before = scripted_llm.request_count
    # an interruption mid-write leaves half a line: the rerun repairs it, then skips what is done
    with first.out.open("a") as handle:
        handle.write('{"id": "knapsack-easy-9", "quest')
    again = run(bigger, client)
    assert again.planned == 3 and again.resumed == 2 and again.accepted == 1
    assert world.story_requests == 3  # only the new item was written
    assert scripted_llm.request_count > requests_before
    ids = [r["id"] for r in rows(first.out)]
    assert len(ids) == len(set(ids)) == 3
    assert len(load_dataset(first.out)) == 3
    nothing = run(bigger, client)
    assert nothing.resumed == 3 and nothing.accepted == 0 and nothing.generated == 0


def test_an_unreachable_endpoint_stops_the_run_and_keeps_what_is_done(tmp_path: Path) -> None:
    server = ScriptedLLMServer(responder=lambda request: ScriptedReply.error(503, "overloaded"))
    with server, LLMClient(server.llm_config(retry_deadline=0.2), cache=False) as llm:
        config = SynthConfig(families=["knapsack"], n=2, difficulty="easy", out=tmp_path / "down.jsonl")
        summary = run(config, llm)
    assert summary.stopped is not None and "unavailable" in summary.stopped
    assert summary.accepted == 0 and not rows(config.ledger_path)  # nothing half-done is recorded


# --- planning --------------------------------------------------------------------------------------
def test_plans_cycle_through_reachable_bands_and_draw_variants_by_seed(tmp_path: Path) -> None:
    config = SynthConfig(families=["set_cover", "knapsack"], n=6, difficulty="all", out=tmp_path / "p.jsonl")
    plans = plan_items(config)
    assert (
        {p.band for p in plans if p.family == "set_cover"}
        == set(reachable_bands("set_cover"))
        == {"easy", "medium"}
    )
    assert {p.band for p in plans if p.family == "knapsack"} == {"easy", "medium", "hard"}
    assert plan_items(config) == plans
    shares = config.model_copy(update={"infeasible_share": 0.5, "n": 40, "families": ["production_mix"]})
    variants = [p.variant for p in plan_items(shares)]
    assert 10 < variants.count("infeasible") < 30 and "unbounded" not in variants
    for plan in plans:
        picked = pick_instance(plan)
        assert picked is not None and picked[1].band == plan.band


def test_an_unreachable_band_is_out_of_band(tmp_path: Path) -> None:
    assert pick_instance(ItemPlan(family="set_cover", seed=0, band="hard", variant="feasible")) is None


# --- the command line ------------------------------------------------------------------------------
@pytest.fixture
def cli_env(scripted_llm: ScriptedLLMServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    config = tmp_path / "config.toml"
    config.write_text(
        f'[llm]\nbase_url = "{scripted_llm.base_url}"\nmax_retries = 1\nretry_deadline = 0.3\n'
        f'cache_path = "{tmp_path / "cache.sqlite"}"\n'
    )
    for variable in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "OPTITRACE_MODEL", "OPENAI_MODEL"):
        monkeypatch.delenv(variable, raising=False)
    monkeypatch.setenv("OPTITRACE_CONFIG", str(config))
    return config


def test_cli_synth_prints_a_json_summary_and_writes_eval_ready_files(
    scripted_llm: ScriptedLLMServer, cli_env: Path, tmp_path: Path
) -> None:
    from agent.cli import app

    out = tmp_path / "synth.jsonl"
    config = SynthConfig(families=["knapsack", "diet_blend"], n=2, difficulty="easy", out=out)
    scripted_llm.responder = World(planned_instances(config), wrong={"diet_blend"})
    args = [
        "synth",
        "--families",
        "knapsack,diet_blend",
        "--n",
        "2",
        "--difficulty",
        "easy",
        "--out",
        str(out),
    ]
    result = CliRunner().invoke(app, [*args, "--json", "--no-dedup", "--workers", "2"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["planned"] == 4 and summary["accepted"] == 2 and summary["rejected"] == 2
    assert summary["by_family"] == {"knapsack": {"accepted": 2}, "diet_blend": {"rejected": 2}}
    assert summary["llm_calls"] >= 8
    assert len(load_dataset(out)) == 2 and len(load_dataset(config.rejected_path)) == 2
    table = CliRunner().invoke(app, [*args, "--no-dedup"])  # resumed: nothing left to do
    assert table.exit_code == 0 and "already done" in table.output and "synthesis summary" in table.output
    bad = CliRunner().invoke(app, ["synth", "--families", "nope", "--out", str(out)])
    assert bad.exit_code == 1 and "unknown family" in bad.output

    report = CliRunner().invoke(app, ["synth", "--report-only", "--out", str(out), "--json"])
    assert report.exit_code == 0, report.output
    whole = json.loads(report.stdout)
    assert whole["items"] == 4 and whole["outcomes"] == {"accepted": 2, "rejected": 2}
    assert whole["by_family"] == {"diet_blend": {"rejected": 2}, "knapsack": {"accepted": 2}}
    assert whole["by_band"] == {"easy": {"accepted": 2, "rejected": 2}} and whole["acceptance_rate"] == 0.5
    markdown = (tmp_path / "synth.report.md").read_text()
    assert "| knapsack | 2 | 0 | 2 |" in markdown and "| **all** | 2 | 2 | 4 |" in markdown
    missing = CliRunner().invoke(app, ["synth", "--report-only", "--out", str(tmp_path / "none.jsonl")])
    assert missing.exit_code == 1 and "does not exist" in missing.output


def test_the_report_counts_an_item_once_with_its_last_outcome(tmp_path: Path) -> None:
    from agent.synthesis.report import LedgerError, build_report

    ledger = tmp_path / "d.ledger.jsonl"
    rows_written = [
        {"id": "knapsack-easy-0", "family": "knapsack", "band": "easy", "outcome": "error", "seconds": 3},
        {"id": "knapsack-medium-1", "family": "knapsack", "band": "medium", "outcome": "untranslated"},
        {"id": "knapsack-easy-0", "family": "knapsack", "band": "easy", "outcome": "accepted", "seconds": 40,
         "closest_test_match": {"dataset": "nl4opt", "id": "nl4opt/3", "similarity": 0.2}},
    ]  # fmt: skip
    ledger.write_text("".join(json.dumps(row) + "\n" for row in rows_written))
    report = build_report(ledger)
    assert report.items == 2 and report.outcomes == {"accepted": 1, "untranslated": 1}
    assert report.by_band == {"easy": {"accepted": 1}, "medium": {"untranslated": 1}}
    assert report.acceptance_rate == 1.0 and report.seconds == 40
    assert report.closest_accepted is not None and report.closest_accepted.id == "nl4opt/3"
    ledger.write_text(ledger.read_text() + '{"id": 5}\n')
    with pytest.raises(LedgerError, match=":4 is not a ledger row"):
        build_report(ledger)


def test_cli_synth_framed_stories_carry_the_facts_and_say_their_style(
    scripted_llm: ScriptedLLMServer, cli_env: Path, tmp_path: Path
) -> None:
    from agent.cli import app

    out = tmp_path / "framed.jsonl"
    config = SynthConfig(families=["knapsack"], n=2, difficulty="easy", out=out)
    world = World(planned_instances(config))
    scripted_llm.responder = world
    args = ["synth", "--families", "knapsack", "--n", "2", "--difficulty", "easy", "--out", str(out)]
    result = CliRunner().invoke(app, [*args, "--story-style", "framed", "--no-dedup", "--json"])
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)["accepted"] == 2 and world.story_requests == 2
    for row in rows(out):
        assert row["question"].startswith("We must plan this.") and "Decide:" in row["question"]
        assert row["provenance"]["backtranslation"]["style"] == "framed"
    assert {row["story_style"] for row in rows(tmp_path / "framed.ledger.jsonl")} == {"framed"}
    bad = CliRunner().invoke(app, [*args, "--story-style", "poem"])
    assert bad.exit_code == 1 and "narrative or framed" in bad.output


def test_a_crashing_step_ends_that_item_only(
    scripted_llm: ScriptedLLMServer, client: LLMClient, tmp_path: Path
) -> None:
    class CrashingFormulator:
        """A formulator with a bug: the pipeline must record it and carry on."""

        def __call__(self, question: str) -> ForwardResult:
            raise RuntimeError("formulator crashed")

    config = SynthConfig(families=["knapsack"], n=2, difficulty="easy", out=tmp_path / "e.jsonl")
    scripted_llm.responder = World(planned_instances(config))
    summary = run_pipeline(config, StoryWriter(client), CrashingFormulator(), None)
    assert summary.outcomes == {"error": 2} and summary.stopped is None
    assert all("RuntimeError: formulator crashed" in row["reason"] for row in rows(config.ledger_path))
    # a rerun tries crashed items again (the bug may be fixed by then)
    fixed = AgentFormulator(ModelingAgent(client, AgentOptions(max_repairs=0)))
    again = run_pipeline(config, StoryWriter(client), fixed, None)
    assert again.resumed == 0 and again.accepted == 2
