"""One parameter per step, in turn: an optimizer prompt a 4k-context model can read and answer.

Shown all at once, the agent's four prompts take ~2,700 characters of #Variables before any
feedback, and the reply must rewrite them all; the embedded 1.5B model has 4,096 tokens for prompt
and reply together. `RotatingOptimizer` holds one guarded optimizer per parameter and lets one of
them step each time (the next one that has feedback), so each prompt carries one full value (the
others appear as inputs, shortened) and each parameter keeps its own memory of past attempts.
"""

from __future__ import annotations

from typing import Any

from agent.training.guards import GuardedOptimizer, RejectedUpdate
from trace_graph.llm import ChatMessage
from trace_graph.nodes import ParameterNode
from trace_graph.optimizers import Optimizer, StepResult


class RotatingOptimizer(Optimizer):
    """``RotatingOptimizer([one optimizer per parameter])``: the Trainer sees one optimizer."""

    def __init__(self, parts: list[GuardedOptimizer]) -> None:
        if not parts:
            raise ValueError("a rotating optimizer needs at least one part")
        super().__init__([parameter for part in parts for parameter in part.parameters], parts[0].llm)
        self.parts = parts
        self.turn = 0
        self._score: float | None = None

    @property
    def rejected(self) -> list[RejectedUpdate]:
        """Every rejected rewrite; the parts share one list (see setup_guard), in rejection order."""
        return self.parts[0].rejected

    def zero_feedback(self) -> None:
        for part in self.parts:
            part.zero_feedback()

    def memory_state(self) -> dict[str, Any]:
        return {"turn": self.turn, "parts": [part.memory_state() for part in self.parts]}

    def load_memory_state(self, state: dict[str, Any]) -> None:
        self.turn = int(state.get("turn", 0))
        for part, memory in zip(self.parts, state.get("parts", []), strict=False):
            part.load_memory_state(memory)

    def observe_score(self, score: float) -> None:
        self._score = score  # given to the part that steps next, whose values it scored

    def step(self) -> StepResult:
        for offset in range(len(self.parts)):
            index = (self.turn + offset) % len(self.parts)
            part = self.parts[index]
            if part.feedback_records():
                self.turn = index + 1
                if self._score is not None:
                    part.observe_score(self._score)
                    self._score = None
                return part.step()
        return StepResult(skipped="no parameter has feedback: call backward() on an output first")

    def _messages(self) -> tuple[list[ChatMessage], dict[str, ParameterNode]] | None:
        raise NotImplementedError("the parts write their own prompts")  # step() is delegated
