"""backward(): who gets feedback, the minimal subgraph, the optimizer's report and the graph views."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import networkx as nx
import pytest

from trace_graph import (
    ExceptionNode,
    Feedback,
    Node,
    ParameterNode,
    build_report,
    bundle,
    graph_context,
    minimal_subgraph,
    node,
    render,
    to_dot,
    to_networkx,
)


@pytest.fixture(autouse=True)
def fresh_names() -> Iterator[None]:
    with graph_context():
        yield


@bundle
def add(a: float, b: float) -> float:
    """Add a and b."""
    return a + b


@bundle
def multiply(a: float, b: float) -> float:
    """Multiply a by b."""
    return a * b


def names(nodes: tuple[Node, ...] | list[Node]) -> list[str]:
    return [member.name for member in nodes]


def test_chain_feedback_reaches_the_parameter_once() -> None:
    start = node(1.0, name="start", trainable=True)
    current: Node = start
    for _ in range(3):
        current = add(current, 1.0)
    subgraph = current.backward("should be 10")
    assert len(start.feedback) == 1
    record = start.feedback[0]
    assert isinstance(record, Feedback)
    assert (record.text, record.output, record.subgraph) == ("should be 10", current, subgraph)
    assert subgraph.parameters == (start,)
    assert names(subgraph.nodes) == ["start", "b", "add", "b_1", "add_1", "b_2", "add_2"]
    assert len(subgraph.edges()) == 6


def test_very_deep_chain_does_not_recurse() -> None:
    start = node(0, name="start", trainable=True)
    current: Node = start
    for _ in range(5000):
        current = add(current, 1)
    subgraph = current.backward("too small")
    assert len(subgraph) == 10001 and subgraph.nodes[0] is start and subgraph.nodes[-1] is current


def test_diamond_gives_one_record_with_the_union_of_paths() -> None:
    weight = node(2.0, name="weight", trainable=True)
    left = add(weight, 1.0)
    right = multiply(weight, 3.0)
    joined = add(left, right)
    subgraph = joined.backward("too big")
    assert len(weight.feedback) == 1
    assert set(subgraph.nodes) == {weight, left, right, joined, left.parents[1], right.parents[1]}
    assert subgraph.nodes[0] is weight and subgraph.nodes[-1] is joined
    position = {member: index for index, member in enumerate(subgraph.nodes)}
    assert all(position[parent] < position[child] for parent, child in subgraph.edges())


def test_fan_in_reaches_every_parameter_and_only_those() -> None:
    first = node(1.0, name="first", trainable=True)
    second = node(2.0, name="second", trainable=True)
    unrelated = node(3.0, name="unrelated", trainable=True)
    frozen = ParameterNode(4.0, name="frozen", trainable=False)
    total = add(add(first, second), frozen)
    add(unrelated, 1.0).backward("another output")  # feedback on another output does not leak
    total.backward("should be 0")
    assert [record.text for record in first.feedback] == ["should be 0"]
    assert first.feedback[0] is second.feedback[0]
    assert [record.text for record in unrelated.feedback] == ["another output"]
    assert frozen.feedback == []
    assert set(total.backward("again").parameters) == {first, second}


def test_subgraph_is_minimal() -> None:
    weight = node(1.0, name="weight", trainable=True)
    raw = node(5.0, name="raw")
    # A computation with no parameter: only its result appears, as an input of the parameter's path.
    preprocessed = multiply(add(raw, 1.0), 2.0)
    # A branch from the parameter that does not reach the output.
    dead_end = add(weight, 100.0)
    output = add(multiply(weight, preprocessed), 0.5)
    subgraph = output.backward("too small")
    assert preprocessed in subgraph and raw not in subgraph and dead_end not in subgraph
    assert names(subgraph.nodes) == ["weight", "multiply", "multiply_1", "b_3", "add_2"]


def test_no_parameter_means_no_feedback() -> None:
    output = add(1.0, 2.0)
    subgraph = output.backward("anything")
    assert subgraph.nodes == () and subgraph.parameters == ()


def test_feedback_accumulates_until_zeroed() -> None:
    weight = node(1.0, name="weight", trainable=True)
    add(weight, 1.0).backward("first")
    add(weight, 2.0).backward("second")
    assert [record.text for record in weight.feedback] == ["first", "second"]
    weight.zero_feedback()
    assert weight.feedback == []


def test_feedback_must_be_text() -> None:
    with pytest.raises(TypeError, match="text"):
        add(node(1.0, trainable=True), 1.0).backward(3)  # type: ignore[arg-type]


def test_exception_node_sends_its_error_to_the_code() -> None:
    @bundle(trainable=True)
    def risky(x: float) -> float:
        return 1 / x

    failed = risky(add(node(1.0, name="w", trainable=True), -1.0))
    assert isinstance(failed, ExceptionNode)
    failed.backward()
    (record,) = risky.parameter.feedback
    assert "return 1 / x  <--- (ZeroDivisionError) float division by zero" in record.text
    assert record.subgraph.parameters[0].name == "w"


def test_minimal_subgraph_for_chosen_parameters() -> None:
    first = node(1.0, name="first", trainable=True)
    second = node(2.0, name="second", trainable=True)
    output = add(multiply(first, 3.0), add(second, 4.0))
    subgraph = minimal_subgraph(output, parameters=[second])
    assert subgraph.parameters == (second,)
    assert names(subgraph.nodes) == ["multiply", "second", "b_1", "add", "add_1"]


# -- the report optimizers read ---------------------------------------------------------------------


def test_report_lists_code_parameters_inputs_others_outputs() -> None:
    weight = node(5, name="a", trainable=True, constraint="a > 0", description="the first term")
    y = add(weight, node(1, name="b"))
    z = multiply(y, node(5, name="c"))
    z.backward("The result should be 10")
    report = build_report(weight.feedback)
    assert [operation.call() for operation in report.operations] == [
        "add = add(a=a, b=b)",
        "multiply = multiply(a=add, b=c)",
    ]
    assert [(doc.name, doc.description) for doc in report.documentation] == [
        ("add", "Add a and b."),
        ("multiply", "Multiply a by b."),
    ]
    assert "return a + b" in report.documentation[0].source
    (parameter,) = report.parameters
    assert (parameter.name, parameter.type_name, parameter.value) == ("a", "int", "5")
    assert (parameter.constraint, parameter.description) == ("a > 0", "the first term")
    assert not parameter.is_code
    assert [(view.name, view.value) for view in report.inputs] == [("b", "1"), ("c", "5")]
    assert [(view.name, view.value) for view in report.others] == [("add", "6")]
    assert [(view.name, view.value) for view in report.outputs] == [("multiply", "30")]
    assert [(view.output, view.text) for view in report.feedback] == [("multiply", "The result should be 10")]
    assert report.parameter_node("a") is weight
    with pytest.raises(KeyError, match="known"):
        report.parameter_node("b")
    assert report.model_dump()["operations"][0]["arguments"] == {"a": "a", "b": "b"}


def test_report_shows_code_and_failures() -> None:
    @bundle(trainable=True)
    def parse(text: str) -> int:
        """Read a number."""
        return int(text)

    failed = parse("twelve")
    failed.backward()
    report = build_report(parse.parameter.feedback)
    (code,) = report.parameters
    assert code.is_code and code.name == "parse.code"
    assert code.value.startswith("def parse(text: str) -> int:")
    (operation,) = report.operations
    assert operation.reads == ["parse.code"]
    assert operation.call() == "parse = parse(text=text)  # also uses: parse.code"
    assert operation.error.startswith("(ValueError) invalid literal")
    assert "return int(text)  <--- (ValueError)" in operation.annotated_source


def test_report_merges_a_batch_and_keeps_labels_unique() -> None:
    weight = node(2.0, name="weight", trainable=True)
    outputs = []
    for example in (1.0, 2.0):
        with graph_context():  # each example names its nodes afresh: `x`, `add` again
            outputs.append(add(multiply(weight, node(example, name="x")), 1.0))
    for output, text in zip(outputs, ("first", "second"), strict=True):
        output.backward(text)
    report = build_report(weight.feedback)
    assert [view.text for view in report.feedback] == ["first", "second"]
    assert [operation.call() for operation in report.operations] == [
        "multiply = multiply(a=weight, b=x)",
        "add = add(a=multiply, b=b)",
        "multiply_2 = multiply(a=weight, b=x_2)",
        "add_2 = add(a=multiply_2, b=b_2)",
    ]
    assert [view.name for view in report.outputs] == ["add", "add_2"] and report.others[0].name == "multiply"


def test_report_for_a_subset_of_parameters_shows_the_rest_as_inputs() -> None:
    first = node(1.0, name="first", trainable=True)
    second = node(2.0, name="second", trainable=True)
    output = add(multiply(first, 3.0), second)
    output.backward("lower")
    report = build_report(first.feedback, parameters=[first])
    assert [view.name for view in report.parameters] == ["first"]
    assert [view.name for view in report.inputs] == ["second", "b"]


def test_report_truncates_long_values_but_not_code() -> None:
    weight = node("w" * 5000, name="prompt", trainable=True)
    add(weight, "!" * 3000).backward("shorter")
    report = build_report(weight.feedback, value_limit=100)
    assert len(report.parameters[0].value) < 150 and "chars omitted" in report.parameters[0].value
    assert len(report.outputs[0].value) < 150


# -- graph views ------------------------------------------------------------------------------------


def test_to_networkx_has_named_attributes() -> None:
    weight = node(2.0, name="weight", trainable=True)
    output = add(weight, 3.0)
    graph = to_networkx(output)
    assert isinstance(graph, nx.DiGraph) and nx.is_directed_acyclic_graph(graph)
    assert graph.nodes[weight] == {"name": "weight", "kind": "parameter", "value": "2.0", "operation": None}
    assert graph.nodes[output]["kind"] == "operation" and graph.nodes[output]["operation"] == "add"
    assert graph.edges[weight, output]["argument"] == "a"
    assert set(graph.predecessors(output)) == set(output.parents)


def test_to_dot_describes_nodes_and_edges() -> None:
    weight = node('say "hi"', name="weight", trainable=True)
    output = add(weight, "!")
    dot = to_dot(output.backward("ok"))
    assert dot.startswith("digraph trace {") and dot.rstrip().endswith("}")
    assert 'label="weight\\nsay \\"hi\\""' in dot and "add = add(a, b)" in dot
    assert dot.count("->") == 2 and 'label="a"' in dot


@pytest.mark.skipif(shutil.which("dot") is None, reason="graphviz `dot` is not installed")
def test_render_and_visualize_write_images(tmp_path: Path) -> None:
    weight = node(2.0, name="weight", trainable=True)
    output = add(weight, 3.0)
    image = render(output, path=tmp_path / "graph.png")
    assert image.read_bytes().startswith(b"\x89PNG")
    subgraph = output.backward("ok", visualize=tmp_path / "backward.svg")
    assert subgraph.image_path is not None and b"<svg" in subgraph.image_path.read_bytes()


def test_render_without_dot_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", "")
    with pytest.raises(RuntimeError, match="graphviz"):
        render(add(1, 2), path="unused.png")
