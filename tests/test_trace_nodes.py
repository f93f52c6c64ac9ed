"""Nodes, naming contexts, thread isolation and memory release."""

from __future__ import annotations

import gc
import threading
import weakref
from collections.abc import Iterator

import pytest

from trace_graph import (
    ExceptionNode,
    MessageNode,
    Node,
    ParameterNode,
    bundle,
    graph_context,
    node,
    short_repr,
)


@pytest.fixture(autouse=True)
def fresh_names() -> Iterator[None]:
    with graph_context():
        yield


@bundle
def increment(x: int) -> int:
    """Add one."""
    return x + 1


@bundle
def divide(a: float, b: float) -> float:
    return a / b


def test_node_kinds_and_fields() -> None:
    plain = node(3, name="count", description="how many")
    assert type(plain) is Node
    assert (plain.value, plain.name, plain.description, plain.parents) == (3, "count", "how many", ())
    assert plain.kind == "input"

    weight = node(0.5, name="weight", trainable=True, constraint="between 0 and 1")
    assert isinstance(weight, ParameterNode)
    assert weight.trainable and weight.constraint == "between 0 and 1" and weight.feedback == []
    assert weight.kind == "parameter" and not weight.is_code


def test_node_of_a_node_is_the_same_node() -> None:
    original = node("text", name="t")
    assert node(original) is original


def test_constraint_requires_trainable() -> None:
    with pytest.raises(ValueError, match="trainable"):
        node(1, constraint="positive")


def test_only_parameters_can_be_assigned() -> None:
    weight = node(1.0, name="w", trainable=True)
    weight.value = 2.0
    assert weight.value == 2.0
    with pytest.raises(AttributeError):
        node(1.0, name="c").value = 2.0  # type: ignore[misc]


def test_names_are_human_and_deduplicated_within_a_context() -> None:
    assert [node(i, name="y").name for i in range(3)] == ["y", "y_1", "y_2"]
    # No type-derived names such as `int0`: a neutral word until something better is known.
    assert node(1).name == "value" and node(2, trainable=True).name == "parameter"
    assert increment(1).name == "increment" and increment(2).name == "increment_1"
    with graph_context():
        assert node(0, name="y").name == "y"  # a fresh context starts over
    assert node(0, name="y").name == "y_3"


def test_threads_have_separate_naming_and_graphs() -> None:
    results: dict[str, list[str]] = {}
    barrier = threading.Barrier(2)

    def build(label: str) -> None:
        barrier.wait()
        names = []
        parameter = node(0, name="p", trainable=True)
        current: Node = parameter
        for _ in range(300):
            current = increment(current)
            names.append(current.name)
        current.backward(f"feedback from {label}")
        assert [record.text for record in parameter.feedback] == [f"feedback from {label}"]
        assert parameter.feedback[0].subgraph.nodes[0] is parameter
        results[label] = [parameter.name, *names]

    threads = [threading.Thread(target=build, args=(label,)) for label in ("a", "b")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    expected = ["p", "increment", *[f"increment_{i}" for i in range(1, 300)]]
    assert results == {"a": expected, "b": expected}


def test_graph_is_freed_when_the_output_is_dropped() -> None:
    gc.disable()  # freed by reference counting alone: the graph holds no cycles
    try:
        parameter = node(1, name="p", trainable=True)
        middle = increment(parameter)
        output = increment(middle)
        failed = divide(output, 0)
        assert isinstance(failed, ExceptionNode)
        refs = [weakref.ref(n) for n in (middle, output, failed)]
        del middle, output, failed
        assert all(ref() is None for ref in refs)
        assert parameter.value == 1  # parameters live as long as their owner keeps them
    finally:
        gc.enable()


def test_feedback_keeps_the_graph_until_zeroed() -> None:
    gc.disable()
    try:
        parameter = node(1, name="p", trainable=True)
        output = increment(parameter)
        ref = weakref.ref(output)
        output.backward("too small")
        del output
        assert ref() is not None  # the feedback record holds the subgraph for the optimizer
        parameter.zero_feedback()
        assert ref() is None
    finally:
        gc.enable()


def test_message_node_repr_is_short() -> None:
    result = increment(node(10**300, name="huge"))
    assert isinstance(result, MessageNode)
    text = repr(result)
    assert text.startswith("MessageNode(name='increment'") and "chars omitted" in text and len(text) < 150


def test_short_repr_keeps_head_and_tail() -> None:
    assert short_repr("abc", 10) == "abc"
    assert short_repr([1, 2], None) == "[1, 2]"
    text = short_repr("H" * 50 + "x" * 1000 + "T" * 50, 100)
    assert text.startswith("H" * 50) and text.endswith("T" * 50)
    assert "... (1000 chars omitted) ..." in text
