"""A compact, structured view of feedback subgraphs: what an optimizer shows its LLM.

``build_report(feedback_records)`` turns the subgraphs of one or more ``Feedback`` records into a
``SubgraphReport``: the operations as ``y = op(a=x, b=z)`` calls in execution order, each distinct
operation's docstring and source, the parameters (value, description, constraint, whether it is code),
the inputs (values the computation consumed but did not compute from a parameter), the intermediate
values ("others"), the outputs and the feedback texts. It is data, not a prompt: each optimizer writes
its own prompt from it. Values are truncated with ``short_repr`` so reports stay bounded on big graphs.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, PrivateAttr

from trace_graph.nodes import ExceptionNode, MessageNode, Node, Operation, ParameterNode
from trace_graph.propagation import Feedback


def short_repr(value: Any, limit: int | None = 200) -> str:
    """Text of a value (strings as they are, others as ``repr``), cut to about ``limit`` characters.

    The head and the tail are kept, since both ends of a long value tend to matter (a prompt's
    instruction, a log's last error): ``head... (N chars omitted) ...tail``.
    """
    text = value if isinstance(value, str) else repr(value)
    if limit is None or len(text) <= limit:
        return text
    head = limit - limit // 2
    tail = limit // 2
    omitted = len(text) - head - tail
    return f"{text[:head]}... ({omitted} chars omitted) ...{text[len(text) - tail :]}"


def unique_labels(nodes: Iterable[Node], first: Iterable[Node] = ()) -> dict[Node, str]:
    """A distinct label per node: its name, or ``name_2``, ... when nodes from different naming
    contexts share one. Nodes in ``first`` (the parameters) keep their names in priority."""
    labels: dict[Node, str] = {}
    taken: set[str] = set()
    for candidate in [*first, *nodes]:
        if candidate in labels:
            continue
        label, suffix = candidate.name, 2
        while label in taken:
            label, suffix = f"{candidate.name}_{suffix}", suffix + 1
        labels[candidate] = label
        taken.add(label)
    return labels


class ValueView(BaseModel):
    name: str
    type_name: str
    value: str  # possibly truncated, see short_repr
    description: str | None = None


class ParameterView(ValueView):
    constraint: str | None = None
    is_code: bool = False  # the value is the source code of a trainable bundled function


class OperationCall(BaseModel):
    """One recorded call: ``output = operation(argument=input, ...)``."""

    output: str
    operation: str
    arguments: dict[str, str]  # argument name -> label of the node passed
    reads: list[str]  # labels of other parents: the code parameter, nodes the body read itself
    error: str | None = None  # "(ErrType) message" when the call failed
    annotated_source: str | None = None  # the source with the failing line marked `<--- (ErrType) ...`

    def call(self) -> str:
        arguments = ", ".join(f"{name}={label}" for name, label in self.arguments.items())
        text = f"{self.output} = {self.operation}({arguments})"
        return f"{text}  # also uses: {', '.join(self.reads)}" if self.reads else text


class OperationDoc(BaseModel):
    name: str
    signature: str
    description: str
    source: str | None


class FeedbackView(BaseModel):
    output: str
    text: str


class SubgraphReport(BaseModel):
    operations: list[OperationCall]  # in execution order
    documentation: list[OperationDoc]  # one per distinct operation (and code version)
    parameters: list[ParameterView]
    inputs: list[ValueView]
    others: list[ValueView]
    outputs: list[ValueView]
    feedback: list[FeedbackView]
    _parameter_nodes: dict[str, ParameterNode] = PrivateAttr(default_factory=dict)

    def parameter_node(self, name: str) -> ParameterNode:
        """The parameter a suggestion names (optimizers map LLM answers back through this)."""
        try:
            return self._parameter_nodes[name]
        except KeyError:
            raise KeyError(f"no parameter named {name!r}; known: {sorted(self._parameter_nodes)}") from None


def build_report(
    feedback: Feedback | Iterable[Feedback],
    parameters: Iterable[ParameterNode] | None = None,
    *,
    value_limit: int | None = 200,
    code_limit: int | None = None,
) -> SubgraphReport:
    """Merge the subgraphs of the feedback records and describe them.

    ``parameters``: the ones being optimized (default: every trainable parameter in the subgraphs);
    the others are shown as inputs, and operations not reached from these parameters are left out.
    """
    records = [feedback] if isinstance(feedback, Feedback) else list(feedback)
    union = {member for record in records for member in record.subgraph.nodes}
    order = sorted(union, key=lambda member: member.sequence)  # creation order is topological
    if parameters is None:
        chosen = {m for m in order if isinstance(m, ParameterNode) and m.trainable}
    else:
        chosen = set(parameters)

    computed: set[Node] = set()  # on a path from a chosen parameter
    for member in order:
        if member in chosen or any(parent in computed for parent in member.parents):
            computed.add(member)
    shown = set(computed)
    for member in computed:
        shown.update(member.parents)
    order = [member for member in order if member in shown]

    chosen_in_order = [m for m in order if m in chosen]
    labels = unique_labels(order, first=chosen_in_order)
    output_nodes = {record.output for record in records if record.output in computed}

    def view(member: Node) -> ValueView:
        return ValueView(
            name=labels[member],
            type_name=type(member._value).__name__,
            value=short_repr(member._value, value_limit),
            description=member.description,
        )

    operations: list[OperationCall] = []
    documentation: dict[int, OperationDoc] = {}
    inputs: list[ValueView] = []
    others: list[ValueView] = []
    outputs: list[ValueView] = []
    parameter_views: list[ParameterView] = []
    for member in order:
        if member in chosen:
            assert isinstance(member, ParameterNode)
            limit = code_limit if member.is_code else value_limit
            parameter_views.append(
                ParameterView(
                    **view(member).model_dump(exclude={"value"}),
                    value=short_repr(member._value, limit),
                    constraint=member.constraint,
                    is_code=member.is_code,
                )
            )
        elif member in computed and isinstance(member, MessageNode):
            operations.append(_call(member, labels))
            _document(member.operation, documentation)
            (outputs if member in output_nodes else others).append(view(member))
        else:
            inputs.append(view(member))

    report = SubgraphReport(
        operations=operations,
        documentation=list(documentation.values()),
        parameters=parameter_views,
        inputs=inputs,
        others=others,
        outputs=outputs,
        feedback=[
            FeedbackView(output=labels.get(record.output, record.output.name), text=record.text)
            for record in records
        ],
    )
    report._parameter_nodes = {labels[p]: p for p in chosen_in_order}  # type: ignore[misc]
    return report


def _call(member: MessageNode, labels: dict[Node, str]) -> OperationCall:
    failed = isinstance(member, ExceptionNode)
    return OperationCall(
        output=labels[member],
        operation=member.operation.name,
        arguments={name: labels[value] for name, value in member.inputs.items()},
        reads=[labels[hidden] for hidden in member.hidden_inputs],
        error=member._value if failed else None,
        annotated_source=member.annotated_source if failed else None,
    )


def _document(operation: Operation, documentation: dict[int, OperationDoc]) -> None:
    if id(operation) not in documentation:
        documentation[id(operation)] = OperationDoc(
            name=operation.name,
            signature=operation.signature,
            description=operation.description,
            source=operation.source,
        )
