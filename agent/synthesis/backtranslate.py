"""Back-translation: an LLM writes an instance as a word problem; a number checker verifies it.

1. `instance_facts` turns the IR into a compact list of facts in words (sets, every data table,
   the decisions, the rules, the goal). A 1.5B model with a 4k context reads this far better than
   a JSON schema, and the facts carry the names the family chose (products, cities, nutrients).
2. `StoryWriter.write` asks for a story in a sampled voice (persona) in the instance's setting.
3. `check_story` extracts the story's numbers (agent.synthesis.numbers) and compares them with the
   facts: every data value must appear; numbers the facts do not explain are flagged as invented;
   the text must end in a question.
4. A failed check becomes feedback naming each missing value (with what it is and the fact line
   that holds it), each invented number, unstated integrality, a missing question or a leaked
   formulation. The next draft edits the last one when it was mostly right, else starts afresh
   with the feedback (`refine`); up to `max_rounds` drafts in all.

Two styles. `narrative`: the model retells every fact in its own sentences. `framed`: the model
writes only the opening (scene, who decides what) and the closing question, without numbers, and
the fact lines stand between them unchanged, like the data section of a textbook exercise. A 1.5B
model retelling a relation ("which towers cover which district") or a per-period table garbles it
while every number still appears, so the checker passes a story that no longer means the instance;
framed stories cannot drift from the data.
"""

from __future__ import annotations

import hashlib
import random
import re
from collections.abc import Callable
from functools import partial
from typing import Any, Literal, TypeVar

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
Refine = Literal["auto", "patch", "edit", "fresh"]
StoryStyle = Literal["narrative", "framed"]
T = TypeVar("T")
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
    whole: list[str] = Field(default_factory=list, description="decisions that must be whole numbers")
    fractional: list[str] = Field(default_factory=list, description="decisions that may be fractional")

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    def lines_with(self, numbers: list[RequiredNumber], limit: int = 6) -> list[str]:
        """The fact lines that state any of `numbers`; a table row comes with its table's title."""
        patterns = [re.compile(rf"(?<![\d.]){re.escape(n.text)}(?!\d|\.\d)") for n in numbers]
        found: list[str] = []
        title = ""
        for line in self.lines:
            if not line.startswith(" "):
                title = line
            if any(p.search(line) for p in patterns):
                found.append(f"{title} {line.strip()}" if line.startswith(" ") else line)
        return list(dict.fromkeys(found))[:limit]


class StoryCheck(BaseModel):
    passed: bool
    missing: list[RequiredNumber] = Field(default_factory=list)
    invented: list[str] = Field(
        default_factory=list, description="numbers in the story the facts do not explain"
    )
    asks_question: bool = True
    formulation_leak: bool = Field(
        default=False, description="the text defines variables or writes equations instead of a story"
    )
    unstated_whole: list[str] = Field(
        default_factory=list, description="integer decisions not said to be whole"
    )
    unstated_fractional: list[str] = Field(
        default_factory=list, description="continuous decisions not said to allow fractions"
    )
    found_numbers: int = 0
    found_required: int = 0

    def feedback(self, facts: StoryFacts) -> str:
        """The failure as an instruction for the next draft. Missing numbers come with the fact
        lines that hold them: a small model copies a line far more reliably than it finds a number."""
        lines = ["Your last draft was rejected:"]
        if self.missing:
            shown = [f"{m.text} ({m.meaning[0]})" for m in self.missing[:_MAX_FEEDBACK_ITEMS]]
            lines.append(f"- it left out these numbers: {'; '.join(shown)}")
            lines += ["  They are in these facts:", *(f"  {line}" for line in facts.lines_with(self.missing))]
        if self.invented:
            lines.append(
                "- it used numbers that are not in the facts (do not use them): "
                + ", ".join(self.invented[:_MAX_FEEDBACK_ITEMS])
            )
        if self.formulation_leak:
            lines.append("- it defined variables or wrote equations; write only the problem, in sentences")
        if self.unstated_whole:
            lines.append(
                f"- it did not say that these must be whole numbers: {'; '.join(self.unstated_whole)}"
            )
        if self.unstated_fractional:
            lines.append(
                f"- it did not say that these may be fractional: {'; '.join(self.unstated_fractional)}"
            )
        if not self.asks_question:
            lines.append(f"- it did not end with a question asking to {facts.goal}")
        return "\n".join(lines)

    @property
    def only_structure(self) -> bool:
        """Everything wrong is unstated integrality or a missing question (no data problem)."""
        structural = bool(self.unstated_whole or self.unstated_fractional or not self.asks_question)
        return structural and not (self.missing or self.invented or self.formulation_leak)

    def summary(self) -> str:
        """One line for a ledger: what failed."""
        problems = []
        if self.missing:
            problems.append(f"missing {[m.text for m in self.missing][:8]}")
        if self.invented:
            problems.append(f"invented {self.invented[:8]}")
        if self.formulation_leak:
            problems.append("wrote a formulation")
        if self.unstated_whole or self.unstated_fractional:
            problems.append("integrality unstated")
        if not self.asks_question:
            problems.append("no question")
        return ", ".join(problems) or "passed"

    @property
    def coverage(self) -> float:
        """Share of the required numbers the draft has (1.0 when none are required)."""
        total = self.found_required + len(self.missing)
        return self.found_required / total if total else 1.0


class StoryFrame(BaseModel):
    """What the model writes in the framed style; the fact lines go between the two."""

    # maxLength only bounds what a grammar-constrained server lets the model write (it once listed
    # "100 batches of ..." until the token limit); a longer reply from another server still parses.
    opening: str = Field(
        description="one or two sentences: the scene and what must be decided; no numbers",
        json_schema_extra={"maxLength": 600},
    )
    question: str = Field(
        description="one question asking for the best plan; no numbers", json_schema_extra={"maxLength": 300}
    )


class StoryRound(BaseModel):
    story: str
    check: StoryCheck
    strategy: str = Field(default="fresh", description="how this draft was asked for: fresh, patch or edit")


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
    style: StoryStyle = "narrative"


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


_INTEGRALITY_RULE = {"continuous": "fractional amounts are allowed", "integer": "whole numbers only"}
_DOMAIN_WORDS = {
    "continuous": "fractional amounts allowed",
    "integer": "whole numbers only",
    "binary": "yes or no",
}


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
    # Stated as rules too: a small model drops parenthesised notes but keeps rules.
    rules += [
        f"{v.description or v.name}: {_INTEGRALITY_RULE[v.domain]}"
        for v in f.variables
        if v.domain != "binary"
    ]
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
        whole=[v.description or v.name for v in f.variables if v.domain == "integer"],
        fractional=[v.description or v.name for v in f.variables if v.domain == "continuous"],
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
_WHOLE = re.compile(
    r"\b(?:whole|integers?|integral|indivisible|complete (?:units|batches|items)|cannot be split"
    r"|can't be split)\b",
    re.IGNORECASE,
)
_FRACTIONAL = re.compile(
    r"\b(?:fractions?|fractional|partial|decimals?|any amount|non-?integer|divisible|can be split"
    r"|may be split|need not be whole|not necessarily whole|do not have to be whole"
    r"|don't have to be whole)\b",
    re.IGNORECASE,
)
# A story must not carry its own model: LaTeX, "let x be", decision variables, "subject to".
_FORMULATION = re.compile(
    r"\\\(|\\\[|\$\$|\bdecision variables?\b|\blet\s+[a-z]\w*\s+(?:be|denote)\b|\bsubject to\b"
    r"|\bobjective function\b|^\s*[a-z]\w*\s*=\s*\S",
    re.IGNORECASE | re.MULTILINE,
)


def check_story(story: str, facts: StoryFacts) -> StoryCheck:
    numbers = extract_numbers(story)
    match = match_numbers(numbers, [r.value for r in facts.required], facts.allowed)
    missing = [r for r in facts.required if any(same_value(r.value, m) for m in match.missing)]
    invented = list(dict.fromkeys(_shown(n) for n in match.invented))
    asks = "?" in story
    leak = bool(_FORMULATION.search(story))
    # Integrality decides the optimum, and "how many units" leaves it open (a known source of
    # label disputes in NL4OPT): the story must say it whenever the model has such decisions.
    # "need not be whole" says fractional, not whole: those phrases are removed before looking.
    whole = [] if not facts.whole or _WHOLE.search(_FRACTIONAL.sub(" ", story)) else facts.whole
    fractional = [] if not facts.fractional or _FRACTIONAL.search(story) else facts.fractional
    return StoryCheck(
        passed=match.ok and asks and not leak and not whole and not fractional,
        missing=missing,
        invented=invented,
        asks_question=asks,
        formulation_leak=leak,
        unstated_whole=whole,
        unstated_fractional=fractional,
        found_numbers=match.found,
        found_required=len(facts.required) - len(missing),
    )


def _shown(number: ExtractedNumber) -> str:
    return number.text


# --- writing -------------------------------------------------------------------------------------
_LEADING_LABEL = re.compile(r"^\s*(?:\*\*)?(?:problem|word problem|story)\s*:?\s*(?:\*\*)?\s*", re.IGNORECASE)
# A small model often goes on to solve the problem; cut at the first heading or list item that
# starts a solution ("1. **Define Variables:**", "Solution:", "Let x be ...").
_TRAILING_SECTION = re.compile(
    r"\n[ \t]*(?:\d+\.\s*|[-*]\s+)?(?:\*\*|#+\s*)?\s*(?:solution|answer|formulation|model\b|let\s+\w+\s+be"
    r"|define\b|defining\b|set up\b|step\s+\d|decision variables|variables\b|objective function|constraints:"
    r"|mathematical)\b.*",
    re.IGNORECASE | re.DOTALL,
)


def clean_story(text: str) -> str:
    """The problem text without a leading "Problem:" label, code fences, or a solution after it."""
    text = text.strip().strip("`").strip()
    text = _LEADING_LABEL.sub("", text, count=1)
    text = _TRAILING_SECTION.sub("", text)
    return text.strip()


_EXAMPLE = (
    "Example facts:\n"
    "Setting: a small bakery.\n"
    "Products: Bread, Cake.\n"
    "Profit per batch ($): Bread: 30, Cake: 45.\n"
    "Oven hours per batch: Bread: 2, Cake: 3.\n"
    "Oven hours available per day: 12.\n"
    "Decide: batches of each product (whole numbers only).\n"
    "Rules:\n"
    "- oven hours used cannot exceed the hours available\n"
    "- batches of each product: whole numbers only\n"
    "Goal: maximize the total profit per day ($).\n"
    "Example problem:\n"
    "A small bakery bakes bread and cake in batches. A batch of bread earns $30 of profit and a batch "
    "of cake earns $45. A batch of bread needs 2 oven hours and a batch of cake needs 3, and the oven "
    "can run 12 hours a day. Only whole batches can be baked. How many batches of each should the "
    "bakery bake to maximize its total daily profit?\n\n"
)


def story_prompt(facts: StoryFacts, persona: str, feedback: str = "") -> str:
    """The request for one draft; `feedback` (why the last draft failed) goes right before the facts.

    A 1.5B model leaves out most data when asked for a free story, so the instruction is
    mechanical: every fact line becomes a sentence, in order."""
    note = f"{feedback}\nWrite a new draft that fixes this.\n\n" if feedback else ""
    return (
        "Rewrite the facts as a word problem for an optimization textbook. Go through the facts in "
        "order and turn every line into one or two plain sentences, keeping every number exactly as "
        "written (1200, $3.50 or 15% are fine) and adding no other numbers. No headings, lists, "
        f"variables, equations or solution. Finish with one question asking to {facts.goal}.\n\n"
        f"{_EXAMPLE}"
        f"Style: {persona}.\n{note}"
        f"Facts:\n{facts.text}\n\nProblem:"
    )


def frame_prompt(facts: StoryFacts, persona: str, feedback: str = "") -> str:
    """The request for a framed story's opening and closing question (the facts go between them)."""
    note = f"\n{feedback}\n" if feedback else ""
    return (
        f"Facts of an optimization problem:\n{facts.text}\n\n"
        "These facts will be printed unchanged in the middle of a word problem. Write the two parts "
        f"around them, as {persona}:\n"
        f"- opening: one or two sentences that set the scene ({facts.domain}) and say what has to be "
        "decided. Do not repeat the data: use no numbers at all.\n"
        f"- question: one sentence ending with a question mark that asks how to {facts.goal}. Use no "
        f"numbers at all.\n{note}"
        'Reply as JSON: {"opening": "...", "question": "..."}'
    )


_DIGIT = re.compile(r"\d")
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


def _without_numbers(text: str) -> str:
    """`text` without its sentences that contain a digit."""
    sentences = _SENTENCE_END.split(" ".join(text.split()))
    return " ".join(sentence for sentence in sentences if sentence and not _DIGIT.search(sentence))


_UNITS = re.compile(r"\s*\([^)]*\)")


def plain_question(facts: StoryFacts) -> str:
    """The templated closing question: the goal without its units."""
    return f"What plan will {_UNITS.sub('', facts.goal)}?"


def framed_story(facts: StoryFacts, frame: StoryFrame) -> str:
    """Opening, the fact lines as written (the setting line aside: the opening sets the scene), and
    the question. Sentences of the frame that carry numbers are dropped: told to use none, the 1.5B
    model still restates data there, wrongly ("Omaha can ship 15 to Raleigh" where Houston can),
    and the checker cannot catch a misplaced number that the facts do contain. An opening or a
    question left empty is replaced by a plain templated one."""
    opening = _without_numbers(frame.opening) or f"{_sentence(facts.domain)} has a plan to make."
    question = _without_numbers(frame.question)
    if not question:
        question = plain_question(facts)
    elif not question.endswith("?"):
        question = question.rstrip(".") + "?"
    body = "\n".join(line for line in facts.lines if not line.startswith("Setting:"))
    return f"{opening}\n\n{body}\n\n{question}".strip()


def patch_prompt(facts: StoryFacts, last: StoryRound) -> str:
    """Ask only for the sentences a draft lacks: its missing fact lines, unstated integrality, and
    the closing question if there is none."""
    check = last.check
    wanted = facts.lines_with(check.missing)
    unstated = [*check.unstated_whole, *check.unstated_fractional]
    wanted += [
        line.strip("- ").strip() for line in facts.lines if any(line.startswith(f"- {u}:") for u in unstated)
    ]
    question = "" if check.asks_question else f" Then write one question asking to {facts.goal}."
    listing = "\n".join(f"- {line}" for line in dict.fromkeys(wanted)) or "- (none)"
    named = "; ".join(f"{m.text} ({m.meaning[0]})" for m in check.missing[:_MAX_FEEDBACK_ITEMS])
    missing = f"It left out these numbers: {named}.\n" if named else ""
    # The facts come first and the request last: shown a story at the end, a small model echoes it.
    return (
        f"Facts to add:\n{listing}\n\n"
        f"Problem so far (it leaves those facts out):\n{last.story}\n\n{missing}"
        "Write one or two plain sentences for each fact to add, in the same style, keeping every "
        f"number exactly as written and adding no other numbers.{question} Do not repeat the problem "
        "and do not solve it. Reply with the new sentences only.\n\nNew sentences:"
    )


_PATCH_MARKERS = re.compile(
    r"^\s*(?:(?:new\s+)?sentences?\s*:|[-*]\s+|\d{1,2}[.)]\s+)", re.IGNORECASE | re.MULTILINE
)


def clean_patch(text: str) -> str:
    """The new sentences as plain text (labels, list markers and any solution removed)."""
    text = clean_story(text)
    text = _PATCH_MARKERS.sub("", text)
    return " ".join(text.split())


_LAST_SENTENCE = re.compile(r"(?:^|(?<=[.!?]))\s+(?=[^.!?]*\?\s*$)")


def _normal(sentence: str) -> str:
    return " ".join(re.sub(r"[^a-z0-9$.%]+", " ", sentence.lower()).split())


def splice(story: str, patch: str) -> str:
    """`story` with `patch` inserted before its closing question (or appended when it has none).
    A question in the patch is kept only when the story lacks one."""
    story = story.strip()
    # A small model often echoes the story before its new sentences: keep only what is new.
    known = {_normal(sentence) for sentence in _SENTENCE_END.split(story)}
    fresh = [p for p in _SENTENCE_END.split(patch) if _normal(p) not in known]
    patch = " ".join(fresh)
    if not patch:
        return story
    if not story.endswith("?"):
        return f"{story} {patch}".strip()
    statements = " ".join(p for p in fresh if not p.endswith("?"))
    cut = [m.start() for m in _LAST_SENTENCE.finditer(story)]
    if not cut:  # the story is a single question
        return f"{statements} {story}".strip()
    head, question = story[: cut[-1]], story[cut[-1] :].strip()
    return f"{head} {statements} {question}".strip()


def complete_structure(story: str, check: StoryCheck, facts: StoryFacts) -> tuple[str, StoryCheck]:
    """Add templated sentences for unstated integrality and a missing closing question."""
    sentences = [f"The {what} must be whole numbers." for what in check.unstated_whole]
    sentences += [f"The {what} may be fractional." for what in check.unstated_fractional]
    if not check.asks_question:
        sentences.append(plain_question(facts))
    completed = splice(story, " ".join(sentences))
    return completed, check_story(completed, facts)


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
        temperature: float = 0.5,
        max_tokens: int = 900,
        refine: Refine = "auto",
        complete_structure: bool = True,
        style: StoryStyle = "narrative",
    ) -> None:
        if max_rounds < 1:
            raise ValueError("max_rounds must be >= 1")
        self.client = client
        self.max_rounds = max_rounds
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.refine = refine
        # Integrality and the closing question are structure, not data: when they are all a draft
        # lacks, a templated sentence adds them instead of spending a round of a slow model.
        self.complete_structure = complete_structure
        self.style = style

    def _strategy(self, last: StoryRound) -> Refine:
        """How to fix the last draft. A 1.5B model asked to rewrite a draft copies it, mistakes and
        all, and asked for a fresh one drops data again; what it does well is turn a few fact lines
        into sentences. So (auto) a draft with only omissions is patched: the model writes the
        missing sentences and they go in before the closing question. A draft with invented numbers
        or a leaked model cannot be patched and is redone with the feedback."""
        if self.refine != "auto":
            return self.refine
        return "fresh" if last.check.formulation_leak or last.check.invented else "patch"

    def _messages(
        self, facts: StoryFacts, persona: str, strategy: Refine, last: StoryRound | None
    ) -> list[ChatMessage]:
        system = ChatMessage(role="system", content=SYSTEM_PROMPT)
        if last is None:
            return [system, ChatMessage(role="user", content=story_prompt(facts, persona))]
        feedback = last.check.feedback(facts)
        if strategy == "patch":
            return [system, ChatMessage(role="user", content=patch_prompt(facts, last))]
        if strategy == "edit":
            return [
                system,
                ChatMessage(role="user", content=story_prompt(facts, persona)),
                ChatMessage(role="assistant", content=last.story),
                ChatMessage(
                    role="user",
                    content=f"{feedback}\nRewrite the whole problem: keep what is right, add what is "
                    "missing, plain sentences only.\n\nProblem:",
                ),
            ]
        return [system, ChatMessage(role="user", content=story_prompt(facts, persona, feedback))]

    def write(self, instance: SynthInstance) -> BackTranslation:
        """Write and refine a story. LLMUnavailableError propagates (the endpoint is down); a
        request the endpoint refuses (e.g. too long) ends this item with `error` set."""
        facts = instance_facts(instance)
        persona = pick_persona(instance.key)
        seed = int(hashlib.sha256(instance.key.encode()).hexdigest()[:8], 16)
        result = BackTranslation(
            story=None,
            passed=False,
            rounds=0,
            persona=persona,
            domain=instance.domain,
            model=self.client.config.model,
            style=self.style,
        )
        if self.style == "framed":
            return self._write_framed(facts, persona, seed, result)
        for round_number in range(self.max_rounds):
            last = result.history[-1] if result.history else None
            strategy: Refine = self._strategy(last) if last is not None else "fresh"
            messages = self._messages(facts, persona, strategy, last)
            reply = self._ask(partial(self.client.chat, messages), seed, round_number, result)
            if reply is None:
                break
            if strategy == "patch" and last is not None:
                story = splice(last.story, clean_patch(reply.text))
            else:
                story = clean_story(reply.text)
            if self._judge(story, strategy, facts, result):
                break
        return result

    def _ask(self, call: Callable[..., T], seed: int, round_number: int, result: BackTranslation) -> T | None:
        """One round's reply from `call` (client.chat, or client.structured that re-asks once).
        Every reply obtained counts in `result.llm_calls`, cached or not; a refused request sets
        `result.error` and returns None."""
        with self.client.track() as tracker:
            try:
                return call(
                    temperature=self.temperature,
                    max_tokens=self.max_tokens,
                    seed=seed + round_number,
                    sample_index=round_number,
                )
            except (LLMRequestError, LLMReplyError) as error:
                result.error = f"{type(error).__name__}: {error}"
                return None
            finally:
                result.llm_calls += tracker.usage.calls + tracker.usage.cache_hits

    def _judge(self, story: str, strategy: str, facts: StoryFacts, result: BackTranslation) -> bool:
        """Check a draft (completing structure-only gaps by template), record the round, and say
        whether it passed."""
        check = check_story(story, facts)
        if self.complete_structure and check.only_structure:
            story, check = complete_structure(story, check, facts)
            strategy = f"{strategy}+completed"
        result.history.append(StoryRound(story=story, check=check, strategy=strategy))
        result.rounds = len(result.history)
        if check.passed:
            result.story, result.passed = story, True
        return check.passed

    def _write_framed(
        self, facts: StoryFacts, persona: str, seed: int, result: BackTranslation
    ) -> BackTranslation:
        """Rounds of opening + question until the story passes the checker. The data cannot be
        missing and numbers in the frame are dropped, so what can still fail is mostly a frame that
        writes a formulation; its feedback goes into the next round."""
        feedback = ""
        for round_number in range(self.max_rounds):
            messages = [
                ChatMessage(role="system", content=SYSTEM_PROMPT),
                ChatMessage(role="user", content=frame_prompt(facts, persona, feedback)),
            ]
            frame = self._ask(
                partial(self.client.structured, messages, StoryFrame), seed, round_number, result
            )
            if frame is None:
                break
            if self._judge(framed_story(facts, frame), "framed", facts, result):
                break
            feedback = result.history[-1].check.feedback(facts)
        return result
