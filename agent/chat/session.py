"""A chat about one optimization model: `ChatSession(agent, llm).send(text) -> ChatTurn`.

The session holds the CURRENT model (problem text + the AgentAnswer with its formulation and
SolveResult), the history of turns and an undo stack of earlier models. Each turn is classified
(agent.chat.intents) and handled here; the LLM only ever proposes (a formulation, an edit, which
decision a question means), and every number in a reply comes from a solver run. A turn changes
the state only once everything it needs has succeeded, so a broken LLM reply, a bad edit or a
dead endpoint leaves the session exactly as it was.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, ValidationError

from agent.answer import AgentAnswer, AnswerStatus, LLMUsageSummary
from agent.chat.analysis import (
    Comparison,
    Diagnosis,
    ForcedDecision,
    Sensitivity,
    WhyNotReply,
    answer_for,
    diagnose,
    mentioned_decision,
    resolve_forced,
    sensitivity,
    summary,
    what_if,
    why_not,
    why_not_prompt,
)
from agent.chat.edits import (
    EditError,
    EditReply,
    ModelDiff,
    ModelEdit,
    apply_edits,
    draft_to_edits,
    edit_feedback,
    edit_prompt,
    model_diff,
    parse_direct_edit,
    parse_set,
)
from agent.chat.export import ExportError, export_model
from agent.chat.intents import COMMAND_HELP, EDIT_COMMANDS, IntentKind, TurnIntent, classify, parse_command
from agent.data_tables import DataTable
from agent.explain import format_number, model_math
from agent.modeler import ModelingAgent
from solvers.ir import Formulation
from trace_graph.llm.client import LLMClient, LLMError
from trace_graph.llm.usage import Usage

MAX_UNDO = 50  # older models drop off: a saved session should stay readable
EDIT_MAX_TOKENS = 400
PICK_MAX_TOKENS = 120
SESSION_FORMAT = "optitrace-chat"


class ModelSnapshot(BaseModel):
    """One state of the model: the problem it answers and the solved answer."""

    problem: str = ""
    answer: AgentAnswer | None = None

    @property
    def formulation(self) -> Formulation | None:
        return self.answer.formulation if self.answer is not None else None


class ChatTurn(BaseModel):
    """What one message did: its intent, the reply in plain words, and the evidence behind it."""

    number: int = 0
    text: str = ""
    intent: IntentKind
    ok: bool = True
    reply: str
    answer: AgentAnswer | None = Field(default=None, description="the model (re)solved by this turn")
    edits: list[ModelEdit] = Field(default_factory=list)
    diff: ModelDiff | None = None
    comparison: Comparison | None = Field(default=None, description="what-if / why-not against the base")
    sensitivity: Sensitivity | None = None
    diagnosis: Diagnosis | None = None
    files: list[str] = Field(default_factory=list, description="files written or read")
    usage: LLMUsageSummary = Field(default_factory=LLMUsageSummary)
    seconds: float = 0.0


class SessionRecord(BaseModel):
    """Everything a session is, as saved to JSON."""

    format: Literal["optitrace-chat"] = SESSION_FORMAT
    version: Literal[1] = 1
    current: ModelSnapshot = Field(default_factory=ModelSnapshot)
    pending_problem: str | None = Field(default=None, description="a problem waiting for missing data")
    history: list[ChatTurn] = Field(default_factory=list)
    undo: list[ModelSnapshot] = Field(default_factory=list)


class SessionFileError(ValueError):
    """A session file that cannot be read or written."""


def write_record(record: SessionRecord, path: Path) -> None:
    # mode="json" keeps inf as a float (Python's json writes Infinity), where pydantic's own JSON
    # would write null and the file would not load back.
    text = json.dumps(record.model_dump(mode="json"), indent=2)
    path = path.expanduser()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # write-then-rename: an interrupted save never leaves half a session behind
        handle, temporary = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
    except OSError as error:
        raise SessionFileError(f"cannot write {path}: {error.strerror or error}") from error


def read_record(path: Path) -> SessionRecord:
    path = path.expanduser()
    try:
        document = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise SessionFileError(f"cannot read {path}: {error.strerror or error}") from error
    except ValueError as error:
        raise SessionFileError(f"{path} is not JSON: {error}") from error
    if not isinstance(document, dict) or document.get("format") != SESSION_FORMAT:
        raise SessionFileError(f'{path} is not an OptiTrace chat session (no "format": "{SESSION_FORMAT}")')
    try:
        return SessionRecord.model_validate(document)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors()[:5])
        raise SessionFileError(f"{path} is not a valid session: {problems}") from error


class _Refusal(Exception):
    """A turn that cannot proceed (no model yet, bad arguments): its message is the reply."""


def _usage_summary(usage: Usage) -> LLMUsageSummary:
    return LLMUsageSummary(
        calls=usage.calls,
        cache_hits=usage.cache_hits,
        prompt_tokens=usage.prompt_tokens,
        completion_tokens=usage.completion_tokens,
        seconds=round(usage.seconds, 3),
    )


def _objective_change(before: AgentAnswer, after: AgentAnswer) -> str:
    if after.objective is None or after.status != AnswerStatus.OPTIMAL:
        return ""
    new = format_number(after.objective)
    if before.objective is None or before.status != AnswerStatus.OPTIMAL:
        return f"New optimum: {new} (before: {before.status.value})."
    delta = after.objective - before.objective
    sign = "+" if delta >= 0 else "-"
    percent = f", {sign}{abs(100 * delta / before.objective):.3g}%" if abs(before.objective) > 1e-12 else ""
    was = format_number(before.objective)
    return f"New optimum: {new} (was {was}, {sign}{format_number(abs(delta))}{percent})."


class ChatSession:
    """`session.send("oven hours are now 50")` -> ChatTurn. See the module docstring."""

    def __init__(
        self,
        agent: ModelingAgent,
        llm: LLMClient,
        *,
        tables: list[DataTable] | None = None,
        record: SessionRecord | None = None,
    ) -> None:
        self.agent = agent
        self.llm = llm
        self.tables = tables or []
        self.state = record or SessionRecord()

    # --- state ---------------------------------------------------------------------------------
    @property
    def current(self) -> ModelSnapshot:
        return self.state.current

    @property
    def answer(self) -> AgentAnswer | None:
        return self.state.current.answer

    @property
    def formulation(self) -> Formulation | None:
        return self.state.current.formulation

    @property
    def history(self) -> list[ChatTurn]:
        return self.state.history

    @property
    def undo_depth(self) -> int:
        return len(self.state.undo)

    def save(self, path: str | Path) -> Path:
        target = Path(path)
        write_record(self.state, target)
        return target

    @classmethod
    def load(
        cls, path: str | Path, agent: ModelingAgent, llm: LLMClient, *, tables: list[DataTable] | None = None
    ) -> ChatSession:
        return cls(agent, llm, tables=tables, record=read_record(Path(path)))

    def _push_undo(self) -> None:
        self.state.undo.append(self.state.current.model_copy(deep=True))
        del self.state.undo[:-MAX_UNDO]

    # --- one turn ------------------------------------------------------------------------------
    def send(self, text: str) -> ChatTurn:
        started = time.perf_counter()
        intent: TurnIntent | None = None
        with self.llm.track() as tracker:
            try:
                intent = self._classify(text)
                turn = self._dispatch(intent, text)
            except _Refusal as refusal:
                turn = ChatTurn(
                    intent=intent.kind if intent else "unclassified", ok=False, reply=str(refusal)
                )
            except LLMError as error:
                turn = ChatTurn(
                    intent=intent.kind if intent else "unclassified",
                    ok=False,
                    reply=f"The LLM could not be used: {error}\nNothing changed; the model is as before.",
                )
            except Exception as error:  # a bug must not cost the conversation: report it, keep the state
                turn = ChatTurn(
                    intent=intent.kind if intent else "unclassified",
                    ok=False,
                    reply=f"Internal error ({type(error).__name__}: {error}). Nothing changed.",
                )
        usage = _usage_summary(tracker.usage)
        if turn.answer is not None and turn.intent == "new_problem" and self.agent.client is not self.llm:
            usage = turn.answer.usage  # the agent's own client did the work
        turn.number = len(self.state.history) + 1
        turn.text = text
        turn.usage = usage
        turn.seconds = round(time.perf_counter() - started, 3)
        self.state.history.append(turn)
        return turn

    def _classify(self, text: str) -> TurnIntent:
        if not text.strip():
            raise _Refusal("Say what to solve or change; /help lists the commands.")
        command = parse_command(text)
        if command is not None:
            return command
        if self.state.pending_problem is not None:  # the answer to a clarifying question
            return TurnIntent(kind="new_problem", argument=text.strip())
        f = self.formulation
        outline = ""
        if f is not None:
            names = ", ".join(c.name for c in f.constraints[:20])
            outline = f"{f.objective.sense} {f.objective.expression}; constraints: {names}"
        return classify(text, f is not None, self.llm, outline)

    def _dispatch(self, intent: TurnIntent, text: str) -> ChatTurn:
        handlers = {
            "new_problem": self._new_problem,
            "edit": self._edit,
            "what_if": self._what_if,
            "why_not": self._why_not,
            "sensitivity": self._sensitivity,
            "diagnose": self._diagnose,
            "explain": self._explain,
            "show": self._show,
            "undo": self._undo,
            "save": self._save,
            "load": self._load,
            "export": self._export,
            "help": self._help,
        }
        return handlers[intent.kind](intent)

    def _solved_base(self, need_solution: bool = False) -> AgentAnswer:
        answer = self.answer
        if answer is None or answer.formulation is None:
            raise _Refusal("There is no model yet: describe an optimization problem first.")
        if need_solution and (answer.solve is None or not answer.solve.values):
            raise _Refusal(
                f"The current model has no solution ({answer.status.value}); change it first, "
                "or say 'diagnose' if it is infeasible."
            )
        return answer

    # --- handlers ------------------------------------------------------------------------------
    def _new_problem(self, intent: TurnIntent) -> ChatTurn:
        text = intent.argument.strip()
        if not text:
            raise _Refusal("Describe the problem to solve, e.g. /new A bakery bakes bread and cakes ...")
        pending = self.state.pending_problem
        question = f"{pending}\n{text}" if pending else text
        answer = self.agent.solve(question, tables=self.tables)
        if answer.status == AnswerStatus.NEEDS_CLARIFICATION:
            self.state.pending_problem = question
            return ChatTurn(
                intent="new_problem",
                reply=summary(answer) + "\nAnswer in your next message and I will solve it.",
                answer=answer,
            )
        if answer.formulation is None or answer.status == AnswerStatus.ERROR:
            reason = answer.error or answer.explanation or answer.status.value
            if answer.formulation is None and answer.code:
                reason = "the agent wrote a Pyomo program; chat edits need the IR style (--style ir)"
            kept = "The previous model is kept." if self.answer is not None else ""
            return ChatTurn(
                intent="new_problem",
                ok=False,
                reply=f"I could not build a model for that: {reason}\n{kept}".strip(),
                answer=answer,
            )
        self._push_undo()
        self.state.current = ModelSnapshot(problem=question, answer=answer)
        self.state.pending_problem = None
        reply = summary(answer)
        if answer.repair_rounds:
            reply += (
                f"\n(The first formulation failed a check; {answer.repair_rounds} repair round(s) fixed it.)"
            )
        return ChatTurn(intent="new_problem", reply=reply, answer=answer)

    def _proposed_edits(self, intent: TurnIntent, f: Formulation) -> list[ModelEdit]:
        """The edits a turn asks for: exact from a slash command, else proposed by the LLM."""
        if intent.command in EDIT_COMMANDS:
            return parse_direct_edit(intent.command or "", intent.argument, f)
        if intent.command == "whatif":
            return [parse_set(intent.argument, f)]
        return self._edits_from_llm(intent.argument, f)

    def _edits_from_llm(self, request: str, f: Formulation) -> list[ModelEdit]:
        """Ask for the edit; an edit that does not apply goes back to the LLM once, with the reasons."""
        messages = edit_prompt(f, request)
        for attempt in range(2):
            reply = self.llm.structured(messages, EditReply, temperature=0.0, max_tokens=EDIT_MAX_TOKENS)
            if not reply.edits:
                return []
            try:
                edits = draft_to_edits(reply.edits, f)
                apply_edits(f, edits)
                return edits
            except EditError as error:
                if attempt == 1:
                    raise
                messages = [
                    *messages,
                    {"role": "assistant", "content": reply.model_dump_json(exclude_defaults=True)},
                    {"role": "user", "content": edit_feedback(error.problems)},
                ]
        return []  # not reached: the second failure raises

    def _edit(self, intent: TurnIntent) -> ChatTurn:
        base = self._solved_base()
        f = base.formulation
        assert f is not None
        try:
            edits = self._proposed_edits(intent, f)
            if not edits:
                raise _Refusal(
                    "I found nothing to change in that request; the model is as before. "
                    "Name the constraint, parameter or variable (/model shows them), or use /set NAME VALUE."
                )
            edited = apply_edits(f, edits)
        except EditError as error:
            problems = "\n".join(f"- {p}" for p in error.problems)
            return ChatTurn(
                intent="edit", ok=False, reply=f"That edit cannot be applied:\n{problems}\nNothing changed."
            )
        new = answer_for(self.current.problem, edited, self.agent.options.solve)
        if new.status == AnswerStatus.ERROR:
            return ChatTurn(
                intent="edit",
                ok=False,
                edits=edits,
                reply=f"The edited model cannot be solved: {new.error}\nNothing changed.",
            )
        diff = model_diff(f, edited, edits)
        self._push_undo()
        self.state.current = ModelSnapshot(problem=self.current.problem, answer=new)
        lines = ["Changed: " + "; ".join(diff.summary) + "."]
        change = _objective_change(base, new)
        if change:
            lines.append(change)
        lines.append(summary(new))
        return ChatTurn(intent="edit", reply="\n".join(lines), answer=new, edits=edits, diff=diff)

    def _what_if(self, intent: TurnIntent) -> ChatTurn:
        base = self._solved_base()
        assert base.formulation is not None
        try:
            edits = self._proposed_edits(intent, base.formulation)
            if not edits:
                raise _Refusal("I found no change to try in that question; e.g. /whatif NAME VALUE.")
            comparison = what_if(base, edits, self.agent.options.solve)
        except EditError as error:
            problems = "\n".join(f"- {p}" for p in error.problems)
            return ChatTurn(intent="what_if", ok=False, reply=f"That change cannot be tried:\n{problems}")
        return ChatTurn(intent="what_if", reply=comparison.explanation, edits=edits, comparison=comparison)

    def _why_not(self, intent: TurnIntent) -> ChatTurn:
        base = self._solved_base(need_solution=True)
        f, solve = base.formulation, base.solve
        assert f is not None and solve is not None
        if intent.command == "whynot":
            match = re.match(r"^(.*?)(?:\s+(-?\d+(?:\.\d*)?))?\s*$", intent.argument)
            key, value = (match.group(1), match.group(2)) if match else (intent.argument, None)
            if not key.strip():
                raise _Refusal("write: /whynot DECISION [VALUE], e.g. /whynot open[B]")
            try:
                forced = resolve_forced(f, solve, key, float(value) if value else None)
            except ValueError as error:
                raise _Refusal(str(error)) from None
        else:
            forced = self._forced_from_question(intent.argument, f)
        comparison = why_not(base, forced, self.agent.options.solve)
        return ChatTurn(intent="why_not", reply=comparison.explanation, comparison=comparison)

    def _forced_from_question(self, question: str, f: Formulation) -> ForcedDecision:
        solve = self.answer.solve if self.answer else None
        assert solve is not None
        named = mentioned_decision(solve, question)
        if named is not None:
            return resolve_forced(f, solve, named)
        messages = why_not_prompt(f, solve, question)
        for attempt in range(2):
            pick = self.llm.structured(messages, WhyNotReply, temperature=0.0, max_tokens=PICK_MAX_TOKENS)
            try:
                return resolve_forced(f, solve, pick.variable, pick.value)
            except ValueError as error:
                if attempt == 1:
                    raise _Refusal(
                        f"I could not tell which decision the question is about ({error}). "
                        "Try /whynot DECISION, e.g. one of the names in /model."
                    ) from None
                messages = [
                    *messages,
                    {"role": "assistant", "content": pick.model_dump_json()},
                    {"role": "user", "content": f"{error}. Pick one name exactly as listed. JSON only."},
                ]
        raise AssertionError("not reached")

    def _sensitivity(self, intent: TurnIntent) -> ChatTurn:
        report = sensitivity(self._solved_base())
        return ChatTurn(intent="sensitivity", ok=report.available, reply=report.text, sensitivity=report)

    def _diagnose(self, intent: TurnIntent) -> ChatTurn:
        report = diagnose(self._solved_base(), self.agent.options.solve)
        return ChatTurn(intent="diagnose", reply=report.text, diagnosis=report)

    def _explain(self, intent: TurnIntent) -> ChatTurn:
        base = self._solved_base()
        lines = [summary(base)]
        if base.assumptions:
            lines.append("Assumptions: " + "; ".join(base.assumptions))
        return ChatTurn(intent="explain", reply="\n".join(lines))

    def _show(self, intent: TurnIntent) -> ChatTurn:
        base = self._solved_base()
        assert base.formulation is not None
        return ChatTurn(intent="show", reply=model_math(base.formulation))

    def _undo(self, intent: TurnIntent) -> ChatTurn:
        if not self.state.undo:
            raise _Refusal("Nothing to undo.")
        self.state.current = self.state.undo.pop()
        answer = self.answer
        if answer is None:
            return ChatTurn(intent="undo", reply="Undone: back to no model.")
        objective = format_number(answer.objective) if answer.objective is not None else answer.status.value
        return ChatTurn(intent="undo", reply=f"Undone: back to the previous model (objective {objective}).")

    def _path(self, intent: TurnIntent, usage: str) -> Path:
        if not intent.argument.strip():
            raise _Refusal(f"write: {usage}")
        return Path(intent.argument.strip().strip("'\"")).expanduser()

    def _save(self, intent: TurnIntent) -> ChatTurn:
        path = self._path(intent, "/save FILE.json")
        try:
            self.save(path)
        except SessionFileError as error:
            raise _Refusal(str(error)) from None
        turns = len(self.state.history)
        return ChatTurn(
            intent="save", reply=f"Saved the session ({turns} turn(s)) to {path}.", files=[str(path)]
        )

    def _load(self, intent: TurnIntent) -> ChatTurn:
        path = self._path(intent, "/load FILE.json")
        try:
            record = read_record(path)
        except SessionFileError as error:
            raise _Refusal(f"{error}\nThe current session is unchanged.") from None
        self.state = record
        answer = self.answer
        model = "no model"
        if answer is not None:
            objective = (
                format_number(answer.objective) if answer.objective is not None else answer.status.value
            )
            model = f"a model with objective {objective}"
        return ChatTurn(
            intent="load",
            reply=f"Loaded {path}: {len(record.history)} earlier turn(s), {model}.",
            files=[str(path)],
        )

    def _export(self, intent: TurnIntent) -> ChatTurn:
        path = self._path(intent, "/export FILE.py or /export FILE.lp")
        base = self._solved_base()
        assert base.formulation is not None
        try:
            export_model(base.formulation, path, title=self.current.problem)
        except (ExportError, OSError) as error:
            raise _Refusal(f"Export failed: {error}") from None
        what = "a Pyomo script (run: python " + str(path) + ")" if path.suffix == ".py" else "an LP file"
        return ChatTurn(intent="export", reply=f"Wrote {what}: {path}.", files=[str(path)])

    def _help(self, intent: TurnIntent) -> ChatTurn:
        if intent.problem:
            return ChatTurn(intent="help", ok=False, reply=f"{intent.problem.capitalize()}.\n{COMMAND_HELP}")
        return ChatTurn(intent="help", reply=COMMAND_HELP)
