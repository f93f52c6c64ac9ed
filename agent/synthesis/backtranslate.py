"""Back-translation: an LLM writes an instance as a word problem; a number checker verifies it.

1. `instance_facts` turns the IR into a compact list of facts in words (sets, every data table,
   the decisions, the rules, the goal). A 1.5B model with a 4k context reads this far better than
   a JSON schema, and the facts carry the names the family chose (products, cities, nutrients).
2. `StoryWriter.write` asks for a story in a sampled voice (persona) in the instance's setting.
3. `check_story` extracts the story's numbers (agent.synthesis.numbers) and compares them with the
   facts: every data value must appear; numbers the facts do not explain are flagged as invented;
   the text must end in a question.
4. A failed check becomes feedback naming each missing value (with what it is) and each invented
   number; the story is rewritten, up to `max_rounds` stories in all.
"""

from __future__ import annotations

import hashlib
import random
import re
from typing import Any

from pydantic import BaseModel, Field

from agent.synthesis.families.base import SynthInstance
from agent.synthesis.numbers import ExtractedNumber, extract_numbers, format_number, match_numbers, same_value
from solvers.ir import Formulation, Parameter
from trace_graph.llm.client import ChatMessage, LLMClient, LLMReplyError, LLMRequestError

# Styles rather than characters: a small model told "voice: a teacher" writes the teacher into the
# story as the decision maker.
PERSONAS = (
    "a business owner asking for help, in the first person",
    "a short brief from an analyst to a manager",
    "a textbook exercise",
    "an email from a planner to a colleague",
    "a manager's request for a plan",
    "a homework problem",
)
SYSTEM_PROMPT = (
    "You turn business facts into clear, realistic word problems. Reply with the problem text only."
)
_MAX_FEEDBACK_ITEMS = 12  # more than this overwhelms a small model; the rest come next round


class RequiredNumber(BaseModel):
    value: float
    text: str = Field(description="as the facts write it")
    meaning: list[str] = Field(description="what the value is, e.g. 'profit per unit ($) of Chairs'")


class StoryFacts(BaseModel):
    """What the story must say: fact lines for the prompt, and the numbers the checker wants."""

    domain: str
    lines: list[str]
    required: list[RequiredNumber]
    allowed: list[float] = Field(description="numbers a story may use without them being data")
    goal: str

    @property
    def text(self) -> str:
        return "\n".join(self.lines)


class StoryCheck(BaseModel):
    passed: bool
    missing: list[RequiredNumber] = Field(default_factory=list)
    invented: list[str] = Field(
        default_factory=list, description="numbers in the story the facts do not explain"
    )
    asks_question: bool = True
    found_numbers: int = 0

    def feedback(self, goal: str) -> str:
        """The failure as an instruction for the rewrite."""
        lines = ["The problem is not right yet:"]
        if self.missing:
            shown = [f"{m.text} ({m.meaning[0]})" for m in self.missing[:_MAX_FEEDBACK_ITEMS]]
            lines.append(f"- these numbers from the facts are missing: {'; '.join(shown)}")
        if self.invented:
            lines.append(
                "- these numbers are not in the facts, remove them: "
                + ", ".join(self.invented[:_MAX_FEEDBACK_ITEMS])
            )
        if not self.asks_question:
            lines.append(f"- it must end with a question asking to {goal}")
        lines.append(
            "Rewrite the whole problem using every number from the facts and no other numbers.\n\nProblem:"
        )
        return "\n".join(lines)


class StoryRound(BaseModel):
    story: str
    check: StoryCheck


class BackTranslation(BaseModel):
    """The outcome of writing one story: the passing text (or None) and every round."""

    story: str | None
    passed: bool
    rounds: int
    persona: str
    domain: str
    model: str
    history: list[StoryRound] = Field(default_factory=list)
    llm_calls: int = 0
    error: str | None = None


# --- facts ---------------------------------------------------------------------------------------
def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] if text else text


def _is_relation(p: Parameter) -> bool:
    """A 0/1 table stored sparsely (default 0, listed entries 1): written as lists of names."""
    if p.default != 0 or not isinstance(p.value, dict):
        return False
    return all(v == 1 for v in _leaves(p.value))


def _leaves(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [leaf for item in value.values() for leaf in _leaves(item)]
    return [value]


def _entries(value: Any, path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], float]]:
    if isinstance(value, dict):
        return [entry for key, item in value.items() for entry in _entries(item, (*path, str(key)))]
    return [(path, float(value))]


def _key_labels(f: Formulation) -> dict[str, str]:
    """Integer sets (periods, bins) get a word before their numbers: "period 3", not a bare "3"."""
    return {
        s.name: s.name.lower().removesuffix("s") + " "
        for s in f.sets
        if s.elements and all(isinstance(e, int) for e in s.elements)
    }


def _parameter_lines(p: Parameter, labels: dict[str, str]) -> list[str]:
    label = _sentence(p.description or p.name)
    if not p.index:
        return [f"{label}: {format_number(float(p.value))}."]  # type: ignore[arg-type]
    assert isinstance(p.value, dict)
    first = labels.get(p.index[0], "")
    second = labels.get(p.index[-1], "")
    if _is_relation(p):
        if len(p.index) == 1:
            return [f"{label}: {', '.join(first + str(k) for k in p.value)}."]
        rows = [
            f"{first}{row}: {', '.join(second + str(k) for k in cols)}"
            for row, cols in p.value.items()
            if isinstance(cols, dict) and cols
        ]
        return [f"{label}:", *[f"  {r}" for r in rows]]
    if len(p.index) == 1:
        return [
            f"{label}: "
            + ", ".join(f"{first}{k}: {format_number(float(v))}" for k, v in p.value.items())
            + "."
        ]
    lines = [f"{label}:"]
    for row, cols in p.value.items():
        cells = ", ".join(f"{second}{k}: {format_number(float(v))}" for k, v in cols.items())
        lines.append(f"  {first}{row}: {cells}")
    return lines


_DOMAIN_WORDS = {"continuous": "may be fractional", "integer": "whole numbers", "binary": "yes or no"}


def instance_facts(instance: SynthInstance) -> StoryFacts:
    """The instance as fact lines plus the numbers a faithful story must contain."""
    f = instance.formulation
    lines = [f"Setting: {instance.domain}."]
    labels = _key_labels(f)
    for s in f.sets:
        members = ", ".join(f"{labels.get(s.name, '')}{e}" for e in s.elements)
        lines.append(f"{s.name} ({s.description}): {members}." if s.description else f"{s.name}: {members}.")
    for p in f.parameters:
        lines.extend(_parameter_lines(p, labels))
    for v in f.variables:
        bounds = []
        if v.domain != "binary" and v.upper is not None:
            bounds.append(f"at most {format_number(v.upper)}")
        if v.domain != "binary" and v.lower not in (None, 0.0):
            bounds.append(f"at least {format_number(v.lower)}")  # type: ignore[arg-type]
        extra = f", {', '.join(bounds)}" if bounds else ""
        lines.append(f"Decide: {v.description or v.name} ({_DOMAIN_WORDS[v.domain]}{extra}).")
    rules = [c.description for c in f.constraints if c.description]
    if rules:
        lines.append("Rules:")
        lines.extend(f"- {rule}" for rule in dict.fromkeys(rules))
    goal = f"{f.objective.sense} the {f.objective.description or 'objective'}"
    lines.append(f"Goal: {goal}.")
    return StoryFacts(
        domain=instance.domain,
        lines=lines,
        required=required_numbers(f),
        allowed=allowed_numbers(f),
        goal=goal,
    )


def required_numbers(f: Formulation) -> list[RequiredNumber]:
    """Every distinct data value (0 and 1 excepted: stories say "none", "each", "a") with what it is."""
    found: dict[str, RequiredNumber] = {}
    for p in f.parameters:
        if _is_relation(p):
            continue
        entries = [((), float(p.value))] if not p.index else _entries(p.value)  # type: ignore[arg-type]
        for path, value in entries:
            _add(found, value, f"{p.description or p.name}{' of ' + ', '.join(path) if path else ''}")
    for v in f.variables:
        if v.domain == "binary":
            continue
        if v.upper is not None:
            _add(found, v.upper, f"upper limit of {v.description or v.name}")
        if v.lower not in (None, 0.0):
            _add(found, float(v.lower), f"lower limit of {v.description or v.name}")  # type: ignore[arg-type]
    return list(found.values())


def _add(found: dict[str, RequiredNumber], value: float, meaning: str) -> None:
    if value in (0.0, 1.0):
        return
    key = format_number(value)
    if key in found:
        found[key].meaning.append(meaning)
    else:
        found[key] = RequiredNumber(value=value, text=key, meaning=[meaning])


_LITERAL = re.compile(r"(?<![\w.])\d+(?:\.\d+)?")


def allowed_numbers(f: Formulation) -> list[float]:
    """Numbers a story may use that are not data: set sizes, period numbers, model constants."""
    allowed = {0.0, 1.0, 100.0}
    for s in f.sets:
        allowed.add(float(len(s.elements)))
        allowed.update(float(e) for e in s.elements if isinstance(e, int))
    texts = [
        f.objective.expression,
        *(c.expression for c in f.constraints),
        *(c.where or "" for c in f.constraints),
    ]
    for text in texts:
        allowed.update(float(m) for m in _LITERAL.findall(text))
    return sorted(allowed)


# --- checking ------------------------------------------------------------------------------------
def check_story(story: str, facts: StoryFacts) -> StoryCheck:
    numbers = extract_numbers(story)
    match = match_numbers(numbers, [r.value for r in facts.required], facts.allowed)
    missing = [r for r in facts.required if any(same_value(r.value, m) for m in match.missing)]
    invented = list(dict.fromkeys(_shown(n) for n in match.invented))
    asks = "?" in story
    return StoryCheck(
        passed=match.ok and asks,
        missing=missing,
        invented=invented,
        asks_question=asks,
        found_numbers=match.found,
    )


def _shown(number: ExtractedNumber) -> str:
    return number.text


# --- writing -------------------------------------------------------------------------------------
_LEADING_LABEL = re.compile(r"^\s*(?:\*\*)?(?:problem|word problem|story)\s*:?\s*(?:\*\*)?\s*", re.IGNORECASE)
_TRAILING_SECTION = re.compile(
    r"\n\s*(?:\*\*|#+\s*)?(?:solution|answer|formulation|model|let\s+\w+\s+be|variables)\b.*",
    re.IGNORECASE | re.DOTALL,
)


def clean_story(text: str) -> str:
    """The problem text without a leading "Problem:" label, code fences, or a solution after it."""
    text = text.strip().strip("`").strip()
    text = _LEADING_LABEL.sub("", text, count=1)
    text = _TRAILING_SECTION.sub("", text)
    return text.strip()


def story_prompt(facts: StoryFacts, persona: str) -> str:
    return (
        "Write a realistic word problem for an optimization class.\n"
        f"Style: {persona}. Setting: {facts.domain}.\n"
        "Use every number in the facts, written as digits (1200, $3.50 and 15% are fine). "
        "Do not add any other "
        "number, do not solve the problem, do not write formulas. Mention every rule. "
        f"End with one question asking to {facts.goal}.\n\n"
        f"Facts:\n{facts.text}\n\nProblem:"
    )


def pick_persona(key: str) -> str:
    """A persona chosen by the item's key, so a rerun asks for the same voice."""
    digest = int(hashlib.sha256(key.encode()).hexdigest()[:8], 16)
    return PERSONAS[random.Random(digest).randrange(len(PERSONAS))]


class StoryWriter:
    """`StoryWriter(client).write(instance)` -> BackTranslation; see the module docstring."""

    def __init__(
        self,
        client: LLMClient,
        *,
        max_rounds: int = 3,
        temperature: float = 0.7,
        max_tokens: int = 900,
    ) -> None:
        if max_rounds < 1:
            raise ValueError("max_rounds must be >= 1")
        self.client = client
        self.max_rounds = max_rounds
        self.temperature = temperature
        self.max_tokens = max_tokens

    def write(self, instance: SynthInstance) -> BackTranslation:
        """Write and refine a story. LLMUnavailableError propagates (the endpoint is down); a
        request the endpoint refuses (e.g. too long) ends this item with `error` set."""
        facts = instance_facts(instance)
        persona = pick_persona(instance.key)
        prompt = [
            ChatMessage(role="system", content=SYSTEM_PROMPT),
            ChatMessage(role="user", content=story_prompt(facts, persona)),
        ]
        messages = list(prompt)
        history: list[StoryRound] = []
        seed = int(hashlib.sha256(instance.key.encode()).hexdigest()[:8], 16)
        result = BackTranslation(
            story=None,
            passed=False,
            rounds=0,
            persona=persona,
            domain=instance.domain,
            model=self.client.config.model,
        )
        for round_number in range(self.max_rounds):
            try:
                reply = self.client.chat(
                    messages,
                    temperature=self.temperature,
                    max_tokens=self.max_tokens,
                    seed=seed + round_number,
                    sample_index=round_number,
                )
            except (LLMRequestError, LLMReplyError) as error:
                result.error = f"{type(error).__name__}: {error}"
                break
            result.llm_calls += 1
            story = clean_story(reply.text)
            check = check_story(story, facts)
            history.append(StoryRound(story=story, check=check))
            result.rounds = round_number + 1
            if check.passed:
                result.story, result.passed = story, True
                break
            # Only the latest attempt is shown back: earlier ones would crowd a 4k context.
            messages = [
                *prompt,
                ChatMessage(role="assistant", content=story),
                ChatMessage(role="user", content=check.feedback(facts.goal)),
            ]
        result.history = history
        return result
