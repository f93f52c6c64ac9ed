"""A Trace-style execution graph: nodes, @bundle, feedback propagation and LLM optimizers."""

from trace_graph.bundle import Bundle, bundle
from trace_graph.context import GraphContext, graph_context
from trace_graph.module import Module, model
from trace_graph.nodes import (
    ExceptionNode,
    ExecutionError,
    MessageNode,
    Node,
    Operation,
    ParameterNode,
    node,
)
from trace_graph.propagation import Feedback, Subgraph, ancestors, minimal_subgraph
from trace_graph.render import render, to_dot, to_networkx
from trace_graph.report import (
    FeedbackView,
    OperationCall,
    OperationDoc,
    ParameterView,
    SubgraphReport,
    ValueView,
    build_report,
    short_repr,
)

__all__ = [
    "Bundle",
    "ExceptionNode",
    "ExecutionError",
    "Feedback",
    "FeedbackView",
    "GraphContext",
    "MessageNode",
    "Module",
    "Node",
    "Operation",
    "OperationCall",
    "OperationDoc",
    "ParameterNode",
    "ParameterView",
    "Subgraph",
    "SubgraphReport",
    "ValueView",
    "ancestors",
    "build_report",
    "bundle",
    "graph_context",
    "minimal_subgraph",
    "model",
    "node",
    "render",
    "short_repr",
    "to_dot",
    "to_networkx",
]
