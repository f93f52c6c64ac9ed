"""OPRO ("Large Language Models as Optimizers", Yang et al. 2023) as a baseline optimizer.

It ignores the graph: the prompt lists earlier values of the parameters with their scores, worst
first and best last (the paper found the best solutions closest to the question work best), then
the latest feedback, and asks for new values that score higher. Use it when the feedback is mostly
a number.

Scores come from ``observe_score()`` (the trainer reports each minibatch's mean score) or, failing
that, from the feedback text (``score: 0.75``, ``score = 3``); values without a score are listed
first, as the least informative.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable
from statistics import fmean
from typing import Any

from pydantic import BaseModel

from trace_graph.llm import ChatMessage, LLMClient
from trace_graph.module import Module
from trace_graph.nodes import ParameterNode
from trace_graph.optimizers.base import OUTPUT_FORMATS, Optimizer, ReplyFormat
from trace_graph.optimizers.prompt import Section, render_sections
from trace_graph.report import short_repr

_SCORE = re.compile(r"\bscore\b\s*(?:is|=|:)?\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)", re.IGNORECASE)

SYSTEM_PROMPT = """\
You are an optimizer. You see variables, earlier values of them with the score each got, and \
feedback on the latest values. Propose new values that score better than every earlier one and \
differ from all of them. Keep each value's type.
"""


class HistoryEntry(BaseModel):
    """Values of the parameters (by key) and what they got."""

    values: dict[str, Any]
    score: float | None
    feedback: str = ""


def score_in_feedback(texts: Iterable[str]) -> float | None:
    """The mean of the ``score: N`` figures written in the texts, if any."""
    found = [float(match.group(1)) for text in texts for match in _SCORE.finditer(text)]
    return fmean(found) if found else None


class OPRO(Optimizer):
    """``OPRO(parameters, llm, history_size=20, maximize=True)``."""

    def __init__(
        self,
        parameters: Module | Iterable[ParameterNode],
        llm: LLMClient | None = None,
        *,
        objective: str | None = None,
        history_size: int = 20,
        maximize: bool = True,
        prompt_budget: int = 8_000,
        value_limit: int = 500,
        feedback_limit: int = 1_000,
        temperature: float | None = None,
        max_tokens: int | None = None,
        reply_format: ReplyFormat = "json",
    ) -> None:
        super().__init__(
            parameters, llm, temperature=temperature, max_tokens=max_tokens, reply_format=reply_format
        )
        self.objective = objective
        self.history_size = history_size
        self.maximize = maximize
        self.prompt_budget = prompt_budget
        self.value_limit = value_limit
        self.feedback_limit = feedback_limit
        self._entries: list[HistoryEntry] = []
        self._observed: list[float] = []
        self._latest_feedback = ""

    def observe_score(self, score: float) -> None:
        self._observed.append(float(score))

    @property
    def history(self) -> list[HistoryEntry]:
        """Kept entries, worst first and best last (unscored ones first)."""
        return sorted(self._entries, key=self._rank)

    def _rank(self, entry: HistoryEntry) -> tuple[int, float]:
        if entry.score is None:
            return (0, 0.0)
        return (1, entry.score if self.maximize else -entry.score)

    def memory_state(self) -> dict[str, Any]:
        return {
            "history": [entry.model_dump(mode="json") for entry in self._entries],
            "observed": list(self._observed),
            "latest_feedback": self._latest_feedback,
        }

    def load_memory_state(self, state: dict[str, Any]) -> None:
        self._entries = [HistoryEntry.model_validate(entry) for entry in state.get("history", [])]
        self._observed = [float(score) for score in state.get("observed", [])]
        self._latest_feedback = str(state.get("latest_feedback", ""))

    def record(self, score: float | None, feedback: str = "") -> HistoryEntry:
        """Add the current values with their score; the same values seen again keep the newer score."""
        values = {key: copy.deepcopy(parameter._value) for key, parameter in self._keys.items()}
        entry = HistoryEntry(values=values, score=score, feedback=feedback)
        self._latest_feedback = feedback
        self._entries = [old for old in self._entries if old.values != values]
        self._entries.append(entry)
        self._entries = self.history[-self.history_size :] if self.history_size > 0 else []
        return entry

    def construct_prompt(self) -> list[ChatMessage]:
        """The messages for the current history (what ``step()`` sends after recording)."""
        labelled = {key: parameter for key, parameter in self._keys.items()}
        direction = "higher" if self.maximize else "lower"
        described = []
        for key, parameter in labelled.items():
            parts = [f"({type(parameter._value).__name__}) {key}"]
            if parameter.description:
                parts.append(parameter.description)
            if parameter.constraint:
                parts.append(f"Constraint: {parameter.constraint}")
            described.append(short_repr(" ".join(parts), self.value_limit))
        entries = []
        for entry in self.history:
            values = "; ".join(
                f"{key}={short_repr(value, self.value_limit)}" for key, value in entry.values.items()
            )
            score = "no score" if entry.score is None else f"score: {entry.score:g}"
            entries.append(f"{values}\n  {score}")
        latest = self._latest_feedback
        instruction = f"Find values with a {direction} score than all earlier ones." + (
            f"\nObjective: {self.objective}" if self.objective else ""
        )
        sections = [
            Section("Instruction", [instruction], priority=True),
            Section("Variables", described, priority=True),
            Section(
                "History",
                entries,
                preamble=f"Earlier values and their scores, worst first ({direction} is better):",
            ),
            Section("Feedback", [short_repr(latest, self.feedback_limit)] if latest else [], priority=True),
        ]
        problem = render_sections(sections, self.prompt_budget)
        return [
            ChatMessage(role="system", content=SYSTEM_PROMPT + OUTPUT_FORMATS[self.reply_format]),
            ChatMessage(role="user", content=problem),
        ]

    def _messages(self) -> tuple[list[ChatMessage], dict[str, ParameterNode]] | None:
        texts = [record.text for record in self.feedback_records()]
        score = fmean(self._observed) if self._observed else score_in_feedback(texts)
        if score is None and not texts:
            return None
        self._observed.clear()
        self.record(score, "\n".join(texts))
        return self.construct_prompt(), dict(self._keys)
