"""The compact formulation a small LLM writes, and its conversion to the full IR.

The full `Formulation` schema is too long for a 4k-context 1.5B model to read and fill. The draft
keeps what matters, in the order that helps: `notes` first (each resource and each product's
per-unit use of it), then variables, objective, constraints, and last anything the text does not
give. Sets and parameters are optional; they can point at an attached data table column instead of
holding numbers ("from_table": "costs.cost").
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from agent.data_tables import DataMappingError, DataTable, parameter_value, set_elements
from solvers.ir import IDENTIFIER, Binding, Constraint, Formulation, IndexSet, Objective, Parameter, Variable


class DraftSet(BaseModel):
    name: str
    elements: list[str | int] = Field(default_factory=list)
    from_table: str | None = Field(default=None, description='"table.column" holding the members')


class DraftParameter(BaseModel):
    name: str
    index: list[str] = Field(default_factory=list, description="set names")
    value: float | dict[str, Any] | None = None
    from_table: str | None = Field(default=None, description='"table.column" holding the values')
    key_columns: list[str] = Field(default_factory=list, description="table columns matching index")


class DraftVariable(BaseModel):
    name: str
    meaning: str = Field(default="", description="what it counts, with its unit")
    index: list[str] = Field(default_factory=list, description="set names")
    type: Literal["continuous", "integer", "binary"] = "continuous"
    lower: float | None = 0.0
    upper: float | None = None


class DraftObjective(BaseModel):
    sense: Literal["maximize", "minimize"]
    expression: str
    meaning: str = ""


class DraftConstraint(BaseModel):
    name: str
    expression: str = Field(description="one comparison: <=, >= or ==")
    for_all: list[str] = Field(default_factory=list, description='e.g. ["p in Products"]')
    meaning: str = ""


class FormulationDraft(BaseModel):
    """What the LLM returns in IR style. Field order is the order the model writes."""

    @classmethod
    def model_json_schema(cls, *args: Any, **kwargs: Any) -> dict[str, Any]:
        # Titles repeat the field names; without them the schema is a third shorter, which
        # matters when an endpoint without schema support gets it pasted into the prompt.
        return _without_titles(super().model_json_schema(*args, **kwargs))

    notes: str = Field(description="each resource and each product's per-unit use of it")
    sets: list[DraftSet] = Field(default_factory=list)
    parameters: list[DraftParameter] = Field(default_factory=list)
    variables: list[DraftVariable]
    objective: DraftObjective
    constraints: list[DraftConstraint] = Field(default_factory=list)
    missing_information: list[str] = Field(
        default_factory=list, description="data the problem needs but does not give; usually empty"
    )


class IndexedDraft(FormulationDraft):
    """The draft asked for when the problem holds tables: sets and parameters are required, because
    told to write them but left free, the model skipped both and used names it never declared."""

    sets: list[DraftSet] = Field(min_length=1)
    parameters: list[DraftParameter] = Field(min_length=1)


def _without_titles(schema: Any) -> Any:
    if isinstance(schema, dict):
        return {
            key: _without_titles(value)
            for key, value in schema.items()
            if not (key == "title" and isinstance(value, str))
        }
    if isinstance(schema, list):
        return [_without_titles(item) for item in schema]
    return schema


class DraftError(ValueError):
    """The draft cannot become a valid Formulation; `problems` are readable, one per line."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


_BINDING = re.compile(r"^\s*(?:for\s+)?([A-Za-z_]\w*)\s+in\s+([A-Za-z_]\w*)\s*$")


def parse_binding(text: str) -> Binding:
    match = _BINDING.match(text)
    if not match:
        raise ValueError(f'for_all entry {text!r} must look like "i in SetName"')
    return Binding(index=match.group(1), set=match.group(2))


def _validation_problems(error: ValidationError, where: str) -> list[str]:
    problems = []
    for item in error.errors():
        location = ".".join(str(p) for p in item["loc"])
        message = item["msg"].removeprefix("Value error, ")
        problems.append(f"{where}{' ' + location if location else ''}: {message}")
    return problems


def _unique_label(name: str, taken: set[str]) -> str:
    if name not in taken:
        return name
    suffix = 2
    while f"{name}_{suffix}" in taken:
        suffix += 1
    return f"{name}_{suffix}"


_NON_WORD = re.compile(r"\W+")
# A single `=` between two sides, i.e. not part of <=, >=, == or !=.
_LONE_EQUALS = re.compile(r"(?<![<>=!])=(?!=)")
_COMPARISON = re.compile(r"<=|>=|==")


def _as_identifier(name: str) -> str:
    """'Park Avenue' -> 'Park_Avenue'. A name that is an identifier already, or that would not
    become one ('2x' reads as 2*x: guessing is the repair round's job), is returned as is."""
    cleaned = _NON_WORD.sub("_", name.strip()).strip("_")
    return cleaned if IDENTIFIER.match(cleaned) else name


def _renamer(renames: dict[str, str]) -> Callable[[str], str]:
    """Replaces each old name, as a whole phrase, by its new one; longest first, so 'Park Avenue
    North' is not half-replaced by 'Park Avenue'."""
    if not renames:
        return lambda text: text
    alternatives = "|".join(re.escape(old) for old in sorted(renames, key=len, reverse=True))
    pattern = re.compile(rf"(?<!\w)(?:{alternatives})(?!\w)")
    return lambda text: pattern.sub(lambda match: renames[match.group(0)], text)


def _only_rebound(index: str, expression: str) -> bool:
    """Whether every use of `index` in the expression is inside a sum that binds it again, so a
    for_all over it would only repeat the same constraint (`sum(x[f] for f in F) >= 5` for all f)."""
    try:
        tree = ast.parse(expression, mode="eval")
    except SyntaxError:
        return False
    rebound: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.GeneratorExp | ast.ListComp) and any(
            isinstance(loop.target, ast.Name) and loop.target.id == index for loop in node.generators
        ):
            rebound |= {
                id(name) for name in ast.walk(node) if isinstance(name, ast.Name) and name.id == index
            }
    uses = [id(name) for name in ast.walk(tree) if isinstance(name, ast.Name) and name.id == index]
    return bool(rebound) and all(use in rebound for use in uses)


def _needed_bindings(bindings: list[str], expression: str) -> list[str]:
    kept = []
    for binding in bindings:
        match = _BINDING.match(binding)
        if not (match and _only_rebound(match.group(1), expression)):
            kept.append(binding)
    return kept


def _numbers_for_booleans(value: Any) -> Any:
    """A yes/no table ("can do": true) as the 1/0 it stands for in a model."""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, dict):
        return {key: _numbers_for_booleans(item) for key, item in value.items()}
    return value


def tidy_draft(draft: FormulationDraft) -> FormulationDraft:
    """Fix the slips of a small model that have exactly one meaning, before building:

    - a name that is not an identifier ("Park Avenue") becomes one ("Park_Avenue"), everywhere the
      name is used (expressions, index lists, for_all bindings);
    - a constraint written with a single `=` ("stock_1 = make_1 - 70") is an equation (`==`);
    - a for_all binding whose index the expression only uses inside a sum over that same index is
      dropped: the constraint does not depend on it (measured: 4 of the first 14 indexed replies);
    - true/false parameter entries are 1/0.

    Anything else that does not build is left for the repair round to explain.
    """
    declared = [item.name for item in [*draft.sets, *draft.parameters, *draft.variables]]
    rename = _renamer({name: _as_identifier(name) for name in declared if _as_identifier(name) != name})

    def equation(expression: str) -> str:
        renamed = rename(expression)
        if _COMPARISON.search(renamed) or len(_LONE_EQUALS.findall(renamed)) != 1:
            return renamed
        return _LONE_EQUALS.sub("==", renamed)

    def tidy_constraint(constraint: DraftConstraint) -> DraftConstraint:
        expression = equation(constraint.expression)
        bindings = _needed_bindings([rename(b) for b in constraint.for_all], expression)
        return constraint.model_copy(
            update={"name": _as_identifier(constraint.name), "expression": expression, "for_all": bindings}
        )

    return draft.model_copy(
        update={
            "sets": [s.model_copy(update={"name": rename(s.name)}) for s in draft.sets],
            "parameters": [
                p.model_copy(
                    update={
                        "name": rename(p.name),
                        "index": [rename(i) for i in p.index],
                        "value": _numbers_for_booleans(p.value),
                    }
                )
                for p in draft.parameters
            ],
            "variables": [
                v.model_copy(update={"name": rename(v.name), "index": [rename(i) for i in v.index]})
                for v in draft.variables
            ],
            "objective": draft.objective.model_copy(
                update={"expression": rename(draft.objective.expression)}
            ),
            "constraints": [tidy_constraint(c) for c in draft.constraints],
        }
    )


def draft_to_formulation(draft: FormulationDraft, tables: list[DataTable] | None = None) -> Formulation:
    """Build the IR, reading table-backed sets and parameters from the real tables.

    Collects every problem it can find before raising, so one repair round can fix them all.
    """
    tables = tables or []
    draft = tidy_draft(draft)
    problems: list[str] = []
    sets: list[IndexSet] = []
    for item in draft.sets:
        elements = item.elements
        if item.from_table:
            try:
                elements = set_elements(tables, item.from_table)
            except DataMappingError as error:
                problems.append(f"set {item.name}: {error}")
                continue
        try:
            sets.append(IndexSet(name=item.name, elements=elements))
        except ValidationError as error:
            problems += _validation_problems(error, f"set {item.name}")
    parameters: list[Parameter] = []
    for item in draft.parameters:
        value: float | dict[str, Any] | None = item.value
        if item.from_table:
            try:
                value = parameter_value(tables, item.from_table, len(item.index), item.key_columns or None)
            except DataMappingError as error:
                problems.append(f"parameter {item.name}: {error}")
                continue
        if value is None:
            problems.append(f"parameter {item.name}: give a value or from_table")
            continue
        try:
            parameters.append(Parameter(name=item.name, index=item.index, value=value))
        except ValidationError as error:
            problems += _validation_problems(error, f"parameter {item.name}")
    variables: list[Variable] = []
    for item in draft.variables:
        try:
            variables.append(
                Variable(
                    name=item.name,
                    description=item.meaning,
                    index=item.index,
                    domain=item.type,
                    lower=item.lower,
                    upper=item.upper,
                )
            )
        except ValidationError as error:
            problems += _validation_problems(error, f"variable {item.name}")
    constraints: list[Constraint] = []
    # Constraint names are labels nothing refers to: a repeated one ("job_limit" for each of three
    # machines) or one shared with a variable is made unique instead of failing the whole model.
    taken = {item.name for item in [*draft.sets, *draft.parameters, *draft.variables]}
    for item in draft.constraints:
        name = _unique_label(item.name, taken)
        taken.add(name)
        try:
            bindings = [parse_binding(text) for text in item.for_all]
            constraint = Constraint(
                name=name, description=item.meaning, for_all=bindings, expression=item.expression
            )
            constraints.append(constraint)
        except ValidationError as error:  # before ValueError: pydantic's error subclasses it
            problems += _validation_problems(error, f"constraint {item.name}")
        except ValueError as error:
            problems.append(f"constraint {item.name}: {error}")
    if problems:
        raise DraftError(problems)
    stated = draft.objective
    objective = Objective(sense=stated.sense, expression=stated.expression, description=stated.meaning)
    try:
        return Formulation(
            notes=draft.notes,
            sets=sets,
            parameters=parameters,
            variables=variables,
            objective=objective,
            constraints=constraints,
        )
    except ValidationError as error:
        raise DraftError(_validation_problems(error, "formulation")) from error


def formulation_to_draft(formulation: Formulation) -> FormulationDraft:
    """The inverse, for showing a previous formulation to the LLM in the shape it writes."""
    return FormulationDraft(
        notes=formulation.notes,
        sets=[DraftSet(name=s.name, elements=s.elements) for s in formulation.sets],
        parameters=[
            DraftParameter(name=p.name, index=p.index, value=p.value) for p in formulation.parameters
        ],
        variables=[
            DraftVariable(
                name=v.name, meaning=v.description, index=v.index, type=v.domain, lower=v.lower, upper=v.upper
            )
            for v in formulation.variables
        ],
        objective=DraftObjective(
            sense=formulation.objective.sense,
            expression=formulation.objective.expression,
            meaning=formulation.objective.description,
        ),
        constraints=[
            DraftConstraint(
                name=c.name,
                expression=c.expression,
                for_all=[f"{b.index} in {b.set}" for b in c.for_all],
                meaning=c.description,
            )
            for c in formulation.constraints
        ],
    )


def compact_json(draft: FormulationDraft) -> str:
    """The draft as short JSON: defaults dropped so the prompt stays small."""
    return draft.model_dump_json(exclude_defaults=True)


_PYTHON_FENCE = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\r?\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_program(text: str) -> str:
    """The Python program in a code-style reply: the fenced block defining build_model, else any
    fenced block, else the whole text (small models sometimes skip the fence). Raises ValueError."""
    blocks = [block.strip() for block in _PYTHON_FENCE.findall(text)]
    for block in blocks:
        if "def build_model" in block:
            return block
    if blocks and blocks[0]:
        return blocks[0]
    stripped = text.strip()
    if "def build_model" in stripped:
        return stripped
    raise ValueError("the reply contains no Python program defining build_model()")
