"""The real embedded model (`pytest -m local_llm`): llama.cpp serving Qwen2.5-Coder-1.5B on loopback,
called through the real `openai` client. Needs the [local] extra; skipped with the reason otherwise."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from openai import OpenAI
from pydantic import BaseModel, Field

from agent.local_llm import endpoint, registry, server
from agent.local_llm.server import LocalServer
from trace_graph.llm.config import LLMConfig

pytestmark = [pytest.mark.local_llm, pytest.mark.timeout(1200)]

MODEL = registry.get_model()


def _skip_reason() -> str | None:
    if server.missing_runtime_modules():
        return f"llama-cpp-python[server] is not installed ({registry.INSTALL_COMMAND})"
    if registry.missing_chunk_packages(MODEL):
        return f"the {MODEL.name} weight packages are not installed ({registry.INSTALL_COMMAND})"
    return None


if (_reason := _skip_reason()) is not None:
    pytest.skip(_reason, allow_module_level=True)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LLMConfig]:
    """The embedded model started on demand, as a command with no endpoint configured would."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "OPTITRACE_MODEL", "OPENAI_MODEL"):
            patch.delenv(name, raising=False)
        patch.setenv("OPTITRACE_CONFIG", str(tmp_path_factory.mktemp("cfg") / "none.toml"))
        config = endpoint.resolve_llm_config()
        try:
            yield config
        finally:
            endpoint.stop_own_server()


def client_for(config: LLMConfig) -> OpenAI:
    return OpenAI(base_url=config.base_url, api_key=config.api_key, timeout=config.timeout, max_retries=0)


def test_on_demand_server_lists_the_alias_and_is_reused(embedded: LLMConfig) -> None:
    assert embedded.base_url.startswith("http://127.0.0.1:") and embedded.model == MODEL.name
    assert embedded.structured_output == "llamacpp_json_object"
    assert [model.id for model in client_for(embedded).models.list()] == [MODEL.name]
    assert endpoint.resolve_llm_config(start_if_needed=False).base_url == embedded.base_url
    [state] = [s for s in server.running_servers(MODEL.name) if s.owner_pid == os.getpid()]
    assert state.base_url == embedded.base_url and not state.shared


def test_chat_completion_answers(embedded: LLMConfig) -> None:
    reply = client_for(embedded).chat.completions.create(
        model=embedded.model,
        messages=[{"role": "user", "content": "What is 17 + 25? Reply with the number only."}],
        temperature=0.0,
        max_tokens=8,
    )
    assert "42" in (reply.choices[0].message.content or "")


class Constraint(BaseModel):
    name: str
    expression: str
    sense: str
    rhs: float


class Formulation(BaseModel):
    notes: str
    variables: list[str]
    objective_sense: str
    objective: str
    constraints: list[Constraint]


BAKERY = (
    "A bakery makes bread and cake. Bread earns $3 profit, cake $5. Each bread needs 1 hour of oven time "
    "and each cake 2 hours; 40 oven hours are available. At most 15 cakes can be sold. How many of each "
    "maximizes profit?"
)


def test_schema_constrained_json_reply_parses(embedded: LLMConfig) -> None:
    schema = Formulation.model_json_schema()
    reply = client_for(embedded).chat.completions.create(
        model=embedded.model,
        messages=[
            {
                "role": "system",
                "content": "Formulate the problem as a linear program. In `notes`, first list each "
                "resource's use per unit of each product. Reply with JSON only.",
            },
            {"role": "user", "content": BAKERY},
        ],
        temperature=0.0,
        max_tokens=embedded.max_tokens,
        # llama-cpp-python's own structured-output form (OpenAI's json_schema form is a 500 here).
        response_format={"type": "json_object", "schema": schema},  # type: ignore[typeddict-unknown-key]
    )
    choice = reply.choices[0]
    assert choice.finish_reason == "stop", "the JSON was cut off at max_tokens"
    formulation = Formulation.model_validate(json.loads(choice.message.content or "", strict=False))
    assert len(formulation.variables) == 2
    assert formulation.constraints and formulation.objective_sense.lower().startswith("max")


class BoundedNote(BaseModel):
    note: str = Field(max_length=5000)


def test_a_long_length_bound_is_answered_not_a_crashed_server(embedded: LLMConfig) -> None:
    # an unbounded-looking maxLength once made llama.cpp refuse the grammar and the server die mid-request
    from trace_graph.llm.client import LLMClient

    with LLMClient(embedded, cache=False) as llm:
        ask = [{"role": "user", "content": "Write one short sentence about ovens."}]
        reply = llm.structured(ask, BoundedNote)
    assert reply.note.strip()
    assert server.fetch_model_ids(embedded.base_url, timeout=5) == [MODEL.name]


def test_a_server_stops_cleanly_and_forgets_its_state() -> None:
    with LocalServer(MODEL, threads=1, n_ctx=1024) as local:
        assert local.process is not None
        pid = local.process.pid
        state_file = server.server_dir() / f"server-{pid}.json"
        assert state_file.is_file()
        assert server.fetch_model_ids(local.base_url, timeout=5) == [MODEL.name]
    assert not local.is_running() and not state_file.exists()
    assert not Path(f"/proc/{pid}").exists()  # stopped and reaped


def test_a_framed_story_by_the_real_model_passes_the_number_check(embedded: LLMConfig) -> None:
    from agent.synthesis.backtranslate import StoryWriter, instance_facts
    from agent.synthesis.families import get_family
    from trace_graph.llm.client import LLMClient

    instance = get_family("transportation").generate(seed=1, level=2)
    with LLMClient(embedded, cache=False) as llm:
        result = StoryWriter(llm, style="framed").write(instance)
    assert result.passed, [r.check.summary() for r in result.history]
    assert result.story is not None and result.story.rstrip().endswith("?")
    for line in instance_facts(instance).lines[1:]:  # the data stands unchanged, relations included
        assert line in result.story


def test_one_optimizer_step_of_the_real_model_writes_a_usable_hint(embedded: LLMConfig) -> None:
    from agent.modeler import ModelingAgent
    from agent.training.guards import GuardedOptoPrime, ParameterGuard, agent_validators
    from trace_graph import graph_context
    from trace_graph.llm.client import LLMClient

    with LLMClient(embedded, cache=False) as llm:
        with graph_context():
            agent = ModelingAgent(llm, max_repairs=0)
        trace = agent.solve_traced(BAKERY.replace("At most 15 cakes", "At most 12 cakes"))
        trace.answer_node.backward(
            "Wrong: the objective is 108 but the correct optimum is 114. Check that every limit in the "
            "problem text became a constraint with its exact number."
        )
        hints = agent.modeling_hints
        optimizer = GuardedOptoPrime([hints], llm, prompt_budget=6_000)
        named = dict(agent.named_parameters())
        others = [p for p in named.values() if p is not hints]
        paths = {parameter: path for path, parameter in named.items()}
        optimizer.setup_guard(ParameterGuard(agent_validators(agent)), paths, others)
        result = optimizer.step()
    # a rejected first proposal may be in the errors; what counts is that a valid hint was applied
    assert [u.name for u in result.updates] == ["modeling_hints"], (result.errors, result.raw_reply)
    assert ParameterGuard(agent_validators(agent)).problems("modeling_hints", hints.value) == []
    assert hints.value.startswith("- ")
