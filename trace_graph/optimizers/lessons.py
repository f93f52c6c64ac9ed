"""Lessons: grow a list of short rules from feedback, one new rule per step.

Rewriting a whole prompt is more than a small model can do: asked for a new value of a list of
lessons, the embedded 1.5B optimizer copied the parameter's description into it or quoted one
problem's fix. Writing one sentence that would have prevented the mistakes it is shown is within
its reach (the "insights" of ExpeL and Reflexion). The parameter holds lessons as lines starting
with '- '; a step appends one and drops the oldest beyond ``max_lessons``. Lessons it added that
are gone again (a trainer reverted them) are shown as tried, and a repeat of any earlier lesson is
sent back.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from pydantic import BaseModel, Field

from trace_graph.llm import ChatMessage, LLMClient, LLMReplyError, LLMRequestError
from trace_graph.module import Module
from trace_graph.nodes import ParameterNode
from trace_graph.optimizers.base import Optimizer, ParameterUpdate, StepResult
from trace_graph.optimizers.prompt import Section, render_sections
from trace_graph.report import short_repr

SYSTEM_PROMPT = """\
You improve a program by teaching it lessons. You see the lessons it follows now and feedback on \
its latest outputs. Find the mistake behind the feedback and write ONE new lesson: one short \
sentence in the imperative, a general rule that would have prevented that kind of mistake on any \
input (a rule to follow, not a description of the feedback). Never copy \
names, numbers or text from the feedback, and do not repeat a lesson it already has. \
Reply with one JSON object: {"reasoning": "<the mistake, briefly>", "lesson": "<the new rule>"}"""

# A lesson sharing this share of its words with an earlier one is the same lesson again.
SAME_LESSON_OVERLAP = 0.8
RESAMPLE_TEMPERATURE = 0.8
_REPEATED = (
    "That lesson was added before and taken back: it did not help. Write a different lesson, about "
    "another mistake the feedback shows."
)

_CUT_OFF = (
    "That lesson was cut off at {limit} characters, mid-sentence. Write the rule again as one complete "
    "sentence well under {limit} characters."
)
LESSON_MAX_CHARS = 160
# A cut-off lesson keeps its first clauses when they say this much; a shorter stump is asked again.
MIN_KEPT_CHARS = 40
_CLAUSE_END = re.compile(r"[.;:!?,](?=\s)")

_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d{1,2}[.)])\s*")


class LessonReply(BaseModel):
    # Required and first: with an optional reasoning the embedded model skipped it and wrote its
    # analysis ("The feedback indicates that ...") as the lesson.
    reasoning: str = Field(min_length=1, max_length=600, description="the mistake behind the feedback")
    lesson: str = Field(
        min_length=1,
        max_length=LESSON_MAX_CHARS,
        description="one general rule in the imperative, e.g. 'Write a minimum requirement with >='",
    )


def complete_lesson(lesson: str, limit: int = LESSON_MAX_CHARS) -> str | None:
    """The lesson, or its complete clauses when the length bound cut it mid-sentence (constrained
    decoding stops a rambling lesson at exactly ``limit`` characters); None when too little is left.
    """
    text = lesson.strip()
    if len(lesson) < limit or text.endswith((".", "!", "?")):
        return text
    ends = [match.start() for match in _CLAUSE_END.finditer(text)]
    kept = text[: ends[-1]].rstrip() if ends else ""
    return f"{kept}." if len(kept) >= MIN_KEPT_CHARS else None


def lesson_lines(value: str) -> list[str]:
    """The lessons of a value, without their bullets."""
    lines = (_BULLET.sub("", line).strip() for line in value.splitlines())
    return [line for line in lines if line]


def with_lesson(value: str, lesson: str, max_lessons: int) -> str:
    """``value`` with ``lesson`` appended as a '- ' line, the oldest dropped beyond ``max_lessons``;
    unchanged when the lesson is already there (compared case- and space-insensitively)."""
    new = " ".join(_BULLET.sub("", lesson).split())
    lessons = lesson_lines(value)
    if not new or new.casefold() in {line.casefold() for line in lessons}:
        return value
    kept = [*lessons, new][-max_lessons:]
    return "\n".join(f"- {line}" for line in kept)


class Lessons(Optimizer):
    """``Lessons([parameter], llm, max_lessons=6)``: one text parameter holding '- ' lessons."""

    def __init__(
        self,
        parameters: Module | Iterable[ParameterNode],
        llm: LLMClient | None = None,
        *,
        max_lessons: int = 6,
        objective: str | None = None,
        prompt_budget: int = 6_000,
        feedback_limit: int = 700,
        temperature: float | None = None,
        max_tokens: int | None = 400,
        repeat_retries: int = 2,
    ) -> None:
        super().__init__(parameters, llm, temperature=temperature, max_tokens=max_tokens)
        if len(self._keys) != 1:
            raise ValueError(f"Lessons trains one text parameter, got {sorted(self._keys)}")
        (self.parameter,) = self._keys.values()
        if not isinstance(self.parameter._value, str):
            raise ValueError(f"Lessons needs a text parameter, got {type(self.parameter._value).__name__}")
        if max_lessons < 1:
            raise ValueError("max_lessons must be at least 1")
        self.max_lessons = max_lessons
        self.objective = objective
        self.prompt_budget = prompt_budget
        self.feedback_limit = feedback_limit
        self.repeat_retries = repeat_retries
        self.proposed: list[str] = []  # every lesson this optimizer added, oldest first

    def memory_state(self) -> dict[str, Any]:
        return {"proposed": list(self.proposed)}

    def load_memory_state(self, state: dict[str, Any]) -> None:
        self.proposed = [str(lesson) for lesson in state.get("proposed", [])]

    def _messages(self) -> tuple[list[ChatMessage], dict[str, ParameterNode]] | None:
        records = self.feedback_records()
        if not records:
            return None
        current = lesson_lines(self.parameter._value)
        held = {line.casefold() for line in current}
        tried = [line for line in self.proposed if line.casefold() not in held]
        sections = [
            Section("Objective", [self.objective] if self.objective else [], priority=True),
            Section(
                "Lessons",
                [f"- {line}" for line in current] or ["(none yet)"],
                preamble="The program follows these lessons now:",
                priority=True,
            ),
            Section(
                "Tried",
                [f"- {line}" for line in tried[-self.max_lessons :]],
                preamble="Lessons added before, then taken back (write a different one):",
            ),
            # Newest first: a rejection of the last proposal is what the model must read.
            Section("Feedback", [short_repr(r.text, self.feedback_limit) for r in reversed(records)]),
        ]
        messages = [
            ChatMessage(role="system", content=SYSTEM_PROMPT),
            ChatMessage(role="user", content=render_sections(sections, self.prompt_budget)),
        ]
        return messages, {self.key_of(self.parameter): self.parameter}

    def step(self) -> StepResult:
        """Ask for one lesson and add it. Never raises on a bad reply (a dead endpoint does raise)."""
        if self.llm is None:
            raise RuntimeError("this optimizer has no LLM client: pass llm=LLMClient(...) to use step()")
        built = self._messages()
        if built is None:
            return StepResult(skipped="no parameter has feedback: call backward() on an output first")
        messages, _ = built
        result = StepResult(prompt_chars=sum(len(message.content) for message in messages))
        with self.llm.track() as tracker:
            try:
                reply = self._new_lesson(messages, result)
            except (LLMReplyError, LLMRequestError) as error:
                reply = None
                result.errors.append(f"the LLM call failed: {error}")
        result.usage = tracker.usage
        if reply is None:
            return result
        result.reasoning, result.raw_reply = reply.reasoning, reply.model_dump_json()
        old = self.parameter._value
        new = with_lesson(old, reply.lesson, self.max_lessons)
        if new != old:
            self.proposed.append(lesson_lines(new)[-1])
            self.parameter.value = new
            result.updates.append(
                ParameterUpdate(name=self.key_of(self.parameter), old_value=old, new_value=new)
            )
        return result

    def _new_lesson(self, messages: list[ChatMessage], result: StepResult) -> LessonReply | None:
        """A lesson not proposed before. A repeat is sent back and sampled again: at temperature 0 the
        embedded model wrote the same lesson in eight steps running, whatever the feedback."""
        assert self.llm is not None
        temperature = self.temperature
        problem = ""
        for _ in range(self.repeat_retries + 1):
            reply = self.llm.structured(
                messages, LessonReply, temperature=temperature, max_tokens=self.max_tokens
            )
            lesson = complete_lesson(reply.lesson)
            if lesson is None:
                problem, follow_up = "was cut off mid-sentence", _CUT_OFF.format(limit=LESSON_MAX_CHARS)
            elif self.was_proposed(lesson):
                problem, follow_up = "had been tried before", _REPEATED
            else:
                return reply.model_copy(update={"lesson": lesson})
            messages = [
                *messages,
                ChatMessage(role="assistant", content=reply.model_dump_json()),
                ChatMessage(role="user", content=follow_up),
            ]
            temperature = max(temperature or 0.0, RESAMPLE_TEMPERATURE)
        result.errors.append(f"every lesson proposed {problem} (last: {reply.lesson!r})")
        return None

    def was_proposed(self, lesson: str) -> bool:
        """Whether ``lesson`` says what an earlier proposal said (same words, nearly all of them)."""
        words = _words(lesson)
        return any(_overlap(words, _words(earlier)) >= SAME_LESSON_OVERLAP for earlier in self.proposed)


def _words(text: str) -> set[str]:
    return set(re.findall(r"[a-z0-9]+", text.casefold()))


def _overlap(first: set[str], second: set[str]) -> float:
    return len(first & second) / len(first | second) if first | second else 1.0
