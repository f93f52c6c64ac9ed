"""Views of a graph: a networkx DiGraph, DOT text, and an image through graphviz's ``dot`` binary."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterable
from pathlib import Path

import networkx as nx

from trace_graph.nodes import MessageNode, Node
from trace_graph.propagation import Subgraph, ancestors
from trace_graph.report import short_repr, unique_labels

GraphSource = Node | Subgraph | Iterable[Node]

_STYLE = {  # per node kind: shape, fill colour
    "parameter": ("box", "#fff2b3"),
    "input": ("box", "#e8e8e8"),
    "operation": ("ellipse", "#d6e9ff"),
    "exception": ("octagon", "#ffb3b3"),
}


def _nodes_of(source: GraphSource) -> list[Node]:
    if isinstance(source, Node):
        return ancestors(source)
    return list(source)


def to_networkx(source: GraphSource, value_limit: int = 40) -> nx.DiGraph:
    """A DiGraph keyed by the Node objects; edges run parent -> child.

    Node attributes: ``name`` (unique label), ``kind`` (parameter/input/operation/exception),
    ``value`` (short text) and ``operation`` (function name or None). Edge attribute ``argument`` is the
    argument name the parent was passed as, or None for a hidden input (code, a value read directly).
    ``source`` is an output node (drawn with all its ancestors), a Subgraph, or any nodes.
    """
    members = _nodes_of(source)
    labels = unique_labels(members)
    graph = nx.DiGraph()
    for member in members:
        graph.add_node(
            member,
            name=labels[member],
            kind=member.kind,
            value=short_repr(member._value, value_limit),
            operation=member.operation.name if isinstance(member, MessageNode) else None,
        )
    for member in members:
        arguments = {id(p): a for a, p in member.inputs.items()} if isinstance(member, MessageNode) else {}
        for parent in member.parents:
            if parent in graph:
                graph.add_edge(parent, member, argument=arguments.get(id(parent)))
    return graph


def _quote(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def to_dot(source: GraphSource, value_limit: int = 40) -> str:
    """DOT text of the graph (see ``to_networkx`` for ``source``)."""
    graph = to_networkx(source, value_limit)
    ids = {member: f"n{index}" for index, member in enumerate(graph.nodes)}
    lines = ["digraph trace {", "  rankdir=TB;", '  node [style=filled, fontname="Helvetica"];']
    for member, data in graph.nodes(data=True):
        shape, colour = _STYLE[data["kind"]]
        heading = data["name"]
        if data["operation"] is not None:
            heading += f" = {data['operation']}({', '.join(member.arg_names)})"
        label = f"{heading}\n{data['value']}"
        lines.append(f"  {ids[member]} [label={_quote(label)}, shape={shape}, fillcolor={_quote(colour)}];")
    for parent, child, data in graph.edges(data=True):
        argument = f" [label={_quote(data['argument'])}]" if data["argument"] else " [style=dashed]"
        lines.append(f"  {ids[parent]} -> {ids[child]}{argument};")
    lines.append("}")
    return "\n".join(lines) + "\n"


def render(source: GraphSource, path: str | Path = "graph.png", value_limit: int = 40) -> Path:
    """Draw the graph to ``path`` (format from its suffix: png, svg, pdf, ...) with graphviz's ``dot``."""
    executable = shutil.which("dot")
    if executable is None:
        raise RuntimeError(
            "rendering needs graphviz's `dot` program, which is not on PATH "
            "(install the graphviz system package, e.g. `apt-get install graphviz`); "
            "to_dot() gives the DOT text without it"
        )
    target = Path(path)
    image_format = target.suffix.lstrip(".") or "png"
    completed = subprocess.run(
        [executable, f"-T{image_format}", "-o", str(target)],
        input=to_dot(source, value_limit),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    if completed.returncode != 0:
        raise RuntimeError(f"dot failed to render {target}: {completed.stderr.strip()}")
    return target
