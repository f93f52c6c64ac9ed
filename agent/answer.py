"""What the modeling agent returns for one problem: the contract that chat, eval and train consume."""

from __future__ import annotations

from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, Field

from solvers.ir import Formulation
from solvers.result import CheckReport, SolveResult


class AnswerStatus(StrEnum):
    OPTIMAL = "optimal"
    INFEASIBLE = "infeasible"
    UNBOUNDED = "unbounded"
    INFEASIBLE_OR_UNBOUNDED = "infeasible_or_unbounded"
    TIME_LIMIT = "time_limit"
    NEEDS_CLARIFICATION = "needs_clarification"  # the text lacks data; see clarifying_questions
    ERROR = "error"  # no usable model after the allowed repair rounds; see error


AgentMode = Literal["oneshot", "agent"]
FormulationStyle = Literal["ir", "code"]


class LLMUsageSummary(BaseModel):
    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    seconds: float = 0.0


class Decision(BaseModel):
    """One decision in the problem's own words, e.g. "Cakes to bake: 15 cakes"."""

    variable: str  # "x[Boston,NY]"
    value: float
    meaning: str = ""  # the variable's description, in the problem's words and units


class Attempt(BaseModel):
    """One formulate -> build -> solve -> verify round, kept so failures are explainable."""

    round: int
    stage: Literal["formulate", "build", "solve", "verify", "sanity", "done"]
    outcome: str  # short: "ok", "parse error", "infeasible", ...
    feedback: str = ""  # the evidence turned into trace feedback for the repair


class AgentAnswer(BaseModel):
    question: str
    status: AnswerStatus
    objective: float | None = None
    sense: Literal["minimize", "maximize"] | None = None
    decisions: list[Decision] = Field(default_factory=list)
    binding_constraints: list[str] = Field(default_factory=list)
    explanation: str = ""
    model_math: str = ""  # the model as readable math
    formulation: Formulation | None = None
    code: str | None = None
    style: FormulationStyle = "ir"
    mode: AgentMode = "agent"
    solve: SolveResult | None = None
    check: CheckReport | None = None
    assumptions: list[str] = Field(default_factory=list)
    clarifying_questions: list[str] = Field(default_factory=list)
    confidence: Literal["high", "medium", "low"] = "medium"
    votes: list[float] = Field(default_factory=list)  # objectives of self-consistency samples
    repair_rounds: int = 0
    attempts: list[Attempt] = Field(default_factory=list)
    usage: LLMUsageSummary = Field(default_factory=LLMUsageSummary)
    seconds: float = 0.0
    error: str | None = None
