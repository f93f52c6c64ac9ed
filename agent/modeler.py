"""The modeling agent: problem text in, a solved, verified and explained model out.

The workflow is a trace_graph program. Each step is a bundled method, so one solve records a graph

    formulate -> build_and_solve -> verify -> sanity_facts -> sanity_rules -> assess
        -> repair -> build_and_solve -> ... -> compose (-> vote when sampling)

whose trainable parameters are the prompts (`system_prompt`, `formulation_instructions`,
`worked_example`, `indexed_instructions` and `indexed_example` for problems with tables of
numbers, `data_instructions`, `code_instructions`, `code_worked_example`, `repair_instructions`)
and the code of the `sanity_rules` step. `solve_traced()` returns the final node, so a trainer
calls `.backward(feedback)` on it and an optimizer rewrites the parameters; `save()` /
`load_params()` store them as readable JSON.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent import evidence, explain, prompts
from agent.answer import (
    AgentAnswer,
    AgentMode,
    AnswerStatus,
    Attempt,
    Decision,
    FormulationStyle,
    LLMUsageSummary,
)
from agent.data_tables import DataTable, describe_tables
from agent.draft import (
    DraftError,
    FormulationDraft,
    IndexedDraft,
    compact_json,
    draft_to_formulation,
    extract_program,
)
from agent.prompts import SanityFacts
from agent.steps import Solved, constraint_slacks, program_sense, solve_ir, solve_program, verify_ir
from agent.synthesis.numbers import count_numbers
from agent.voting import vote
from solvers.ir import Formulation
from solvers.result import CheckReport, SolveOptions, SolveStatus
from trace_graph.bundle import bundle
from trace_graph.llm.client import LLMClient, LLMReplyError, LLMRequestError, LLMUnavailableError
from trace_graph.module import Module
from trace_graph.nodes import ExceptionNode, ExecutionError, Node, ParameterNode, node

Stage = Literal["formulate", "build", "solve", "verify", "sanity", "done"]

_STATUS_OF_SOLVE = {
    SolveStatus.OPTIMAL: AnswerStatus.OPTIMAL,
    SolveStatus.INFEASIBLE: AnswerStatus.INFEASIBLE,
    SolveStatus.UNBOUNDED: AnswerStatus.UNBOUNDED,
    SolveStatus.INFEASIBLE_OR_UNBOUNDED: AnswerStatus.INFEASIBLE_OR_UNBOUNDED,
    SolveStatus.TIME_LIMIT: AnswerStatus.TIME_LIMIT,
    SolveStatus.ERROR: AnswerStatus.ERROR,
}
_PREVIOUS_REPLY_CHARS = 2500  # a broken reply is shown back, but not at the cost of the context
# Temperature 0 tends to repeat the same mistake when the prompt barely changes; a little heat helps.
REPAIR_TEMPERATURE = 0.3
REPAIR_TEMPERATURE_STEP = 0.2
REPAIR_SAMPLE_STRIDE = 1000  # keeps repair sample indices apart from self-consistency samples
_SANDBOX: ContextVar[Any] = ContextVar("optitrace_agent_sandbox")


class AgentOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    style: FormulationStyle = "ir"
    mode: AgentMode = "agent"
    max_repairs: int = Field(default=3, ge=0, description="repair rounds after the first formulation")
    samples: int = Field(default=1, ge=1, description="self-consistency: formulations to vote over")
    temperature: float = Field(default=0.0, ge=0, description="for a single sample")
    sample_temperature: float = Field(default=0.7, gt=0, description="when samples > 1")
    # 1,024 cut off 8 of synth-v1's 25 rejected medium/hard replies mid-JSON; a first prompt is
    # ~1.1k tokens and a repair prompt ~2k, so 1,536 still fits the embedded model's 4k context.
    max_tokens: int = Field(default=1536, ge=64)
    interactive: bool = Field(
        default=False,
        description="ask clarifying questions when data is missing, instead of recording an assumption",
    )
    # Off by default: at 20 (where NL4OPT and MAMO EasyLP never reach, 37 of synth-v1's 41 medium
    # items do) the 1.5B model scored 19/30 vs 16/30 on MAMO ComplexLP's first 30 but 1/29 vs 5/29
    # on synth-v1 table stories, with fewer replies that build on both (docs/results/indexed-prompt).
    indexed_from_numbers: int | None = Field(
        default=None,
        ge=1,
        description="problems with at least this many numbers get the indexed instructions and "
        "example (IR style); None keeps the scalar ones for every problem",
    )
    sanity: bool = Field(default=True, description="run the sanity rules (agent mode only)")
    check_tolerance: float = 1e-6
    program_timeout: float = Field(default=60.0, gt=0, description="seconds per generated program")
    solve: SolveOptions = Field(default_factory=lambda: SolveOptions(time_limit=60.0))


class Candidate(BaseModel):
    """One formulation the LLM wrote (or why it could not be used)."""

    round: int
    style: FormulationStyle
    text: str = Field(default="", description="the reply as written, shown back in a repair prompt")
    draft: FormulationDraft | None = None
    formulation: Formulation | None = None
    code: str | None = None
    failure: str | None = None
    failure_stage: Literal["formulate", "build"] | None = None
    outcome: str = "ok"

    @property
    def missing_information(self) -> list[str]:
        return [item for item in (self.draft.missing_information if self.draft else []) if item.strip()]


class Evaluation(BaseModel):
    """The verdict on one round, and the feedback text that drives the repair."""

    round: int
    stage: Stage
    outcome: str
    accepted: bool = Field(description="a verified answer nothing objects to")
    usable: bool = Field(description="has a solution, even if a check objects to it")
    feedback: str = ""
    concerns: list[str] = Field(default_factory=list)

    def attempt(self) -> Attempt:
        return Attempt(round=self.round, stage=self.stage, outcome=self.outcome, feedback=self.feedback)


@dataclass
class Round:
    """The nodes of one formulate/repair round."""

    candidate: Node
    solved: Node
    check: Node
    evaluation: Node


@dataclass
class AgentTrace:
    """One solve: the answer, the graph node to call `.backward(feedback)` on, and what failed."""

    answer: AgentAnswer
    answer_node: Node
    rounds: list[Round] = field(default_factory=list)
    failures: list[ExceptionNode] = field(default_factory=list)  # e.g. a sanity_rules code crash


SandboxFactory = Callable[[], Any]


def _default_sandbox() -> Any:
    from solvers.sandbox import Sandbox

    return Sandbox()


def _usage_summary(usage: Any) -> LLMUsageSummary:
    return LLMUsageSummary(
        calls=usage.calls,
        cache_hits=usage.cache_hits,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        seconds=round(usage.seconds, 3),
    )


def _parameter(value: str, name: str, description: str) -> ParameterNode:
    constraint = prompts.PARAMETER_CONSTRAINTS.get(name)
    return ParameterNode(value, name=name, description=description, constraint=constraint, trainable=True)


class ModelingAgent(Module):
    """`ModelingAgent(client).solve("problem text")` -> AgentAnswer. See the module docstring."""

    def __init__(
        self,
        client: LLMClient,
        options: AgentOptions | None = None,
        *,
        sandbox_factory: SandboxFactory | None = None,
        params: str | Path | None = None,
        **overrides: Any,
    ) -> None:
        self.client = client
        base = options or AgentOptions()
        # Re-validated so keyword overrides are checked like constructor arguments.
        self.options = AgentOptions.model_validate({**base.model_dump(), **overrides}) if overrides else base
        self.sandbox_factory = sandbox_factory or _default_sandbox
        self.system_prompt = _parameter(
            prompts.SYSTEM_PROMPT,
            "system_prompt",
            "The system message of every formulation and repair request.",
        )
        self.formulation_instructions = _parameter(
            prompts.FORMULATION_INSTRUCTIONS,
            "formulation_instructions",
            "How to write the JSON formulation (IR style): the fields, in order, and what goes in each.",
        )
        self.worked_example = _parameter(
            prompts.WORKED_EXAMPLE,
            "worked_example",
            "One solved example (problem + notes-first JSON) shown before the problem (IR style).",
        )
        self.indexed_instructions = _parameter(
            prompts.INDEXED_INSTRUCTIONS,
            "indexed_instructions",
            "Added to the formulation instructions for problems with tables of numbers: write sets, "
            "indexed parameters and variables, sums and for_all constraints (IR style).",
        )
        self.indexed_example = _parameter(
            prompts.INDEXED_EXAMPLE,
            "indexed_example",
            "The solved example shown instead of worked_example for problems with tables of numbers "
            "(IR style).",
        )
        self.data_instructions = _parameter(
            prompts.DATA_TABLE_INSTRUCTIONS,
            "data_instructions",
            "How to refer to attached data tables by column instead of copying numbers (IR style).",
        )
        self.code_instructions = _parameter(
            prompts.CODE_INSTRUCTIONS,
            "code_instructions",
            "How to write the Pyomo program (code style): the build_model() contract.",
        )
        self.code_worked_example = _parameter(
            prompts.CODE_WORKED_EXAMPLE,
            "code_worked_example",
            "One solved example (problem + Pyomo program) shown before the problem (code style).",
        )
        self.repair_instructions = _parameter(
            prompts.REPAIR_INSTRUCTIONS,
            "repair_instructions",
            "What to do with the evidence of a failed formulation when asking for a corrected one.",
        )
        self.modeling_hints = _parameter(
            prompts.MODELING_HINTS,
            "modeling_hints",
            "Lessons learned from earlier problems, shown after the formulation instructions (empty "
            "until trained).",
        )
        # A fresh Bundle per agent: each agent owns (and may learn) its own sanity code.
        self.sanity_rules = bundle(trainable=True, name="sanity_rules")(prompts.sanity_rules)
        if params is not None:
            self.load_params(params)

    # --- parameters on disk ----------------------------------------------------------------------
    def load_params(self, path: str | Path) -> None:
        """Load parameters saved by `save()` (e.g. trained ones). Names this agent does not have
        are an error (a wrong file); parameters the file lacks keep their defaults."""
        before = dict(self.state_dict())
        self.load(path, strict=False)
        document_names = set(_parameter_names(Path(path)))
        unknown = sorted(document_names - set(before))
        if unknown:
            self.load_state_dict(before, strict=False)
            raise KeyError(f"{path} has parameters this agent does not know: {', '.join(unknown)}")

    # --- the public API --------------------------------------------------------------------------
    def solve(self, question: str, *, tables: list[DataTable] | None = None) -> AgentAnswer:
        return self.solve_traced(question, tables=tables).answer

    def solve_traced(self, question: str, *, tables: list[DataTable] | None = None) -> AgentTrace:
        """Solve and keep the graph: `trace.answer_node.backward(feedback)` trains the parameters.

        Raises LLMUnavailableError when the endpoint is down; every other failure (empty question,
        unreadable replies, a crashing step) comes back as an answer with status error.
        """
        started = time.perf_counter()
        tables = tables or []
        with self.client.track() as tracker:
            trace = self._solve_guarded(question, tables)
        trace.answer.usage = _usage_summary(tracker.usage)
        trace.answer.seconds = round(time.perf_counter() - started, 3)
        return trace

    def _solve_guarded(self, question: str, tables: list[DataTable]) -> AgentTrace:
        if not question.strip():
            return self._plain_trace(question, "the problem text is empty; describe the problem to solve")
        try:
            with self._sandbox_open():
                return self._solve_all_samples(question.strip(), tables)
        except LLMUnavailableError:
            raise
        except Exception as error:  # a bug or a broken sandbox must not lose the problem: report it
            return self._plain_trace(question, f"internal error: {type(error).__name__}: {error}")

    # --- the workflow --------------------------------------------------------------------------
    def _solve_all_samples(self, question: str, tables: list[DataTable]) -> AgentTrace:
        question_node = node(question, name="question")
        data_node = node(describe_tables(tables) if tables else "", name="data_tables")
        samples = self.options.samples
        traces = [
            self._run_sample(question_node, data_node, tables, index, samples) for index in range(samples)
        ]
        if samples == 1:
            return traces[0]
        failures = [f for t in traces for f in t.failures]
        rounds = [r for t in traces for r in t.rounds]
        # A sample that crashed (ExceptionNode) still counts as a failed vote, but vote() cannot take
        # an exception node as input: it would not run. Its plain answer stands in for it.
        inputs = [t.answer_node if not isinstance(t.answer_node, ExceptionNode) else t.answer for t in traces]
        try:
            voted = self.vote(question_node, *inputs)
        except ExecutionError as error:
            return self._crash_trace(question, error, rounds, failures)
        return AgentTrace(answer=voted.value, answer_node=voted, rounds=rounds, failures=failures)

    def _run_sample(
        self, question: Node, data: Node, tables: list[DataTable], index: int, samples: int
    ) -> AgentTrace:
        rounds: list[Round] = []
        failures: list[ExceptionNode] = []
        try:
            return self._trajectory(question, data, tables, index, samples, rounds, failures)
        except ExecutionError as error:
            cause = error.__cause__
            if isinstance(cause, LLMUnavailableError):
                raise cause from None
            return self._crash_trace(question.value, error, rounds, failures)

    def _trajectory(
        self,
        question: Node,
        data: Node,
        tables: list[DataTable],
        sample_index: int,
        samples: int,
        rounds: list[Round],
        failures: list[ExceptionNode],
    ) -> AgentTrace:
        options = self.options
        temperature = options.temperature if samples == 1 else options.sample_temperature
        repairs_allowed = options.max_repairs if options.mode == "agent" else 0
        assumptions: list[str] = []
        attempts: list[Attempt] = []
        candidate = self.formulate(question, data, tables, sample_index, temperature)

        missing = candidate.value.missing_information
        if missing and options.interactive and options.mode == "agent":
            answer_node = self.ask(question, candidate)
            return AgentTrace(answer=answer_node.value, answer_node=answer_node, failures=failures)
        assumptions += [f"Not stated in the problem: {item} (a value was assumed)" for item in missing]

        for round_number in range(repairs_allowed + 1):
            if round_number > 0:
                candidate = self.repair(
                    question, data, tables, candidate, rounds[-1].evaluation, sample_index
                )
            solved = self.build_and_solve(candidate, tables)
            check = self.verify(candidate, solved)
            concerns: Node | None = None
            if options.mode == "agent" and options.sanity and solved.value.usable:
                facts = self.sanity_facts(question, candidate, solved)
                if facts.value is not None:
                    concerns = self.sanity_rules(facts)
                    if isinstance(
                        concerns, ExceptionNode
                    ):  # trained code that crashes must not cost the answer
                        failures.append(concerns)
                        attempts.append(
                            Attempt(
                                round=round_number,
                                stage="sanity",
                                outcome="sanity rules failed",
                                feedback=concerns.explanation(),
                            )
                        )
                        concerns = None
            evaluation = self.assess(candidate, solved, check, concerns if concerns is not None else [])
            rounds.append(Round(candidate, solved, check, evaluation))
            attempts.append(evaluation.value.attempt())
            if evaluation.value.accepted or not _worth_repairing(candidate.value, solved.value):
                break

        chosen = _choose_round(rounds)
        answer_node = self.compose(
            question, chosen.candidate, chosen.solved, chosen.check, chosen.evaluation, assumptions
        )
        answer: AgentAnswer = answer_node.value
        answer.attempts = attempts
        answer.repair_rounds = len(rounds) - 1
        return AgentTrace(answer=answer, answer_node=answer_node, rounds=rounds, failures=failures)

    # --- bundled steps (recorded in the graph) --------------------------------------------------
    @bundle(catch_execution_error=False)
    def formulate(
        self, question: str, data: str, tables: list[DataTable], sample_index: int, temperature: float
    ) -> Candidate:
        """Ask the LLM for a formulation of the problem: notes-first JSON (IR) or a Pyomo program."""
        style = self.options.style
        hints = prompts.hints_block(self.modeling_hints.value)
        indexed = self._indexed(question, tables)
        if style == "code":
            example = self.code_worked_example.value
            intro = f"{self.code_instructions.value}{_code_data_note(tables)}{hints}\n\nExample:\n{example}"
        else:
            data_part = f"\n\n{self.data_instructions.value}\n{data}" if data else ""
            how = f"{self.formulation_instructions.value}{self._indexed_part(indexed)}{hints}"
            example = self.indexed_example.value if indexed else self.worked_example.value
            intro = f"{how}\n\nExample:\n{example}{data_part}"
        answer_cue = "Program:" if style == "code" else "JSON:"
        user = f"{intro}\n\nProblem: {question}\n{answer_cue}"
        return self._ask_llm(user, 0, sample_index, temperature, tables, indexed)

    @bundle(catch_execution_error=False)
    def repair(
        self,
        question: str,
        data: str,
        tables: list[DataTable],
        previous: Candidate,
        evaluation: Evaluation,
        sample_index: int,
    ) -> Candidate:
        """Ask the LLM to fix the previous formulation, given the evidence of what went wrong."""
        style = self.options.style
        hints = prompts.hints_block(self.modeling_hints.value)
        indexed = self._indexed(question, tables)
        if style == "code":
            shape = f"{self.code_instructions.value}{_code_data_note(tables)}{hints}"
        else:
            data_part = f"\n{self.data_instructions.value}\n{data}" if data else ""
            shape = f"{self.formulation_instructions.value}{self._indexed_part(indexed)}{hints}{data_part}"
        shown = previous.text
        if previous.draft is not None:
            shown = compact_json(previous.draft)
        elif len(shown) > _PREVIOUS_REPLY_CHARS:
            shown = shown[:_PREVIOUS_REPLY_CHARS] + " ...(cut)"
        user = (
            f"{self.repair_instructions.value}\n\n{shape}\n\nProblem: {question}\n\n"
            f"Previous {'program' if style == 'code' else 'JSON'}:\n{shown or '(empty reply)'}\n\n"
            f"Evidence:\n{evaluation.feedback}\n\nCorrected {'program' if style == 'code' else 'JSON'}:"
        )
        round_number = previous.round + 1
        # A repair that reproduced its input meets the same prompt again next round; a fresh sample
        # index (a new cache key) and a warmer temperature make that round a real second attempt.
        temperature = min(REPAIR_TEMPERATURE + REPAIR_TEMPERATURE_STEP * (round_number - 1), 0.9)
        repair_sample = sample_index * REPAIR_SAMPLE_STRIDE + round_number
        return self._ask_llm(user, round_number, repair_sample, temperature, tables, indexed)

    def _indexed(self, question: str, tables: list[DataTable]) -> bool:
        """Whether to ask for an indexed JSON model: the problem's own text holds tables of numbers
        (attached tables have their own instructions; code style writes Pyomo)."""
        threshold = self.options.indexed_from_numbers
        if self.options.style != "ir" or tables or threshold is None:
            return False
        return count_numbers(question) >= threshold

    def _indexed_part(self, indexed: bool) -> str:
        return f"\n{self.indexed_instructions.value}" if indexed else ""

    @bundle(catch_execution_error=False)
    def build_and_solve(self, candidate: Candidate, tables: list[DataTable]) -> Solved:
        """Build the candidate's model (IR -> Pyomo, or the program in the sandbox) and solve it."""
        if candidate.failure is not None:
            return Solved(stage="build", outcome=candidate.outcome, failure=candidate.failure)
        if candidate.code is not None:
            return solve_program(
                _SANDBOX.get(), candidate.code, tables, self.options.solve, self.options.program_timeout
            )
        assert candidate.formulation is not None
        return solve_ir(candidate.formulation, self.options.solve)

    @bundle(catch_execution_error=False)
    def verify(self, candidate: Candidate, solved: Solved) -> CheckReport | None:
        """Check the solution independently against the formulation (IR style only)."""
        if candidate.formulation is None or not solved.usable or solved.solve is None:
            return None
        return verify_ir(candidate.formulation, solved.solve, self.options.check_tolerance)

    @bundle(catch_execution_error=False)
    def sanity_facts(self, question: str, candidate: Candidate, solved: Solved) -> SanityFacts | None:
        """What the sanity rules look at: the problem text and the solved model as plain values."""
        solve = solved.solve
        if solve is None or solve.objective is None:
            return None
        if candidate.formulation is not None:
            f = candidate.formulation
            sense = f.objective.sense
            domains = {v.name: v.domain for v in f.variables}
            meanings = {v.name: v.description for v in f.variables}
        else:
            sense = program_sense(candidate.code or "")
            domains, meanings = {}, {}
        return SanityFacts(
            question=question,
            sense=sense,
            objective=solve.objective,
            values=solve.values,
            domains=domains,
            meanings=meanings,
        )

    @bundle(catch_execution_error=False)
    def assess(
        self, candidate: Candidate, solved: Solved, check: CheckReport | None, concerns: list[str]
    ) -> Evaluation:
        """Judge one round and turn the evidence into feedback for the repair."""
        round_number = candidate.round
        if solved.failure is not None:
            stage: Stage = "formulate" if candidate.failure_stage == "formulate" else solved.stage
            return Evaluation(
                round=round_number,
                stage=stage,
                outcome=solved.outcome,
                accepted=False,
                usable=False,
                feedback=solved.failure,
            )
        if check is not None and not check.ok:
            return Evaluation(
                round=round_number,
                stage="verify",
                outcome="verification failed",
                accepted=False,
                usable=True,
                feedback=evidence.verification_failed(check),
            )
        if concerns:
            return Evaluation(
                round=round_number,
                stage="sanity",
                outcome="sanity rejected",
                accepted=False,
                usable=True,
                feedback=evidence.sanity_rejected(concerns),
                concerns=list(concerns),
            )
        outcome = "ok" if solved.outcome == SolveStatus.OPTIMAL.value else solved.outcome
        return Evaluation(round=round_number, stage="done", outcome=outcome, accepted=True, usable=True)

    @bundle(catch_execution_error=False)
    def compose(
        self,
        question: str,
        candidate: Candidate,
        solved: Solved,
        check: CheckReport | None,
        evaluation: Evaluation,
        assumptions: list[str],
    ) -> AgentAnswer:
        """The answer: status, objective, decisions in the problem's words, binding constraints,
        readable math, explanation, and how sure we are."""
        options = self.options
        answer = AgentAnswer(
            question=question,
            status=AnswerStatus.ERROR,
            formulation=candidate.formulation,
            code=candidate.code,
            style=options.style,
            mode=options.mode,
            solve=solved.solve,
            check=check,
            assumptions=list(assumptions),
        )
        formulation = candidate.formulation
        if formulation is not None:
            answer.sense = formulation.objective.sense
            answer.model_math = explain.model_math(formulation)
        elif candidate.code is not None:
            answer.sense = program_sense(candidate.code)
        solve = solved.solve
        if solve is None:
            answer.error = evaluation.feedback or "no model could be built"
            answer.confidence = "low"
            return answer
        answer.status = _STATUS_OF_SOLVE.get(solve.status, AnswerStatus.ERROR)
        answer.objective = solve.objective
        if not solved.usable:
            answer.error = evaluation.feedback or None
            answer.explanation = evaluation.feedback
            answer.confidence = "low"
            return answer
        if formulation is not None:
            answer.decisions = explain.decisions_of(formulation, solve)
            slacks = constraint_slacks(formulation, solve.values)
            answer.binding_constraints = explain.binding_constraints(slacks, solve.duals)
            answer.explanation = explain.explanation(
                formulation, solve, answer.decisions, answer.binding_constraints, check
            )
        else:
            answer.decisions = [
                Decision(variable=key, value=value)
                for key, value in solve.values.items()
                if abs(value) > 1e-9
            ]
            answer.binding_constraints = explain.binding_constraints({}, solve.duals)
            answer.explanation = (
                f"The program's model reaches {explain.format_number(solve.objective or 0.0)} "
                f"({answer.sense}); solved by {solve.solver}."
            )
        if evaluation.accepted:
            answer.confidence = "medium"
        else:  # the last usable round still drew an objection: answer, but say so
            answer.confidence = "low"
            answer.assumptions.append(
                f"Unresolved after repairs: {evaluation.outcome}: {evaluation.feedback}"
            )
        if solve.status == SolveStatus.TIME_LIMIT:
            answer.assumptions.append("The solver stopped at its time limit; the plan may not be optimal.")
        return answer

    @bundle(catch_execution_error=False)
    def ask(self, question: str, candidate: Candidate) -> AgentAnswer:
        """The problem lacks data: return the questions to ask instead of inventing numbers."""
        return AgentAnswer(
            question=question,
            status=AnswerStatus.NEEDS_CLARIFICATION,
            clarifying_questions=[_as_question(item) for item in candidate.missing_information],
            formulation=candidate.formulation,
            style=self.options.style,
            mode=self.options.mode,
            confidence="low",
            explanation="The problem text does not give all the data the model needs.",
        )

    @bundle(catch_execution_error=False)
    def vote(self, question: str, *answers: AgentAnswer) -> AgentAnswer:
        """Self-consistency: the answer of the largest group of agreeing objectives; disagreement
        lowers the confidence and is listed in `votes`."""
        objectives = [
            a.objective if a.status in (AnswerStatus.OPTIMAL, AnswerStatus.TIME_LIMIT) else None
            for a in answers
        ]
        outcome = vote(objectives)
        chosen = outcome.chosen
        best = answers[chosen.members[0]] if chosen is not None else answers[0]
        result = best.model_copy(deep=True)
        result.votes = [value for value in objectives if value is not None]
        result.confidence = outcome.confidence
        result.attempts = [a for answer in answers for a in answer.attempts]
        result.repair_rounds = sum(a.repair_rounds for a in answers)
        note = outcome.summary()
        if outcome.confidence == "low":
            result.assumptions.append(f"Samples disagree: {note}")
        result.explanation = f"{result.explanation} [{note}]".strip()
        return result

    # --- helpers -------------------------------------------------------------------------------
    def _ask_llm(
        self,
        user: str,
        round_number: int,
        sample_index: int,
        temperature: float,
        tables: list[DataTable],
        indexed: bool = False,
    ) -> Candidate:
        style = self.options.style
        messages = [
            {"role": "system", "content": self.system_prompt.value},
            {"role": "user", "content": user},
        ]
        try:
            if style == "code":
                reply = self.client.chat(
                    messages,
                    temperature=temperature,
                    max_tokens=self.options.max_tokens,
                    sample_index=sample_index,
                )
                return _program_candidate(reply.text, round_number)
            draft = self.client.structured(
                messages,
                IndexedDraft if indexed else FormulationDraft,
                temperature=temperature,
                max_tokens=self.options.max_tokens,
                sample_index=sample_index,
            )
        except LLMReplyError as error:
            return Candidate(
                round=round_number,
                style=style,
                text=error.text,
                failure=evidence.unreadable_reply(error.error),
                failure_stage="formulate",
                outcome="unreadable reply",
            )
        except LLMRequestError as error:  # e.g. the prompt exceeds the context: a repair cannot help
            return Candidate(
                round=round_number,
                style=style,
                failure=f"The LLM endpoint refused the request: {error}",
                failure_stage="formulate",
                outcome="request refused",
            )
        return _draft_candidate(draft, round_number, tables)

    @contextlib.contextmanager
    def _sandbox_open(self) -> Iterator[None]:
        """One sandbox per solve in code style, kept in a ContextVar so threads sharing this agent
        each run their programs in their own sandbox."""
        if self.options.style != "code":
            yield
            return
        with self.sandbox_factory() as sandbox:
            token = _SANDBOX.set(sandbox)
            try:
                yield
            finally:
                _SANDBOX.reset(token)

    def _plain_trace(self, question: str, message: str) -> AgentTrace:
        answer = self._error_answer(question, message)
        return AgentTrace(answer=answer, answer_node=node(answer, name="answer"))

    def _error_answer(self, question: str, message: str) -> AgentAnswer:
        return AgentAnswer(
            question=question,
            status=AnswerStatus.ERROR,
            style=self.options.style,
            mode=self.options.mode,
            confidence="low",
            error=message,
        )

    def _crash_trace(
        self, question: str, error: ExecutionError, rounds: list[Round], failures: list[ExceptionNode]
    ) -> AgentTrace:
        answer = self._error_answer(
            question, f"internal error in step {error.node.operation.name}: {error.node.value}"
        )
        answer.attempts = [
            Attempt(round=len(rounds), stage="done", outcome="internal error", feedback=error.node.value)
        ]
        return AgentTrace(
            answer=answer, answer_node=error.node, rounds=rounds, failures=[*failures, error.node]
        )


# --- module-level helpers ---------------------------------------------------------------------
def _parameter_names(path: Path) -> list[str]:
    document = json.loads(path.read_text(encoding="utf-8"))
    parameters = document.get("parameters", {}) if isinstance(document, dict) else {}
    return list(parameters) if isinstance(parameters, dict) else []


def _program_candidate(text: str, round_number: int) -> Candidate:
    try:
        code = extract_program(text)
    except ValueError as error:
        return Candidate(
            round=round_number,
            style="code",
            text=text,
            failure=evidence.unreadable_reply(str(error)),
            failure_stage="formulate",
            outcome="no program",
        )
    return Candidate(round=round_number, style="code", text=text, code=code)


def _draft_candidate(draft: FormulationDraft, round_number: int, tables: list[DataTable]) -> Candidate:
    text = compact_json(draft)
    try:
        formulation = draft_to_formulation(draft, tables)
    except DraftError as error:
        return Candidate(
            round=round_number,
            style="ir",
            text=text,
            draft=draft,
            failure=evidence.invalid_model(error.problems),
            failure_stage="build",
            outcome="invalid model",
        )
    return Candidate(round=round_number, style="ir", text=text, draft=draft, formulation=formulation)


def _code_data_note(tables: list[DataTable]) -> str:
    if not tables:
        return ""
    listing = "; ".join(f"data[{t.name!r}]: rows with keys {', '.join(t.columns)}" for t in tables)
    return f"\nData tables are passed in: define build_model(data) and read {listing}."


def _worth_repairing(candidate: Candidate, solved: Solved) -> bool:
    # Hitting the time limit is not the formulation's fault, and a refused request (e.g. a prompt
    # over the context) only grows in a repair: another round would fail the same way.
    if candidate.outcome == "request refused":
        return False
    return not (solved.solve is not None and solved.solve.status == SolveStatus.TIME_LIMIT)


def _choose_round(rounds: list[Round]) -> Round:
    """The accepted round if any, else the latest usable one, else the last round."""
    for wanted in ("accepted", "usable"):
        for round_ in reversed(rounds):
            if getattr(round_.evaluation.value, wanted):
                return round_
    return rounds[-1]


def _as_question(item: str) -> str:
    text = item.strip()
    return text if text.endswith("?") else f"Please provide: {text.rstrip('.')}."
