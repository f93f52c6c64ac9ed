"""What does a chat turn ask for? Slash commands and clear phrasings are read by rules; only a
message the rules cannot place (a long text while a model exists: a new problem, or a change
described at length?) costs an LLM call, because each call takes 6-30 s on the local model.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, Field

from trace_graph.llm.client import LLMClient

IntentKind = Literal[
    "new_problem",
    "edit",
    "what_if",
    "why_not",
    "sensitivity",
    "diagnose",
    "explain",
    "undo",
    "save",
    "load",
    "export",
    "show",
    "help",
    "unclassified",  # the turn failed before its intent was known (e.g. the LLM was unreachable)
]

# slash command -> intent; edit commands carry their own syntax (see agent.chat.edits)
EDIT_COMMANDS = ("set", "add", "remove", "replace", "bounds", "domain", "objective")
_COMMANDS: dict[str, IntentKind] = {
    "undo": "undo",
    "save": "save",
    "load": "load",
    "export": "export",
    "model": "show",
    "show": "show",
    "help": "help",
    "whatif": "what_if",
    "whynot": "why_not",
    "sensitivity": "sensitivity",
    "diagnose": "diagnose",
    "explain": "explain",
    "new": "new_problem",
    **{name: "edit" for name in EDIT_COMMANDS},
}

COMMAND_HELP = """\
/new TEXT              solve a new problem (any plain description works too)
/set NAME VALUE        new limit of a constraint or value of a parameter (NAME[i,j] for an entry)
/add NAME: EXPR        add a constraint          /remove NAME     remove a constraint
/replace NAME: EXPR    rewrite a constraint      /objective maximize|minimize [EXPR]
/bounds VAR LO HI      bounds (none = unbounded) /domain VAR continuous|integer|binary
/whatif NAME VALUE     try a change on a copy    /whynot VAR [VALUE]  force a decision and compare
/sensitivity  /diagnose  /explain  /model  /undo
/save FILE.json  /load FILE.json  /export FILE.py|FILE.lp  /help  /quit
Plain words work too: "oven hours are now 50", "what if demand is 30?", "why is plant B closed?\""""

LONG_MESSAGE_WORDS = 25  # shorter messages about an existing model are edits unless a rule says more


class TurnIntent(BaseModel):
    kind: IntentKind
    argument: str = Field(default="", description="the text to act on: a file name, an edit, a question")
    command: str | None = Field(default=None, description="the slash command, when one was typed")
    source: Literal["command", "rule", "llm"] = "rule"
    problem: str | None = Field(default=None, description="an unknown slash command, said plainly")


class IntentReply(BaseModel):
    """The LLM's classification of one message."""

    intent: Literal["new_problem", "edit", "what_if", "why_not", "sensitivity", "diagnose", "explain"]


def parse_command(text: str) -> TurnIntent | None:
    """`/set oven 50` -> edit; None when `text` is not a slash command."""
    stripped = text.strip()
    if not stripped.startswith("/"):
        return None
    name, _, argument = stripped[1:].partition(" ")
    name = name.lower().replace("-", "").replace("_", "")
    kind = _COMMANDS.get(name)
    if kind is None:
        return TurnIntent(kind="help", command=name, source="command", problem=f"unknown command /{name}")
    return TurnIntent(kind=kind, argument=argument.strip(), command=name, source="command")


def _file(extensions: str) -> str:
    return rf"[\"']?(?P<file>[^\s\"']+\.(?:{extensions}))[\"']?"


_RULES: list[tuple[re.Pattern[str], IntentKind]] = [
    (re.compile(r"^(undo|undo (that|it|the last (change|edit))|go back|revert( that)?)\W*$", re.I), "undo"),
    (re.compile(rf"^save\b.*?\b(?:to|as|in)\s+{_file('json')}\W*$", re.I), "save"),
    (re.compile(rf"^(?:load|open|restore)\b.*?\s{_file('json')}\W*$", re.I), "load"),
    (re.compile(rf"^export\b.*?\s{_file('py|lp')}\W*$", re.I), "export"),
    (re.compile(r"^(what if|what happens if|what would happen if|suppose|imagine)\b", re.I), "what_if"),
    (re.compile(r"infeasib|conflict|diagnos|no feasible|cannot be solved|can't be solved", re.I), "diagnose"),
    (
        re.compile(r"sensitiv|shadow price|\bduals?\b|reduced cost|\bworth\b|marginal value", re.I),
        "sensitivity",
    ),
    (re.compile(r"^(show|print|display|list)\b.*\b(model|formulation|constraints)\b", re.I), "show"),
    (re.compile(r"^(explain|describe|summari[sz]e)\b", re.I), "explain"),
]
_WHY = re.compile(r"^(why|how come)\b", re.I)
_NEGATION = re.compile(r"\b(not|no|none|zero|closed|never|nothing|unused|idle|any)\b|n't\b|\b0\b", re.I)
_NEW_PROBLEM = re.compile(r"^(new|another|different) problem\b\W*", re.I)


def classify_by_rules(text: str, has_model: bool) -> TurnIntent | None:
    """The intent when the wording settles it; None when only an LLM could tell."""
    command = parse_command(text)
    if command is not None:
        return command
    stripped = text.strip()
    new = _NEW_PROBLEM.match(stripped)
    if new:
        return TurnIntent(kind="new_problem", argument=stripped[new.end() :].strip())
    for pattern, kind in _RULES[:4]:  # session commands work with or without a model
        match = pattern.search(stripped)
        if match:
            argument = match.groupdict().get("file") or ""
            return TurnIntent(kind=kind, argument=argument)
    if not has_model:
        return TurnIntent(kind="new_problem", argument=stripped)
    if _WHY.match(stripped):
        if re.search(r"infeasib|no solution", stripped, re.I):
            return TurnIntent(kind="diagnose", argument=stripped)
        kind: IntentKind = "why_not" if _NEGATION.search(stripped) else "explain"
        return TurnIntent(kind=kind, argument=stripped)
    for pattern, rule_kind in _RULES[4:]:
        if pattern.search(stripped):
            return TurnIntent(kind=rule_kind, argument=stripped)
    if len(stripped.split()) < LONG_MESSAGE_WORDS:
        return TurnIntent(kind="edit", argument=stripped)
    return None


INTENT_SYSTEM = "You sort a chat message about an optimization model into one category. Answer with JSON."
INTENT_CATEGORIES = """\
Categories:
- new_problem: describes a different, complete problem to solve from scratch
- edit: changes the current model (data, limits, constraints, objective) for good
- what_if: asks what would happen under a change, without keeping it
- why_not: asks why a decision is zero, closed or not chosen
- sensitivity: asks what a resource is worth or how the optimum reacts to data
- diagnose: asks why the model has no solution
- explain: asks to explain the solution or the model
Example: "Now make it a new problem: a farm grows wheat and corn ..." -> {"intent": "new_problem"}"""


def intent_prompt(text: str, model_summary: str) -> list[dict[str, str]]:
    user = f"Current model: {model_summary}\n\n{INTENT_CATEGORIES}\n\nMessage: {text.strip()}\nJSON:"
    return [{"role": "system", "content": INTENT_SYSTEM}, {"role": "user", "content": user}]


def classify(text: str, has_model: bool, llm: LLMClient, model_summary: str = "") -> TurnIntent:
    """Rules first, then the LLM. Raises the client's LLMError when the LLM is needed and fails."""
    decided = classify_by_rules(text, has_model)
    if decided is not None:
        return decided
    reply = llm.structured(intent_prompt(text, model_summary), IntentReply, temperature=0.0, max_tokens=64)
    return TurnIntent(kind=reply.intent, argument=text.strip(), source="llm")
