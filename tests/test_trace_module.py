"""Module / @model: parameter discovery, state dicts and JSON save/load (code included)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from trace_graph import Module, ParameterNode, bundle, graph_context, model, node


@pytest.fixture(autouse=True)
def fresh_names() -> Iterator[None]:
    with graph_context():
        yield


def shout(text: str) -> str:
    return text.upper()


class Formatter(Module):
    def __init__(self) -> None:
        self.suffix = node("!", trainable=True, description="appended to answers")


class Agent(Module):
    def __init__(self) -> None:
        self.prompt = node("You are helpful.", trainable=True, constraint="one sentence")
        self.temperature = node(0.2, name="temperature", trainable=True)
        self.question_style = node("short", name="style")  # not trainable: not a parameter
        self.formatter = Formatter()
        self.helpers = [Formatter(), {"loud": bundle(trainable=True)(shout)}]
        self.alias = self.prompt  # listed once, under its first name

    @bundle(trainable=True)
    def answer(self, question: str) -> str:
        """Answer a question."""
        return f"{self.prompt.value} {question}{self.formatter.suffix.value}"


def test_parameters_are_found_by_attribute_path() -> None:
    agent = Agent()
    names = [name for name, _ in agent.named_parameters()]
    assert names == [
        "answer.code",
        "prompt",
        "temperature",
        "formatter.suffix",
        "helpers.0.suffix",
        "helpers.1.loud.code",
    ]
    assert all(isinstance(parameter, ParameterNode) for parameter in agent.parameters())
    assert agent.parameters()[1] is agent.prompt


def test_unnamed_nodes_take_the_attribute_name() -> None:
    agent = Agent()
    assert agent.prompt.name == "prompt" and agent.formatter.suffix.name == "suffix"
    assert agent.question_style.name == "style"  # an explicit name is kept
    assert agent.answer.parameter.name == "answer.code"


def test_bundled_method_sees_the_module_parameters() -> None:
    agent = Agent()
    result = agent.answer("Why?")
    assert result.value == "You are helpful. Why?!"
    assert set(result.hidden_inputs) == {agent.answer.parameter, agent.prompt, agent.formatter.suffix}
    subgraph = result.backward("be more concise")
    assert set(subgraph.parameters) == {agent.answer.parameter, agent.prompt, agent.formatter.suffix}
    assert agent.temperature.feedback == []


def test_state_dict_round_trip() -> None:
    agent, other = Agent(), Agent()
    agent.prompt.value = "Be terse."
    agent.temperature.value = 0.7
    other.load_state_dict(agent.state_dict())
    assert other.prompt.value == "Be terse." and other.temperature.value == 0.7
    with pytest.raises(KeyError, match="missing"):
        other.load_state_dict({"prompt": "x"})
    other.load_state_dict({"prompt": "x"}, strict=False)
    assert other.prompt.value == "x"
    with pytest.raises(KeyError, match="unknown"):
        other.load_state_dict({**agent.state_dict(), "nonsense": 1})


def test_save_and_load_json_including_trained_code(tmp_path: Path) -> None:
    trained = Agent()
    trained.prompt.value = "Be terse."
    trained.temperature.value = [0.1, {"nested": True}]
    trained.answer.parameter.value = (
        "def answer(self, question):\n    return question[::-1] + self.formatter.suffix.value"
    )
    path = tmp_path / "agent.json"
    trained.save(path)

    document = json.loads(path.read_text())
    assert document["format"] == "optitrace.parameters/1"
    assert document["parameters"]["prompt"] == "Be terse."
    assert document["parameters"]["answer.code"] == [  # code as lines: readable and diffable
        "def answer(self, question):",
        "    return question[::-1] + self.formatter.suffix.value",
    ]
    assert path.read_text().count("\n") > 10  # indented, one value per line

    fresh = Agent()
    assert fresh.answer("abc").value == "You are helpful. abc!"
    fresh.load(path)
    assert fresh.state_dict() == trained.state_dict()
    assert fresh.answer("abc").value == "cba!"  # the loaded code is compiled and used
    assert Agent().answer("abc").value == "You are helpful. abc!"  # other instances keep theirs


def test_load_rejects_other_files(tmp_path: Path) -> None:
    path = tmp_path / "other.json"
    path.write_text(json.dumps({"prompt": "x"}))
    with pytest.raises(ValueError, match="not an OptiTrace parameter file"):
        Agent().load(path)


def test_save_refuses_values_json_cannot_hold(tmp_path: Path) -> None:
    agent = Agent()
    agent.temperature.value = {1, 2}
    with pytest.raises(TypeError, match="'temperature'"):
        agent.save(tmp_path / "agent.json")


def test_tuples_come_back_as_tuples(tmp_path: Path) -> None:
    agent = Agent()
    agent.temperature.value = (0.1, 0.2)
    agent.save(tmp_path / "agent.json")
    restored = Agent()
    restored.temperature.value = (0.0, 0.0)
    restored.load(tmp_path / "agent.json")
    assert restored.temperature.value == (0.1, 0.2)


def test_model_decorator() -> None:
    @model
    class Pipeline:
        """Doubles things."""

        def __init__(self) -> None:
            self.factor = node(2, trainable=True)

        @bundle(trainable=True)
        def run(self, x: int) -> int:
            return x * self.factor.value

    pipeline = Pipeline()
    assert isinstance(pipeline, Module) and Pipeline.__name__ == "Pipeline"
    assert Pipeline.__doc__ == "Doubles things."
    assert [name for name, _ in pipeline.named_parameters()] == ["run.code", "factor"]
    assert pipeline.run(3).value == 6 and pipeline.factor.name == "factor"


def test_cycles_between_modules_are_fine() -> None:
    parent = Formatter()
    child = Formatter()
    parent.child = child  # type: ignore[attr-defined]
    child.parent = parent  # type: ignore[attr-defined]
    assert [name for name, _ in parent.named_parameters()] == ["suffix", "child.suffix"]
