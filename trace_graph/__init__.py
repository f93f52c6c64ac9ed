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

# Optimizers and the trainer, loaded on first use: they import openai, rich and matplotlib, which
# would make `import trace_graph` several times slower for code that only records graphs.
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ below imports them
    from trace_graph.optimizers import OPRO as OPRO
    from trace_graph.optimizers import Optimizer as Optimizer
    from trace_graph.optimizers import OptoPrime as OptoPrime
    from trace_graph.optimizers import ParameterUpdate as ParameterUpdate
    from trace_graph.optimizers import StepResult as StepResult
    from trace_graph.trainer import EvalOutcome as EvalOutcome
    from trace_graph.trainer import Example as Example
    from trace_graph.trainer import StepRecord as StepRecord
    from trace_graph.trainer import Trainer as Trainer
    from trace_graph.trainer import TrainingHistory as TrainingHistory

_LAZY_EXPORTS = {
    "OPRO": "trace_graph.optimizers",
    "Optimizer": "trace_graph.optimizers",
    "OptoPrime": "trace_graph.optimizers",
    "ParameterUpdate": "trace_graph.optimizers",
    "StepResult": "trace_graph.optimizers",
    "EvalOutcome": "trace_graph.trainer",
    "Example": "trace_graph.trainer",
    "StepRecord": "trace_graph.trainer",
    "Trainer": "trace_graph.trainer",
    "TrainingHistory": "trace_graph.trainer",
}
__all__ += sorted(_LAZY_EXPORTS)


def __getattr__(name: str) -> object:
    if name in _LAZY_EXPORTS:
        import importlib

        value = getattr(importlib.import_module(_LAZY_EXPORTS[name]), name)
        globals()[name] = value  # later lookups skip this function
        return value
    raise AttributeError(f"module 'trace_graph' has no attribute {name!r}")
