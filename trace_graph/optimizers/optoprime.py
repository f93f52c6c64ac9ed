"""OptoPrime: show the LLM the executed graph as a pseudo-code problem and ask for new values.

The feedback records the parameters hold (from ``backward()``) are merged into one report of the
minimal subgraph (``trace_graph.report``), written as the sections Trace's OptoPrime uses:
``#Instruction #Code #Documentation #Variables #Constraints #Inputs #Others #Outputs #Feedback``,
with an optional ``#Past attempts`` section (the last K values and the feedback they got) just
before the current feedback. Names are the nodes' own names (``prompt``, ``parse.code``,
``add_1``), never ``float0``.

Prompts stay bounded on big graphs: each value is cut to a per-value limit (head and tail kept), and
whole sections are cut to a total budget by ``prompt.render_sections`` (variables and feedback are
kept first; long code listings keep their first and last lines).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import asdict, dataclass
from typing import Any

from trace_graph.llm import ChatMessage, LLMClient
from trace_graph.module import Module
from trace_graph.nodes import ParameterNode
from trace_graph.optimizers.base import OUTPUT_FORMATS, Optimizer, ReplyFormat, StepResult
from trace_graph.optimizers.prompt import Section, render_sections
from trace_graph.report import (
    OperationCall,
    OperationDoc,
    SubgraphReport,
    ValueView,
    build_report,
    short_repr,
)

SECTION_TITLES = (
    "Instruction",
    "Code",
    "Documentation",
    "Variables",
    "Constraints",
    "Inputs",
    "Others",
    "Outputs",
    "Past attempts",
    "Feedback",
)

SYSTEM_PROMPT = """\
You improve a program by changing its variables. The program ran; the run is shown as a problem in sections:
#Instruction: what to do.
#Code: the operations that ran, in order, as `output = operation(argument=input, ...)`; \
`# also uses:` lists values an operation read besides its arguments.
#Documentation: what each operation does.
#Variables: the values you may change, as `(type) name=value`; code is shown as its full source.
#Constraints: what each variable means and which values it may take.
#Inputs: values the code used that you cannot change.
#Others: intermediate values computed on the way.
#Outputs: the results the feedback is about.
#Past attempts: earlier values of the variables and the feedback they got (when present).
#Feedback: what is wrong (or right) about the outputs.

Work out how the variables produced the outputs, why the feedback says what it says, and which new \
values fix it. Change only variables listed in #Variables. Write code as the complete new source of \
the function, keeping its signature.
"""

DEFAULT_INSTRUCTION = (
    "Change the values in #Variables so that the #Outputs improve according to the #Feedback."
)


@dataclass(frozen=True)
class Attempt:
    """One past step as memory shows it: the values it started from and the feedback they got."""

    number: int  # 1 for the first step, counting steps made before memory was trimmed
    variables: str
    feedback: str


class OptoPrime(Optimizer):
    """``OptoPrime(parameters, llm)``; ``construct_prompt()`` shows the prompt without calling the LLM.

    ``objective`` is added to the instruction (what the workflow is for). ``memory_size`` > 0 shows
    that many past attempts. Budgets are in characters: ``prompt_budget`` for the whole problem
    text, ``value_limit`` per input/intermediate/output value, ``parameter_limit`` per variable (a
    prompt being optimized must be seen nearly whole), ``code_limit`` per code variable,
    ``feedback_limit`` per feedback text.
    """

    def __init__(
        self,
        parameters: Module | Iterable[ParameterNode],
        llm: LLMClient | None = None,
        *,
        objective: str | None = None,
        memory_size: int = 0,
        prompt_budget: int = 8_000,
        value_limit: int = 200,
        parameter_limit: int = 2_000,
        code_limit: int = 4_000,
        feedback_limit: int = 1_500,
        temperature: float | None = None,
        max_tokens: int | None = None,
        reply_format: ReplyFormat = "json",
    ) -> None:
        super().__init__(
            parameters, llm, temperature=temperature, max_tokens=max_tokens, reply_format=reply_format
        )
        self.objective = objective
        self.memory_size = memory_size
        self.prompt_budget = prompt_budget
        self.value_limit = value_limit
        self.parameter_limit = parameter_limit
        self.code_limit = code_limit
        self.feedback_limit = feedback_limit
        self.memory: list[Attempt] = []
        self._pending_attempt: Attempt | None = None
        self._steps_taken = 0

    def memory_state(self) -> dict[str, Any]:
        return {"memory": [asdict(attempt) for attempt in self.memory], "steps_taken": self._steps_taken}

    def load_memory_state(self, state: dict[str, Any]) -> None:
        self.memory = [Attempt(**attempt) for attempt in state.get("memory", [])]
        self._steps_taken = int(state.get("steps_taken", len(self.memory)))

    # -- the prompt --------------------------------------------------------------------------------

    def construct_prompt(self) -> list[ChatMessage]:
        """The system and user messages ``step()`` would send for the current feedback."""
        built = self._messages()
        if built is None:
            raise ValueError("no parameter has feedback: call backward() on an output first")
        return built[0]

    def _messages(self) -> tuple[list[ChatMessage], dict[str, ParameterNode]] | None:
        records = self.feedback_records()
        if not records:
            return None
        report = build_report(records, parameters=self.parameters, value_limit=self.value_limit)
        labelled = {view.name: report.parameter_node(view.name) for view in report.parameters}
        problem = self.render_problem(report)
        self._pending_attempt = Attempt(
            number=self._steps_taken + 1,
            variables="; ".join(
                f"{label}={short_repr(parameter._value, self.value_limit)}"
                for label, parameter in labelled.items()
            ),
            feedback=" | ".join(short_repr(view.text, self.value_limit * 2) for view in report.feedback),
        )
        messages = [
            ChatMessage(role="system", content=SYSTEM_PROMPT + OUTPUT_FORMATS[self.reply_format]),
            ChatMessage(role="user", content=problem),
        ]
        return messages, labelled

    def render_problem(self, report: SubgraphReport) -> str:
        """The user message for ``report``: every section, within ``prompt_budget`` characters."""
        failed = {call.output: call for call in report.operations if call.error is not None}
        feedback_text = "\n".join(view.text for view in report.feedback)
        # Named outright: small models otherwise "fix" an input they cannot change.
        names = ", ".join(f"`{view.name}`" for view in report.parameters)
        instruction = f"{DEFAULT_INSTRUCTION} The variables you may change: {names}." + (
            f"\nObjective: {self.objective}" if self.objective else ""
        )
        sections = [
            Section("Instruction", [instruction], priority=True),
            Section("Code", [_code_line(call) for call in report.operations]),
            Section("Documentation", [self._documentation_entry(doc) for doc in report.documentation]),
            Section("Variables", self._variable_entries(report), priority=True),
            Section("Constraints", self._constraint_entries(report), priority=True),
            Section("Inputs", [_value_entry(view) for view in report.inputs]),
            Section("Others", [self._result_entry(view, failed, feedback_text) for view in report.others]),
            Section("Outputs", [self._result_entry(view, failed, feedback_text) for view in report.outputs]),
        ]
        if self.memory_size > 0 and self.memory:
            sections.append(
                Section(
                    "Past attempts",
                    [
                        f"[attempt {attempt.number}] {attempt.variables}\n  feedback: {attempt.feedback}"
                        for attempt in self.memory[-self.memory_size :]
                    ],
                    preamble="Earlier values of the variables and the feedback they got, oldest first:",
                )
            )
        sections.append(Section("Feedback", self._feedback_entries(report), priority=True))
        return render_sections(sections, self.prompt_budget)

    def _documentation_entry(self, doc: OperationDoc) -> str:
        return short_repr(f"[{doc.name}] {doc.signature} {doc.description}".strip(), self.value_limit * 2)

    def _variable_entries(self, report: SubgraphReport) -> list[str]:
        entries = []
        for view in report.parameters:
            value = report.parameter_node(view.name)._value
            if view.is_code:
                entries.append(f"(code) {view.name}:\n{short_repr(value, self.code_limit)}")
            else:
                entries.append(f"({view.type_name}) {view.name}={short_repr(value, self.parameter_limit)}")
        return entries

    def _constraint_entries(self, report: SubgraphReport) -> list[str]:
        entries = []
        for view in report.parameters:
            parts = [view.description] if view.description else []
            if view.constraint:
                parts.append(f"Constraint: {view.constraint}")
            if parts:
                entries.append(short_repr(f"({view.name}) " + " ".join(parts), self.value_limit * 2))
        return entries

    def _result_entry(self, view: ValueView, failed: dict[str, OperationCall], feedback_text: str) -> str:
        call = failed.get(view.name)
        if call is None:
            return _value_entry(view)
        entry = f"(error) {view.name}={view.value}"
        # The marked source says where it broke; shown here unless the feedback already quotes it.
        if call.annotated_source and call.annotated_source not in feedback_text:
            entry += "\n" + short_repr(call.annotated_source, self.code_limit)
        return entry

    def _feedback_entries(self, report: SubgraphReport) -> list[str]:
        if len(report.feedback) == 1:
            return [short_repr(report.feedback[0].text, self.feedback_limit)]
        limit = self.feedback_limit
        return [f"[on {view.output}] {short_repr(view.text, limit)}" for view in report.feedback]

    # -- memory ------------------------------------------------------------------------------------

    def _after_step(self, result: StepResult) -> None:
        self._steps_taken += 1
        if self.memory_size > 0 and self._pending_attempt is not None:
            self.memory.append(self._pending_attempt)
            del self.memory[: -self.memory_size]
        self._pending_attempt = None


def _code_line(call: OperationCall) -> str:
    line = call.call()
    return f"{line}  # raised {short_repr(call.error, 120)}" if call.error else line


def _value_entry(view: ValueView) -> str:
    return f"({view.type_name}) {view.name}={view.value}"
