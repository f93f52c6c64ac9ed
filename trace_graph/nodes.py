"""The nodes of an execution graph.

* ``Node``: a value with a human name; leaves are inputs ("constants" of one run).
* ``ParameterNode``: a value the optimizer may change (a prompt, a number, a function's source code),
  with an optional constraint in words and the feedback it has received.
* ``MessageNode``: the result of one bundled operation; remembers the operation (name, docstring,
  source) and its inputs by argument name.
* ``ExceptionNode``: the result of an operation that raised; its value is ``"(ErrType) message"`` and
  it keeps the source with the failing line marked, so an optimizer sees where the workflow broke.

A node references its parents and nothing else: no children, no registry. Dropping the output of a
run frees the whole run's graph (parameters stay alive through whoever owns them).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trace_graph.context import _active_reads, current_context, next_sequence_number

if TYPE_CHECKING:
    from trace_graph.propagation import Feedback, Subgraph


class Node:
    """A value in the graph. Read it with ``.value``; a leaf node is an input of the run."""

    __slots__ = ("__weakref__", "_auto_named", "_value", "description", "name", "parents", "sequence")

    def __init__(
        self,
        value: Any,
        name: str | None = None,
        description: str | None = None,
        parents: tuple[Node, ...] = (),
    ) -> None:
        self._value = value
        self._auto_named = name is None
        self.name = current_context().unique_name(name or self._default_name())
        self.description = description
        self.parents = parents
        self.sequence = next_sequence_number()  # creation order == a topological order

    def _default_name(self) -> str:
        # Deliberately not the type ("float0"): a neutral word, replaced by the attribute name when the
        # node is assigned to a Module, or by the argument name when a bundle wraps a plain value.
        return "value"

    @property
    def value(self) -> Any:
        # Reads inside a running bundled function make this node a (hidden) input of that operation.
        reads = _active_reads.get()
        if reads is not None:
            reads[self] = None
        return self._value

    @property
    def kind(self) -> str:
        return "input"

    def backward(self, feedback: str, *, visualize: bool | str | Path = False) -> Subgraph:
        """Send ``feedback`` to every trainable parameter this node depends on.

        Each such parameter gets one ``Feedback`` record holding the text, this node and the minimal
        subgraph connecting the parameters to this node. Records accumulate until ``zero_feedback()``.
        ``visualize`` (True or an image path) also renders that subgraph with graphviz; the image path
        is then ``subgraph.image_path``.
        """
        from trace_graph.propagation import backward  # propagation imports this module

        return backward(self, feedback, visualize=visualize)

    def __repr__(self) -> str:
        from trace_graph.report import short_repr

        return f"{type(self).__name__}(name={self.name!r}, value={short_repr(self._value, 60)})"


class ParameterNode(Node):
    """A value the optimizer may rewrite. ``constraint`` tells it, in words, what values are allowed."""

    __slots__ = ("constraint", "feedback", "is_code", "trainable")

    def __init__(
        self,
        value: Any,
        name: str | None = None,
        description: str | None = None,
        constraint: str | None = None,
        trainable: bool = True,
        is_code: bool = False,
    ) -> None:
        super().__init__(value, name, description)
        self.trainable = trainable
        self.constraint = constraint
        self.is_code = is_code  # the source code of a trainable bundled function
        self.feedback: list[Feedback] = []

    def _default_name(self) -> str:
        return "parameter"

    @Node.value.setter
    def value(self, new_value: Any) -> None:
        # For code parameters the bundled function notices the new source on its next call.
        self._value = new_value

    @property
    def kind(self) -> str:
        return "parameter"

    def zero_feedback(self) -> None:
        self.feedback.clear()


@dataclass(frozen=True, slots=True)
class Operation:
    """What a bundled function is; shared by every node its calls produce (one per code version)."""

    name: str
    docstring: str
    source: str | None
    signature: str
    description: str


class MessageNode(Node):
    """The output of one call of a bundled function."""

    __slots__ = ("arg_names", "operation")

    def __init__(
        self,
        value: Any,
        operation: Operation,
        parents: tuple[Node, ...],
        arg_names: tuple[str, ...],
        name: str | None = None,
    ) -> None:
        super().__init__(value, name or operation.name, operation.description, parents)
        self.operation = operation
        # parents[:len(arg_names)] are the call's arguments, in order; the remaining parents are the
        # code parameter and nodes the body read directly (e.g. ``self.prompt``).
        self.arg_names = arg_names

    @property
    def inputs(self) -> dict[str, Node]:
        """The call's arguments by argument name (plain values were wrapped as nodes so named)."""
        return dict(zip(self.arg_names, self.parents, strict=False))

    @property
    def hidden_inputs(self) -> list[Node]:
        """Parents that were not arguments: the code parameter and nodes the body read itself."""
        return list(self.parents[len(self.arg_names) :])

    @property
    def kind(self) -> str:
        return "operation"


class ExceptionNode(MessageNode):
    """The output of a call that raised (or could not run). Its value is ``"(ErrType) message"``."""

    __slots__ = ("_origin", "annotated_source", "error_type", "message", "traceback")

    def __init__(
        self,
        operation: Operation,
        parents: tuple[Node, ...],
        arg_names: tuple[str, ...],
        error_type: str,
        message: str,
        annotated_source: str | None,
        traceback: str,
        origin: ExceptionNode | None = None,
    ) -> None:
        super().__init__(f"({error_type}) {message}", operation, parents, arg_names)
        self.error_type = error_type
        self.message = message
        self.annotated_source = annotated_source  # the source with `<--- (ErrType) message` marks
        self.traceback = traceback
        # A call that received a failed input is not run; it points at the call that really failed.
        # (None rather than `self` for the call that failed: a self-reference would need the cycle GC.)
        self._origin = origin

    @property
    def kind(self) -> str:
        return "exception"

    @property
    def origin(self) -> ExceptionNode:
        """The call that actually raised (this node, unless an input had already failed)."""
        return self._origin or self

    def explanation(self) -> str:
        """The error and where it happened: the default feedback for ``backward()``."""
        origin = self.origin
        if origin is self:
            text = f"Calling `{self.operation.name}` raised {self._value}"
        else:
            text = f"`{self.operation.name}` failed because `{origin.operation.name}` raised {origin._value}"
        if origin.annotated_source:
            text += f"\nThe failing line of `{origin.operation.name}` is marked with <---:\n"
            text += origin.annotated_source
        if origin is not self and self.annotated_source:  # a nested call: where the outer one made it
            text += f"\n`{self.operation.name}` made that call here:\n{self.annotated_source}"
        return text

    def backward(  # type: ignore[override]
        self, feedback: str | None = None, *, visualize: bool | str | Path = False
    ) -> Subgraph:
        """Like ``Node.backward``; without feedback text, the error explanation is sent."""
        return super().backward(self.explanation() if feedback is None else feedback, visualize=visualize)


class ExecutionError(Exception):
    """Raised by bundled functions with ``catch_execution_error=False``; carries the exception node.

    ``error.node.backward()`` sends the annotated error to the parameters (e.g. the code) at fault.
    """

    def __init__(self, node: ExceptionNode) -> None:
        super().__init__(node.explanation())
        self.node = node


def node(
    value: Any,
    name: str | None = None,
    trainable: bool = False,
    description: str | None = None,
    constraint: str | None = None,
) -> Node:
    """Wrap a value: a ``ParameterNode`` if ``trainable``, else an input ``Node``.

    A node passed in is returned unchanged, so functions can accept values and nodes alike.
    """
    if isinstance(value, Node):
        return value
    if trainable:
        return ParameterNode(value, name, description, constraint)
    if constraint is not None:
        raise ValueError("a constraint only makes sense on a trainable node")
    return Node(value, name, description)
