"""The model-edit language of chat: typed edits, their deterministic application, and the diff.

An LLM (or a slash command) says WHAT to change; applying it is plain code, so the same edit
always gives the same model. `apply_edits` works on a copy, checks names, re-validates the IR and
compiles every expression, and raises `EditError` with readable problems (fed back to the LLM).

The LLM fills `EditDraft` (one flat object shape: a 1.5B model fills that more reliably than a
union of shapes); `draft_to_edits` turns drafts into the typed `ModelEdit`s that are applied,
stored in history and replayed.
"""

from __future__ import annotations

import ast
import difflib
import math
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.explain import format_number, model_math
from solvers.expressions import FloatAlgebra, compile_formulation, element_key, instance_name
from solvers.ir import Binding, Constraint, Formulation, Objective, VariableDomain
from solvers.symbols import SymbolTable

Element = str | int


class EditError(ValueError):
    """An edit that cannot be applied; `problems` are readable, one per item."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


class _Edit(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SetParameter(_Edit):
    """A scalar parameter's value, or one entry of an indexed parameter (`index` given)."""

    op: Literal["set_parameter"] = "set_parameter"
    name: str
    value: float
    index: list[Element] = Field(default_factory=list)

    def describe(self) -> str:
        target = instance_name(self.name, self.index)
        return f"set {target} = {format_number(self.value)}"


class SetRhs(_Edit):
    """The constant limit of a constraint, e.g. `bread + 2*cake <= 40` -> 50."""

    op: Literal["set_rhs"] = "set_rhs"
    name: str
    value: float

    def describe(self) -> str:
        return f"set the limit of {self.name} to {format_number(self.value)}"


class AddConstraint(_Edit):
    op: Literal["add_constraint"] = "add_constraint"
    name: str
    expression: str
    for_all: list[str] = Field(default_factory=list, description='e.g. ["p in Plants"]')
    where: str | None = None
    description: str = ""

    def describe(self) -> str:
        return f"add {self.name}: {self.expression}"


class RemoveConstraint(_Edit):
    op: Literal["remove_constraint"] = "remove_constraint"
    name: str

    def describe(self) -> str:
        return f"remove {self.name}"


class ReplaceConstraint(_Edit):
    """A new expression for an existing constraint; its `for_all` and `where` stay."""

    op: Literal["replace_constraint"] = "replace_constraint"
    name: str
    expression: str

    def describe(self) -> str:
        return f"replace {self.name} by {self.expression}"


class SetVariableBounds(_Edit):
    """Both bounds of a variable (all its entries); None means unbounded on that side."""

    op: Literal["set_variable_bounds"] = "set_variable_bounds"
    name: str
    lower: float | None
    upper: float | None

    def describe(self) -> str:
        low = "-inf" if self.lower is None else format_number(self.lower)
        high = "+inf" if self.upper is None else format_number(self.upper)
        return f"bound {self.name} to [{low}, {high}]"


class SetVariableDomain(_Edit):
    op: Literal["set_variable_domain"] = "set_variable_domain"
    name: str
    domain: VariableDomain

    def describe(self) -> str:
        return f"make {self.name} {self.domain}"


class ChangeObjective(_Edit):
    op: Literal["change_objective"] = "change_objective"
    sense: Literal["minimize", "maximize"] | None = None
    expression: str | None = None

    def describe(self) -> str:
        parts = [p for p in (self.sense, self.expression) if p]
        return "objective: " + " ".join(parts)


ModelEdit = Annotated[
    SetParameter
    | SetRhs
    | AddConstraint
    | RemoveConstraint
    | ReplaceConstraint
    | SetVariableBounds
    | SetVariableDomain
    | ChangeObjective,
    Field(discriminator="op"),
]


class EditPlan(BaseModel):
    """A list of typed edits, e.g. for JSON round trips."""

    edits: list[ModelEdit] = Field(default_factory=list)


# --- the LLM's shape ------------------------------------------------------------------------------
EditOp = Literal[
    "set_rhs",
    "set_parameter",
    "add_constraint",
    "remove_constraint",
    "replace_constraint",
    "set_variable_bounds",
    "set_variable_domain",
    "change_objective",
]


class EditDraft(BaseModel):
    """One edit as the LLM writes it; only the fields its `op` needs are read."""

    op: EditOp
    name: str = Field(default="", description="the constraint, parameter or variable to change")
    value: float | None = Field(default=None, description="new number (set_rhs, set_parameter)")
    index: list[Element] = Field(default_factory=list, description="entry of an indexed parameter")
    expression: str = Field(default="", description='e.g. "cake >= 10" or the new objective')
    meaning: str = ""
    lower: float | None = Field(default=None, description="new lower bound; omit to keep")
    upper: float | None = Field(default=None, description="new upper bound; omit to keep")
    domain: VariableDomain | None = None
    sense: Literal["minimize", "maximize"] | None = None


class EditReply(BaseModel):
    edits: list[EditDraft] = Field(default_factory=list, description="[] when nothing should change")


def _finite_or_none(value: float | None) -> float | None:
    return None if value is None or math.isinf(value) else value


def draft_to_edits(drafts: list[EditDraft], f: Formulation) -> list[ModelEdit]:
    """Typed edits from the LLM's drafts; a bound the draft leaves out keeps its current value."""
    edits: list[ModelEdit] = []
    problems: list[str] = []
    for number, d in enumerate(drafts, start=1):
        try:
            edits.append(_draft_to_edit(d, f))
        except (ValueError, ValidationError) as error:
            problems.append(f"edit {number} ({d.op}): {_plain_error(error)}")
    if problems:
        raise EditError(problems)
    return edits


def _plain_error(error: Exception) -> str:
    if isinstance(error, ValidationError):
        return "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in error.errors())
    return str(error)


def _draft_to_edit(d: EditDraft, f: Formulation) -> ModelEdit:
    if d.op in ("set_rhs", "set_parameter"):
        if d.value is None:
            raise ValueError("give the new number in value")
        if d.op == "set_rhs":
            return SetRhs(name=d.name, value=d.value)
        return SetParameter(name=d.name, value=d.value, index=d.index)
    if d.op == "add_constraint":
        return AddConstraint(name=d.name, expression=d.expression, description=d.meaning)
    if d.op == "remove_constraint":
        return RemoveConstraint(name=d.name)
    if d.op == "replace_constraint":
        return ReplaceConstraint(name=d.name, expression=d.expression)
    if d.op == "set_variable_bounds":
        variable = f.variable_named(d.name)
        if variable is None:
            raise ValueError(_unknown("variable", d.name, [v.name for v in f.variables]))
        lower = variable.lower if d.lower is None else _finite_or_none(d.lower)
        upper = variable.upper if d.upper is None else _finite_or_none(d.upper)
        return SetVariableBounds(name=d.name, lower=lower, upper=upper)
    if d.op == "set_variable_domain":
        if d.domain is None:
            raise ValueError('give domain: "continuous", "integer" or "binary"')
        return SetVariableDomain(name=d.name, domain=d.domain)
    return ChangeObjective(sense=d.sense, expression=d.expression or None)


# --- applying edits -------------------------------------------------------------------------------
def _unknown(what: str, name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=2, cutoff=0.5)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    return f"there is no {what} named {name!r}.{hint} {what.capitalize()}s: {', '.join(names) or 'none'}."


class ConstantSide(BaseModel):
    """Where a constraint's lone constant limit sits in its expression text."""

    value: float
    start: int
    end: int
    side: Literal["left", "right"]
    op: str  # the comparison as written: "<=", ">=" or "=="


def _number(node: ast.AST) -> float | None:
    if (
        isinstance(node, ast.Constant)
        and isinstance(node.value, int | float)
        and not isinstance(node.value, bool)
    ):
        return float(node.value)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub | ast.UAdd):
        inner = _number(node.operand)
        if inner is not None:
            return -inner if isinstance(node.op, ast.USub) else inner
    return None


_OPS = {ast.LtE: "<=", ast.GtE: ">=", ast.Eq: "=="}


def constant_side(expression: str) -> ConstantSide | None:
    """The single number on one side of `lhs op rhs` (right side preferred), or None.

    Ranges and sides that are expressions (`2*20`, a parameter) have no single number to change.
    """
    text = expression.strip()
    try:
        tree = ast.parse(text, mode="eval").body
    except SyntaxError:
        return None
    if not isinstance(tree, ast.Compare) or len(tree.ops) != 1 or type(tree.ops[0]) not in _OPS:
        return None
    op = _OPS[type(tree.ops[0])]
    lines = text.splitlines(keepends=True)

    def offset(line: int, column: int) -> int:
        return sum(len(x) for x in lines[: line - 1]) + column

    for node, side in ((tree.comparators[0], "right"), (tree.left, "left")):
        value = _number(node)
        if value is not None and node.end_lineno is not None and node.end_col_offset is not None:
            start = offset(node.lineno, node.col_offset)
            end = offset(node.end_lineno, node.end_col_offset)
            return ConstantSide(value=value, start=start, end=end, side=side, op=op)  # type: ignore[arg-type]
    return None


def with_constant(expression: str, value: float) -> str:
    """`expression` with its constant limit replaced by `value` (the rest of the text kept)."""
    text = expression.strip()
    found = constant_side(text)
    if found is None:
        raise ValueError("no single number on either side")
    return text[: found.start] + format_number(value) + text[found.end :]


def _flat_parts(key: str) -> list[str]:
    text = str(key).strip()
    if text.startswith("(") and text.endswith(")"):
        text = text[1:-1]
    return [element_key(part.strip().strip("'\"")) for part in text.split(",")]


def _renumbered(description: str, old: float, new: float) -> str:
    """ "oven hours used within 40" -> "... within 50": a description that states the old limit
    exactly once would otherwise contradict the model."""
    pattern = rf"(?<![\w.]){re.escape(format_number(old))}(?![\w.]|\.\d)"
    if len(re.findall(pattern, description)) != 1:
        return description
    return re.sub(pattern, format_number(new), description)


def _set_entry(table: dict[str, Any], parts: list[str], value: float) -> None:
    """Set one entry of a nested or flat ("a,b") table in place, matching keys as the IR does."""
    if len(parts) > 1:
        for key, item in table.items():
            if isinstance(item, dict) and element_key(key) == parts[0]:
                _set_entry(item, parts[1:], value)
                return
    for key, item in table.items():
        if not isinstance(item, dict) and _flat_parts(key) == parts:
            table[key] = value
            return
    # a new entry follows the table's style: nested if it nests, else a flat key
    if len(parts) > 1 and any(isinstance(item, dict) for item in table.values()):
        _set_entry(table.setdefault(parts[0], {}), parts[1:], value)
        return
    table[",".join(parts)] = value


def _apply_one(f: Formulation, edit: ModelEdit) -> None:
    """Apply `edit` to `f` in place (f is already a private copy)."""
    constraint_names = [c.name for c in f.constraints]
    if isinstance(edit, SetParameter):
        parameter = f.parameter_named(edit.name)
        if parameter is None:
            raise ValueError(_unknown("parameter", edit.name, [p.name for p in f.parameters]))
        if not parameter.index:
            if edit.index:
                raise ValueError(f"parameter {edit.name} is a scalar; give no index")
            parameter.value = edit.value
            return
        if len(edit.index) != len(parameter.index):
            raise ValueError(
                f"parameter {edit.name} is indexed by ({', '.join(parameter.index)}); "
                f"give {len(parameter.index)} index element(s), got {len(edit.index)}"
            )
        parts: list[str] = []
        for element, set_name in zip(edit.index, parameter.index, strict=True):
            index_set = f.set_named(set_name)
            members = {element_key(e): e for e in (index_set.elements if index_set else [])}
            if element_key(element) not in members:
                raise ValueError(f"{element!r} is not an element of {set_name} ({', '.join(members)})")
            parts.append(element_key(element))
        assert isinstance(parameter.value, dict)
        _set_entry(parameter.value, parts, edit.value)
        return
    if isinstance(edit, SetRhs | ReplaceConstraint | RemoveConstraint):
        constraint = f.constraint_named(edit.name)
        if constraint is None:
            raise ValueError(_unknown("constraint", edit.name, constraint_names))
        if isinstance(edit, RemoveConstraint):
            f.constraints.remove(constraint)
        elif isinstance(edit, ReplaceConstraint):
            constraint.expression = edit.expression
        else:
            found = constant_side(constraint.expression)
            if found is None:
                raise ValueError(
                    f"{edit.name} ({constraint.expression}) has no single number as its limit; "
                    "use set_parameter for a parameter limit, or replace_constraint"
                )
            constraint.expression = with_constant(constraint.expression, edit.value)
            constraint.description = _renumbered(constraint.description, found.value, edit.value)
        return
    if isinstance(edit, AddConstraint):
        if edit.name in constraint_names:
            raise ValueError(
                f"a constraint named {edit.name!r} exists already; pick a new name or replace it"
            )
        bindings = [_binding(text) for text in edit.for_all]
        f.constraints.append(
            Constraint(
                name=edit.name,
                description=edit.description,
                for_all=bindings,
                where=edit.where,
                expression=edit.expression,
            )
        )
        return
    if isinstance(edit, SetVariableBounds | SetVariableDomain):
        variable = f.variable_named(edit.name)
        if variable is None:
            raise ValueError(_unknown("variable", edit.name, [v.name for v in f.variables]))
        if isinstance(edit, SetVariableDomain):
            variable.domain = edit.domain
        else:
            variable.lower, variable.upper = edit.lower, edit.upper
        return
    if edit.sense is None and edit.expression is None:
        raise ValueError("change_objective needs a sense or an expression")
    f.objective = Objective(
        sense=edit.sense or f.objective.sense,
        expression=edit.expression or f.objective.expression,
        name=f.objective.name,
        # a new expression may mean a new goal; the old words would then mislead
        description=f.objective.description if edit.expression is None else "",
    )


_BINDING = re.compile(r"^\s*(?:for\s+)?([A-Za-z_]\w*)\s+in\s+([A-Za-z_]\w*)\s*$")


def _binding(text: str) -> Binding:
    match = _BINDING.match(text)
    if not match:
        raise ValueError(f'for_all entry {text!r} must look like "i in SetName"')
    return Binding(index=match.group(1), set=match.group(2))


def apply_edits(f: Formulation, edits: list[ModelEdit]) -> Formulation:
    """A new formulation with `edits` applied in order; `f` is untouched.

    Raises EditError listing every problem: unknown names, invalid IR, expressions that do not
    compile against the model's names.
    """
    if not edits:
        raise EditError(["no edit was given"])
    draft = f.model_copy(deep=True)
    problems: list[str] = []
    for number, edit in enumerate(edits, start=1):
        try:
            _apply_one(draft, edit)
        except (ValueError, ValidationError) as error:
            problems.append(f"edit {number} ({edit.describe()}): {_plain_error(error)}")
    if problems:
        raise EditError(problems)
    try:
        # re-validated as a whole: names unique, bounds ordered, identifiers legal
        edited = Formulation.model_validate(draft.model_dump())
    except ValidationError as error:
        raise EditError([_plain_error(error)]) from None
    compiled = compile_formulation(edited, FloatAlgebra({}))
    if compiled.errors:
        raise EditError([str(e) for e in compiled.errors])
    return edited


# --- slash commands without the LLM ---------------------------------------------------------------
_SUBSCRIPTED = re.compile(r"^([A-Za-z_]\w*)\[(.*)\]$")


def _element(text: str) -> Element:
    text = text.strip().strip("'\"")
    return int(text) if re.fullmatch(r"-?\d+", text) else text


def _float(text: str) -> float | None:
    if text.lower() in ("none", "inf", "+inf", "-inf", "free"):
        return None
    try:
        return float(text)
    except ValueError:
        raise EditError([f"{text!r} is not a number"]) from None


def parse_set(argument: str, f: Formulation) -> ModelEdit:
    """`oven 50` (a constraint's limit or a scalar parameter) or `cost[A,X] 5` (a table entry)."""
    parts = argument.rsplit(maxsplit=1)
    if len(parts) != 2:
        raise EditError(
            ["write: /set NAME VALUE  (a constraint limit or a parameter), or /set NAME[i,j] VALUE"]
        )
    target, raw = parts[0].strip(), parts[1]
    value = _float(raw)
    if value is None:
        raise EditError([f"{raw!r} is not a number"])
    match = _SUBSCRIPTED.match(target)
    if match:
        index = [_element(p) for p in match.group(2).split(",")]
        return SetParameter(name=match.group(1), index=index, value=value)
    if f.parameter_named(target) is not None:
        return SetParameter(name=target, value=value)
    if f.constraint_named(target) is not None:
        return SetRhs(name=target, value=value)
    names = [p.name for p in f.parameters] + [c.name for c in f.constraints]
    raise EditError([_unknown("parameter or constraint", target, names)])


def _split_named(argument: str, usage: str) -> tuple[str, str]:
    name, colon, rest = argument.partition(":")
    if not colon or not name.strip() or not rest.strip():
        raise EditError([f"write: {usage}"])
    return name.strip(), rest.strip()


def parse_direct_edit(command: str, argument: str, f: Formulation) -> list[ModelEdit]:
    """The edit a slash command states exactly, e.g. `/set oven 50`, `/add min_cakes: cake >= 10`."""
    argument = argument.strip()
    if command == "set":
        return [parse_set(argument, f)]
    if command == "add":
        name, expression = _split_named(argument, "/add NAME: EXPRESSION")
        return [AddConstraint(name=name, expression=expression)]
    if command == "replace":
        name, expression = _split_named(argument, "/replace NAME: EXPRESSION")
        return [ReplaceConstraint(name=name, expression=expression)]
    if command == "remove":
        if not argument:
            raise EditError(["write: /remove CONSTRAINT"])
        return [RemoveConstraint(name=argument)]
    if command == "bounds":
        parts = argument.split()
        if len(parts) != 3:
            raise EditError(["write: /bounds VARIABLE LOWER UPPER  (none for unbounded)"])
        return [SetVariableBounds(name=parts[0], lower=_float(parts[1]), upper=_float(parts[2]))]
    if command == "domain":
        parts = argument.split()
        if len(parts) != 2 or parts[1] not in ("continuous", "integer", "binary"):
            raise EditError(["write: /domain VARIABLE continuous|integer|binary"])
        return [SetVariableDomain(name=parts[0], domain=parts[1])]  # type: ignore[arg-type]
    if command == "objective":
        sense, _, expression = argument.partition(" ")
        if sense not in ("maximize", "minimize"):
            raise EditError(["write: /objective maximize|minimize [EXPRESSION]"])
        return [ChangeObjective(sense=sense, expression=expression.strip() or None)]  # type: ignore[arg-type]
    raise EditError([f"/{command} is not an edit command"])


# --- the diff -------------------------------------------------------------------------------------
class ModelDiff(BaseModel):
    """What changed between two models: the edits in words and a unified diff of the math."""

    summary: list[str] = Field(default_factory=list)
    lines: list[str] = Field(default_factory=list, description="unified diff of the readable math")

    @property
    def text(self) -> str:
        return "\n".join(self.lines)

    @property
    def empty(self) -> bool:
        return not self.lines


def _table_entries(f: Formulation) -> dict[str, float]:
    """Every indexed parameter entry by name ("cost[A,X]"): model_math shows tables only as sizes."""
    table = SymbolTable.from_formulation(f)
    entries: dict[str, float] = {}
    for parameter in table.parameters.values():
        for key, value in parameter.table.items():
            entries[instance_name(parameter.name, key if isinstance(key, tuple) else (key,))] = value
    return entries


def model_diff(before: Formulation, after: Formulation, edits: list[ModelEdit] | None = None) -> ModelDiff:
    old, new = model_math(before).splitlines(), model_math(after).splitlines()
    lines = [
        line.rstrip("\n") for line in difflib.unified_diff(old, new, "before", "after", n=1, lineterm="")
    ]
    old_entries, new_entries = _table_entries(before), _table_entries(after)
    changed = [
        k for k in dict.fromkeys([*old_entries, *new_entries]) if old_entries.get(k) != new_entries.get(k)
    ]
    if changed:
        if not lines:
            lines = ["--- before", "+++ after"]
        lines.append("@@ data tables @@")
        for key in changed:
            if key in old_entries:
                lines.append(f"-  {key} = {format_number(old_entries[key])}")
            if key in new_entries:
                lines.append(f"+  {key} = {format_number(new_entries[key])}")
    return ModelDiff(summary=[e.describe() for e in edits or []], lines=lines)


# --- the prompt -----------------------------------------------------------------------------------
EDIT_SYSTEM = "You change an optimization model exactly as the user asks. Answer with JSON only."

EDIT_OPERATIONS = """\
Operations (objects in "edits"):
- {"op": "set_rhs", "name": CONSTRAINT, "value": NUMBER}: new limit of a constraint
- {"op": "set_parameter", "name": PARAMETER, "value": NUMBER, "index": [..]}: new data value
- {"op": "add_constraint", "name": NEW_NAME, "expression": "x >= 10", "meaning": "..."}
- {"op": "remove_constraint", "name": CONSTRAINT}
- {"op": "replace_constraint", "name": CONSTRAINT, "expression": "2*x + y <= 30"}
- {"op": "set_variable_bounds", "name": VARIABLE, "lower": NUMBER, "upper": NUMBER}
- {"op": "set_variable_domain", "name": VARIABLE, "domain": "continuous"|"integer"|"binary"}
- {"op": "change_objective", "sense": "maximize"|"minimize", "expression": "..."}
Example: "assembly hours are now 300" ->
{"edits": [{"op": "set_rhs", "name": "assembly_hours", "value": 300}]}"""

MODEL_CHARS = 2500  # the 4k-token context also holds the instructions and the reply


def edit_prompt(f: Formulation, request: str) -> list[dict[str, str]]:
    shown = model_math(f)
    if len(shown) > MODEL_CHARS:
        shown = shown[:MODEL_CHARS] + "\n...(cut)"
    user = f"Model:\n{shown}\n\n{EDIT_OPERATIONS}\n\nRequest: {request.strip()}\nJSON:"
    return [{"role": "system", "content": EDIT_SYSTEM}, {"role": "user", "content": user}]


def edit_feedback(problems: list[str]) -> str:
    listed = "\n".join(f"- {p}" for p in problems)
    return f"That edit could not be applied:\n{listed}\nReply with the corrected JSON only."
