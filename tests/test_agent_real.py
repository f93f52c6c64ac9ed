"""The modeling agent with the real embedded model (`pytest -m local_llm`): five textbook problems end
to end, through resolve_llm_config() as `optitrace solve` does. Slow (about a minute per problem on 2
cores) and skipped when the [local] extra is not installed.

What it claims: the bakery problem (issue 4's proof) is always solved, and at least three of the five
are solved correctly and independently verified. A 1.5B model is not perfect — it sometimes leaves a
product out of every constraint — so each problem alone is a measurement, printed as a table, and
the claim is about the set."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agent.answer import AnswerStatus
from agent.modeler import AgentOptions, ModelingAgent
from agent.voting import near_equal
from trace_graph.llm.client import LLMClient
from trace_graph.llm.config import LLMConfig

pytestmark = [pytest.mark.local_llm, pytest.mark.timeout(2400)]  # minutes per problem on CPU

try:
    from agent.local_llm import endpoint, registry, server
except ModuleNotFoundError as error:  # pragma: no cover - the local package is part of the repo
    pytest.skip(f"agent.local_llm is missing: {error}", allow_module_level=True)


def _skip_reason() -> str | None:
    if server.missing_runtime_modules():
        return f"llama-cpp-python[server] is not installed ({registry.INSTALL_COMMAND})"
    if registry.missing_chunk_packages(registry.get_model()):
        return f"the embedded model's weight packages are not installed ({registry.INSTALL_COMMAND})"
    return None


if (_reason := _skip_reason()) is not None:
    pytest.skip(_reason, allow_module_level=True)

BAKERY = (
    "A bakery bakes bread and cakes. A loaf of bread uses 1 hour of oven time and a cake uses 2 hours; "
    "the oven is available 40 hours a week. At most 15 cakes can be sold per week. Each loaf earns $3 "
    "profit and each cake $5. How many loaves and cakes should it bake to maximize profit?"
)
FURNITURE = (
    "A furniture maker builds chairs, tables and bookcases. A chair needs 2 hours of carpentry and 1 hour "
    "of finishing; a table needs 4 hours of carpentry and 2 hours of finishing; a bookcase needs 3 hours "
    "of carpentry and 3 hours of finishing. There are 200 carpentry hours and 120 finishing hours this "
    "month, and at most 20 tables can be sold. The profit is $30 per chair, $70 per table and $60 per "
    "bookcase. Only whole pieces of furniture can be made. How many of each should be built to maximize "
    "profit?"
)
FEED_MIX = (
    "A farmer mixes two feeds, A and B. Each kg of feed A gives 2 units of protein and 3 units of fiber "
    "and costs $0.40; each kg of feed B gives 4 units of protein and 1 unit of fiber and costs $0.60. The "
    "mix must contain at least 40 units of protein and at least 30 units of fiber. How many kg of each "
    "feed minimize the cost?"
)
PRODUCTION = (
    "A company makes desks and shelves. Each desk takes 3 hours of labor and 2 units of wood; each shelf "
    "takes 1 hour of labor and 2 units of wood. There are 120 labor hours and 100 units of wood. Desks "
    "earn $50 profit and shelves $30. How many of each should be made to maximize profit?"
)
MEAL = (
    "A hospital plans meals from rice and beans. Each serving of rice gives 4 grams of protein and 30 "
    "grams of carbohydrates and costs $0.50; each serving of beans gives 8 grams of protein and 20 grams "
    "of carbohydrates and costs $1.20. A meal must provide at least 60 grams of protein and at least 150 "
    "grams of carbohydrates. How many servings of each minimize the cost of a meal?"
)
# labels computed with HiGHS from hand-written formulations
PROBLEMS = [
    ("bakery", BAKERY, 120.0),
    ("furniture", FURNITURE, 3380.0),
    ("feed_mix", FEED_MIX, 6.8),
    ("production", PRODUCTION, 2200.0),
    ("meal", MEAL, 7.5),
]
MUST_SOLVE = {"bakery"}
AT_LEAST_CORRECT = 3


@pytest.fixture(scope="module")
def embedded(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LLMConfig]:
    """The embedded model started on demand, as `optitrace solve` does with nothing configured."""
    with pytest.MonkeyPatch.context() as patch:
        for name in ("OPENAI_BASE_URL", "OPENAI_API_KEY", "OPTITRACE_MODEL", "OPENAI_MODEL"):
            patch.delenv(name, raising=False)
        patch.setenv("OPTITRACE_CONFIG", str(tmp_path_factory.mktemp("cfg") / "none.toml"))
        config = endpoint.resolve_llm_config()
        try:
            yield config
        finally:
            endpoint.stop_own_server()


def test_textbook_problems_end_to_end(embedded: LLMConfig) -> None:
    rows: list[str] = []
    correct: set[str] = set()
    # No cache: this tier is evidence that the model formulates correctly now, not that it once did.
    with LLMClient(embedded, cache=False) as client:
        agent = ModelingAgent(client, AgentOptions(mode="agent"))
        for name, question, label in PROBLEMS:
            answer = agent.solve(question)
            solved = (
                answer.status == AnswerStatus.OPTIMAL
                and answer.objective is not None
                and near_equal(answer.objective, label)
                and answer.check is not None
                and answer.check.ok
                and answer.usage.calls >= 1
                and bool(answer.explanation)
            )
            if solved:
                correct.add(name)
            rows.append(
                f"{name:<11} {answer.status.value:<12} {answer.objective!s:<10} label {label:<7g} "
                f"repairs {answer.repair_rounds} calls {answer.usage.calls} {answer.seconds:.0f}s "
                f"{'ok' if solved else 'WRONG'}"
            )
    table = "\n".join(rows)
    print(f"\n{table}\n{len(correct)}/{len(PROBLEMS)} correct")
    assert correct >= MUST_SOLVE, table
    assert len(correct) >= AT_LEAST_CORRECT, table
