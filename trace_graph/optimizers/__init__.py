"""LLM optimizers: OptoPrime (reads the graph as pseudo-code), OPRO (a value/score history) and
Lessons (adds one general rule per step, for small models)."""

from trace_graph.optimizers.base import Optimizer, ParameterUpdate, StepResult, reply_model
from trace_graph.optimizers.lessons import LessonReply, Lessons, with_lesson
from trace_graph.optimizers.opro import OPRO, HistoryEntry, score_in_feedback
from trace_graph.optimizers.optoprime import SECTION_TITLES, Attempt, OptoPrime
from trace_graph.optimizers.prompt import Section, render_sections, split_sections

__all__ = [
    "OPRO",
    "SECTION_TITLES",
    "Attempt",
    "HistoryEntry",
    "LessonReply",
    "Lessons",
    "Optimizer",
    "OptoPrime",
    "ParameterUpdate",
    "Section",
    "StepResult",
    "render_sections",
    "reply_model",
    "score_in_feedback",
    "split_sections",
    "with_lesson",
]
