"""Audit the NL4OPT labels against the competition's own annotated formulations.

The NeurIPS 2022 NL4OPT competition annotated every problem with its formulation (objective and
constraint declarations) but published no optimal values. Later papers attached numeric labels
to the same texts (CardinalOperations "NL4OPT" 245, ReSocratic NL4OPT-E 289). Here every one of
the 388 annotations (test 289 + dev 99) is turned into the formulation IR, solved with HiGHS,
and compared with whichever labels carry the same text, so label errors become visible.

Declarations (all types found in the files; `operator` is LESS_OR_EQUAL or GREATER_OR_EQUAL):

    objective   terms {mention: coefficient}            -> max/min  sum(coef * x)
    objvar      vars [mentions] (empty = all variables) -> max/min  sum(x)
    linear      terms, limit                            -> sum(coef * x)  op limit
    sum         limit                                   -> sum of all variables  op limit
    upperbound / lowerbound   var, limit                -> x op limit
    xy          x_var, y_var                            -> x op y
    xby         x_var, y_var, param ("twice", "a third", "1.5 times") -> x op param * y
    ratio       var, limit ("40%", "a third")           -> x op limit * (sum of all variables)

Numbers may be written with thousands commas, dollar signs, percents ("20%" -> 0.2), words
("fifteen", "one hundred thousand") or trailing units ("8000 minutes"). A ratio limit written
as a bare number above 1 ("60") is a percent whose sign the annotator dropped.

Integrality (`integrality_rule`): a variable is integer when the text counts it and continuous
when the text measures it. Measured means a mention of the variable, or the variable's own
name, sits right after a unit of a divisible quantity (acres, kg, litres, hours, dollars, ...)
or after money words ("invest ... in"); everything else (trucks, pills, trips, ads) is a count.
The rule reads only the problem text and annotation, never the labels; the audit also reports
how many labels an all-continuous (LP) and an all-integer reading would match.

Labels are matched by problem text (case and whitespace normalized). NL4OPT-E edited 50 texts
(changed numbers, added sentences), so those rows match no annotation and are counted, not used.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterable
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from agent.datasets import Label, datasets_root, file_sha256, get_spec, load_dataset, read_records
from agent.scoring import HEADLINE_RULE, score
from solvers.ir import Constraint, Formulation, Objective, Variable
from solvers.result import SolveOptions, SolveResult, SolveStatus

COMPETITION_DATASETS = ("nl4opt-competition-test", "nl4opt-competition-dev")
LABEL_SOURCES = ("nl4opt", "nl4opt-e")
ORLM_RULE = "orlm_round_5pct"

Operator = Literal["LESS_OR_EQUAL", "GREATER_OR_EQUAL"]
DeclarationType = Literal["linear", "sum", "upperbound", "lowerbound", "xy", "xby", "ratio"]
Domain = Literal["continuous", "integer"]


class AnnotationError(ValueError):
    """An annotation that cannot be turned into a model; the message names the declaration."""


# --- the annotation as published ---------------------------------------------------------------
class ObjectiveDeclaration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: Literal["objective", "objvar"]
    direction: str
    name: str = ""
    terms: dict[str, str] = Field(default_factory=dict)
    vars: list[str] = Field(default_factory=list)


class ConstraintDeclaration(BaseModel):
    model_config = ConfigDict(extra="forbid")

    type: DeclarationType
    direction: str = ""
    operator: Operator
    limit: str | None = None
    terms: dict[str, str] = Field(default_factory=dict)
    var: str | None = None
    x_var: str | None = None
    y_var: str | None = None
    param: str | None = None


class Annotation(BaseModel):
    """One competition problem: its text and the annotated formulation."""

    id: str = Field(description="'<dataset>/<hash id>', the same id the dataset loader gives")
    document: str
    vars: list[str]
    order_mapping: dict[str, int] = Field(description="every mention -> index into vars")
    first_var_to_mentions: dict[str, list[str]] = Field(default_factory=dict)
    objective: ObjectiveDeclaration
    constraints: list[ConstraintDeclaration]


def parse_annotation(dataset: str, row: dict[str, Any]) -> Annotation:
    if len(row) != 1:
        raise AnnotationError(f"expected one {{hash_id: annotation}} pair, got {len(row)} keys")
    ((hash_id, body),) = row.items()
    return Annotation(
        id=f"{dataset}/{hash_id}",
        document=body["document"],
        vars=body["vars"],
        order_mapping=body["order_mapping"],
        first_var_to_mentions=body.get("first_var_to_mentions", {}),
        objective=ObjectiveDeclaration.model_validate(body["obj_declaration"]),
        constraints=[ConstraintDeclaration.model_validate(c) for c in body["const_declarations"]],
    )


def load_annotations(limit: int | None = None) -> list[Annotation]:
    """All 388 competition annotations (test then dev), in file order."""
    annotations: list[Annotation] = []
    for dataset in COMPETITION_DATASETS:
        spec = get_spec(dataset)
        for row in read_records(datasets_root() / spec.path):
            annotations.append(parse_annotation(dataset, row))
    return annotations[:limit] if limit is not None else annotations


# --- numbers as annotators wrote them ----------------------------------------------------------
_SMALL_WORDS = (
    "zero",
    "one",
    "two",
    "three",
    "four",
    "five",
    "six",
    "seven",
    "eight",
    "nine",
    "ten",
    "eleven",
    "twelve",
    "thirteen",
    "fourteen",
    "fifteen",
    "sixteen",
    "seventeen",
    "eighteen",
    "nineteen",
)
_SMALL = {word: value for value, word in enumerate(_SMALL_WORDS)}
_TENS_WORDS = ("twenty", "thirty", "forty", "fifty", "sixty", "seventy", "eighty", "ninety")
_TENS = {word: 10 * (value + 2) for value, word in enumerate(_TENS_WORDS)}
_SCALES = {"thousand": 1e3, "million": 1e6}
_FRACTIONS = {
    "half": 1 / 2,
    "halves": 1 / 2,
    "third": 1 / 3,
    "thirds": 1 / 3,
    "quarter": 1 / 4,
    "quarters": 1 / 4,
    "fourth": 1 / 4,
    "fourths": 1 / 4,
    "fifth": 1 / 5,
    "fifths": 1 / 5,
}
_MULTIPLES = {"twice": 2.0, "double": 2.0, "thrice": 3.0, "triple": 3.0}
_FILLER = {"a", "an", "and", "times", "as", "much", "many", "of"}
_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:e[-+]?\d+)?")


class Quantity(BaseModel):
    value: float
    percent: bool = False
    note: str | None = None


def parse_quantity(text: str) -> Quantity:
    """'1,000' -> 1000, '$5' -> 5, '20%' -> 0.2 (percent), 'a third' -> 1/3, 'three times' -> 3."""
    original = text
    s = text.strip().lower().replace("$", "").replace("\u00a0", " ").strip().rstrip(".").strip()
    percent = s.endswith("%") or s.endswith("percent")
    s = s.removesuffix("%").removesuffix("percent").strip()
    s = re.sub(r"(?<=\d),(?=\d)", "", s)
    scale = 0.01 if percent else 1.0
    if _NUMBER.fullmatch(s):
        return Quantity(value=float(s) * scale, percent=percent)
    leading = _NUMBER.match(s)
    if leading:
        rest = s[leading.end() :].strip()
        note = None if rest in {"", "times", "x"} else f"ignored {rest!r} after the number in {original!r}"
        return Quantity(value=float(leading.group()) * scale, percent=percent, note=note)
    return Quantity(value=_words_to_number(s, original) * scale, percent=percent)


def _words_to_number(s: str, original: str) -> float:
    total, current, seen = 0.0, 0.0, False
    for token in re.split(r"[\s\-]+", s):
        if not token:
            continue
        if token in _SMALL:
            current += _SMALL[token]
        elif token in _TENS:
            current += _TENS[token]
        elif token == "hundred":
            current = (current or 1.0) * 100
        elif token in _SCALES:
            total += (current or 1.0) * _SCALES[token]
            current = 0.0
        elif token in _FRACTIONS:
            current = (current or 1.0) * _FRACTIONS[token]
        elif token in _MULTIPLES:
            current = (current or 1.0) * _MULTIPLES[token]
        elif token in _FILLER:
            continue
        else:
            raise AnnotationError(f"cannot read {original!r} as a number")
        seen = True
    if not seen:
        raise AnnotationError(f"cannot read {original!r} as a number")
    return total + current


# --- canonical linear model --------------------------------------------------------------------
class ModelVariable(BaseModel):
    name: str = Field(description="identifier used in the IR")
    text: str = Field(description="the variable as the annotation names it")
    domain: Domain = "continuous"
    domain_reason: str = ""


class LinearConstraint(BaseModel):
    name: str
    kind: DeclarationType
    description: str
    coefficients: dict[str, float]
    sense: Literal["<=", ">="]
    rhs: float


class LinearModel(BaseModel):
    """The annotation in canonical form: sense, objective coefficients, linear rows."""

    id: str
    sense: Literal["maximize", "minimize"]
    objective_name: str
    objective: dict[str, float]
    variables: list[ModelVariable]
    constraints: list[LinearConstraint]
    notes: list[str] = Field(default_factory=list, description="readings worth a second look")


_MAXIMIZE_WORDS = ("max", "highest", "most", "largest", "greatest", "increase")
_MINIMIZE_WORDS = ("min", "lowest", "least", "reduce", "decrease", "smallest", "fewest")


def _sense(direction: str) -> Literal["maximize", "minimize"]:
    word = direction.strip().lower()
    if word.startswith(_MAXIMIZE_WORDS):
        return "maximize"
    if word.startswith(_MINIMIZE_WORDS):
        return "minimize"
    raise AnnotationError(f"objective direction {direction!r} is neither maximize nor minimize")


_RESERVED = frozenset({"sum", "for", "in", "if", "and", "or", "not", "abs", "min", "max"})


def _identifiers(texts: list[str]) -> list[str]:
    """Readable, unique IR identifiers for the annotated variable names."""
    import keyword

    names: list[str] = []
    for text in texts:
        base = re.sub(r"[^0-9a-zA-Z]+", "_", text.strip().lower()).strip("_") or "x"
        if base[0].isdigit():
            base = f"x_{base}"
        if keyword.iskeyword(base) or base in _RESERVED:
            base = f"{base}_"
        name, suffix = base, 2
        while name in names:
            name, suffix = f"{base}_{suffix}", suffix + 1
        names.append(name)
    return names


class _Resolver:
    """Mention text -> variable index, as the annotation's order_mapping says, with two repairs.

    `vars` may repeat a name (["freight", "air", "air"], ["kayak", "motorboat", "Kayaks"]): repeats,
    compared without case, punctuation and plural, collapse onto the first. When a
    mention literally names one variable (case, punctuation and plural aside) but order_mapping
    sends it to another ("train" -> trams), the literal name wins and a note records it.
    """

    def __init__(self, annotation: Annotation, notes: list[str]) -> None:
        first: dict[str, str] = {}
        for text in annotation.vars:
            first.setdefault(_fold(text), text)
        self.unique = list(first.values())
        self.by_name = {folded: i for i, folded in enumerate(first)}
        self.position = [self.by_name[_fold(text)] for text in annotation.vars]
        self.mapping = dict(annotation.order_mapping)
        self.notes = notes

    def index(self, mention: str | None, where: str) -> int:
        if mention is None:
            raise AnnotationError(f"{where}: no variable given")
        literal = self.by_name.get(_fold(mention))
        mapped = self.mapping.get(mention)
        if mapped is not None and 0 <= mapped < len(self.position):
            mapped = self.position[mapped]
            if literal is not None and literal != mapped:
                note = (
                    f"{where}: order_mapping sends {mention!r} to {self.unique[mapped]!r}; "
                    f"used {self.unique[literal]!r}, which it names"
                )
                if note not in self.notes:
                    self.notes.append(note)
                return literal
            return mapped
        if literal is not None:
            return literal
        raise AnnotationError(f"{where}: mention {mention!r} names none of the variables {self.unique}")


def _fold(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", text.lower()).strip().removesuffix("s")


def build_linear_model(annotation: Annotation) -> LinearModel:
    """Annotation -> canonical linear rows. Raises AnnotationError when a declaration is unreadable."""
    if not annotation.vars:
        raise AnnotationError("the annotation declares no variables")
    notes: list[str] = []
    resolve = _Resolver(annotation, notes)
    names = _identifiers(resolve.unique)
    if len(resolve.unique) < len(annotation.vars):
        notes.append(f"vars repeat a name: {annotation.vars}")

    def number(text: str | None, where: str) -> Quantity:
        if text is None:
            raise AnnotationError(f"{where}: missing number")
        try:
            quantity = parse_quantity(text)
        except AnnotationError as error:
            raise AnnotationError(f"{where}: {error}") from None
        if quantity.note:
            notes.append(f"{where}: {quantity.note}")
        return quantity

    def linear(terms: dict[str, str], where: str) -> dict[str, float]:
        coefficients: dict[str, float] = {}
        for mention, coefficient in terms.items():
            name = names[resolve.index(mention, where)]
            coefficients[name] = coefficients.get(name, 0.0) + number(coefficient, where).value
        return coefficients

    objective_declaration = annotation.objective
    if objective_declaration.type == "objective":
        if not objective_declaration.terms:
            raise AnnotationError("objective: no terms")
        objective = linear(objective_declaration.terms, "objective")
    else:
        chosen = objective_declaration.vars or annotation.vars  # an empty list means "the total"
        objective = {}
        for mention in chosen:
            objective[names[resolve.index(mention, "objective")]] = 1.0

    everything = dict.fromkeys(names, 1.0)
    constraints: list[LinearConstraint] = []
    for position, declaration in enumerate(annotation.constraints, start=1):
        where = f"constraint {position} ({declaration.type})"
        sense: Literal["<=", ">="] = "<=" if declaration.operator == "LESS_OR_EQUAL" else ">="
        # Only variable-to-variable relations carry their whole relation in `direction`.
        if declaration.type in ("xy", "xby") and _contradicts(declaration.direction, sense):
            notes.append(f"{where}: direction {declaration.direction!r} contradicts operator {sense}")
        word = f"{declaration.direction} ".lstrip() if declaration.direction else ""
        kind = declaration.type
        if kind == "linear":
            if not declaration.terms:
                raise AnnotationError(f"{where}: no terms (the annotation left the left-hand side empty)")
            coefficients, rhs = linear(declaration.terms, where), number(declaration.limit, where).value
            text = f"linear: weighted sum {word}{declaration.limit}"
        elif kind == "sum":
            coefficients, rhs = dict(everything), number(declaration.limit, where).value
            text = f"sum of all variables {word}{declaration.limit}"
        elif kind in ("upperbound", "lowerbound"):
            var = names[resolve.index(declaration.var, where)]
            quantity = number(declaration.limit, where)
            if (
                quantity.value < 1
                and not quantity.percent
                and declaration.limit
                and not _NUMBER.match(declaration.limit.strip().lstrip("$"))
            ):
                notes.append(f"{where}: bound {declaration.limit!r} on {var} reads like a ratio of the total")
            coefficients, rhs = {var: 1.0}, quantity.value
            text = f"{kind} on {declaration.var}: {word}{declaration.limit}"
        elif kind == "xy":
            x = names[resolve.index(declaration.x_var, where)]
            y = names[resolve.index(declaration.y_var, where)]
            coefficients, rhs = _combine({x: 1.0}, {y: -1.0}), 0.0
            text = f"{declaration.x_var} {word}{declaration.y_var}"
        elif kind == "xby":
            x = names[resolve.index(declaration.x_var, where)]
            y = names[resolve.index(declaration.y_var, where)]
            factor = number(declaration.param, where).value
            coefficients, rhs = _combine({x: 1.0}, {y: -factor}), 0.0
            text = f"{declaration.x_var} {word}{declaration.param} {declaration.y_var}"
        elif kind == "ratio":
            var = names[resolve.index(declaration.var, where)]
            quantity = number(declaration.limit, where)
            share = quantity.value
            if not quantity.percent and share > 1:
                share /= 100  # the annotator dropped the percent sign ("at most 60 of carts")
                notes.append(f"{where}: ratio limit {declaration.limit!r} read as {declaration.limit}%")
            coefficients = _combine({var: 1.0}, {n: -share for n in names})
            rhs = 0.0
            text = f"ratio: {declaration.var} {word}{declaration.limit} of the total"
        else:  # pragma: no cover - the Literal type forbids other kinds
            raise AnnotationError(f"{where}: unknown declaration type {kind!r}")
        constraints.append(
            LinearConstraint(
                name=f"c{position}_{kind}",
                kind=kind,
                description=text,
                coefficients=_tidy(coefficients),
                sense=sense,
                rhs=rhs,
            )
        )
    variables = [ModelVariable(name=n, text=t) for n, t in zip(names, resolve.unique, strict=True)]
    return LinearModel(
        id=annotation.id,
        sense=_sense(objective_declaration.direction),
        objective_name=objective_declaration.name,
        objective=objective,
        variables=variables,
        constraints=constraints,
        notes=notes,
    )


_MORE = re.compile(r"\b(?:more|greater|larger|large|exceeds?|at least|minimum|higher)\b")
_LESS = re.compile(r"\b(?:less|fewer|smaller|at most|maximum|lower|below|under)\b")


def _contradicts(direction: str, sense: str) -> bool:
    """True when the annotated direction phrase plainly says the opposite of the operator."""
    text = direction.lower()
    if re.search(r"\b(?:not|no|cannot|can't)\b", text):
        return False  # "must not exceed" and friends flip the meaning; leave them alone
    if sense == "<=":
        return bool(_MORE.search(text)) and not _LESS.search(text)
    return bool(_LESS.search(text)) and not _MORE.search(text)


def _tidy(coefficients: dict[str, float]) -> dict[str, float]:
    """Drop float noise from 1 - share (0.6499999999999999 -> 0.65); 12 digits is far below 1e-6."""
    return {name: float(f"{value:.12g}") for name, value in coefficients.items()}


def _combine(*parts: dict[str, float]) -> dict[str, float]:
    merged: dict[str, float] = {}
    for part in parts:
        for name, value in part.items():
            merged[name] = merged.get(name, 0.0) + value
    return merged


# --- integrality --------------------------------------------------------------------------------
# Units of divisible quantities: "3.5 acres of corn" is meaningful, "3.5 trucks" is not.
MEASURE_UNITS = (
    "acres?",
    "hectares?",
    "square (?:feet|foot|meters?|metres?|miles?)",
    "sq\\.? ?(?:ft|feet|foot)",
    "kg",
    "kgs",
    "kilograms?",
    "grams?",
    "mg",
    "milligrams?",
    "pounds?",
    "lbs?",
    "tons?",
    "tonnes?",
    "liters?",
    "litres?",
    "ml",
    "milliliters?",
    "millilitres?",
    "gallons?",
    "ounces?",
    "oz",
    "hours?",
    "minutes?",
    "meters?",
    "metres?",
    "km",
    "miles?",
    "cubic (?:feet|meters?|metres?)",
)
_MEASURED = "(?:" + "|".join(MEASURE_UNITS) + ")"
_MONEY = r"(?:invest|invests|invested|investing|investment|investments|put|allocated?|spend|spent|\$[\d,.]+)"


def integrality_rule() -> str:
    return (
        "per problem: continuous when the text measures its decisions - the question asks 'how much', "
        "'how many <unit>' or for a 'proportion', or a variable appears as '<unit> of <variable>' "
        "(acres, hectares, kg, litres, gallons, hours, square feet, ...) or as money put into it "
        "('invested in <variable>'); otherwise integer (it counts trucks, pills, trips, ads)"
    )


def decide_domain(annotation: Annotation) -> tuple[Domain, str]:
    """Integer when the text counts the decisions, continuous when it measures them.

    Decided per problem: an NL4OPT problem chooses among alternatives of one kind (two crops,
    two investments, two vehicle types), so evidence about one variable speaks for all.
    """
    document = " ".join(annotation.document.lower().split())
    asks = re.search(rf"\bhow much\b|\bhow many {_MEASURED}\b|\b(?:proportion|fraction) of\b", document)
    if asks:
        return "continuous", f"the question asks for an amount: '{asks.group(0)}'"
    for variable in annotation.vars:
        if re.search(rf"\b{_MEASURED}\b", variable.lower()):
            return "continuous", f"the variable name {variable!r} carries a unit"
        mentions = set(annotation.first_var_to_mentions.get(variable, [])) | {variable}
        for mention in sorted(mentions, key=len, reverse=True):
            plain = " ".join(mention.lower().split()).rstrip(".,")
            if not plain or plain not in document:
                continue  # cheap test first: these patterns are compiled per mention
            target = re.escape(plain)
            for pattern in (
                rf"\b{_MEASURED} of (?:the |each |a |an )?{target}",
                rf"\b{_MONEY} (?:\w+ )?(?:in|into|on|to) (?:the |each |a |an )?{target}",
            ):
                found = re.search(pattern, document)
                if found:
                    return "continuous", f"a variable is measured: '{found.group(0)}'"
    return "integer", "counted: no amount asked for, no '<unit> of <variable>' or money phrase"


def assign_domains(model: LinearModel, annotation: Annotation, choice: str = "rule") -> LinearModel:
    """A copy of `model` with every variable's domain set by `choice`: rule, continuous or integer."""
    if choice == "rule":
        domain, reason = decide_domain(annotation)
    elif choice in ("continuous", "integer"):
        domain, reason = choice, f"all {choice}"  # type: ignore[assignment]
    else:
        raise ValueError(f"unknown integrality choice {choice!r}")
    variables = [v.model_copy(update={"domain": domain, "domain_reason": reason}) for v in model.variables]
    return model.model_copy(update={"variables": variables})


# --- to the formulation IR ----------------------------------------------------------------------
def _fmt(value: float) -> str:
    if value == int(value) and abs(value) < 1e15:
        return str(int(value))
    return repr(value)


def render_linear(coefficients: dict[str, float], order: list[str]) -> str:
    """'50 * sled_dogs + 100 * trucks'; zero terms dropped, order as declared."""
    pieces: list[str] = []
    for name in order:
        value = coefficients.get(name, 0.0)
        if value == 0:
            continue
        magnitude = _fmt(abs(value))
        term = name if magnitude == "1" else f"{magnitude} * {name}"
        if not pieces:
            pieces.append(term if value > 0 else f"-{term}")
        else:
            pieces.append(f"+ {term}" if value > 0 else f"- {term}")
    # A row whose terms all cancel still needs a variable for the parser: 0 * x keeps it honest.
    return " ".join(pieces) if pieces else f"0 * {order[0]}"


def to_formulation(model: LinearModel) -> Formulation:
    order = [v.name for v in model.variables]
    return Formulation(
        name=re.sub(r"[^0-9a-zA-Z_]", "_", model.id),
        description=f"NL4OPT competition annotation {model.id}",
        notes="; ".join(model.notes),
        kind="linear",
        variables=[
            Variable(name=v.name, description=f"{v.text} ({v.domain_reason})", domain=v.domain)
            for v in model.variables
        ],
        objective=Objective(
            sense=model.sense,
            expression=render_linear(model.objective, order),
            description=model.objective_name,
        ),
        constraints=[
            Constraint(
                name=c.name,
                description=c.description,
                expression=f"{render_linear(c.coefficients, order)} {c.sense} {_fmt(c.rhs)}",
            )
            for c in model.constraints
        ],
    )


# --- labels by text -----------------------------------------------------------------------------
def normalize_text(text: str) -> str:
    """The matching key: case and whitespace do not matter, everything else does."""
    return " ".join(text.lower().split())


class LabelMatch(BaseModel):
    source: str = Field(description="the labelled dataset's registry name, e.g. nl4opt")
    label_id: str
    label: Label


class DatasetStamp(BaseModel):
    name: str
    version: str
    checksum: str


class LabelIndex(BaseModel):
    """Labels of every source, keyed by normalized question text."""

    by_text: dict[str, list[LabelMatch]]
    rows: dict[str, int]
    stamps: list[DatasetStamp]

    @classmethod
    def load(cls, sources: Iterable[str] = LABEL_SOURCES) -> LabelIndex:
        by_text: dict[str, list[LabelMatch]] = {}
        rows: dict[str, int] = {}
        stamps: list[DatasetStamp] = []
        for source in sources:
            dataset = load_dataset(source)
            rows[source] = len(dataset.problems)
            stamps.append(DatasetStamp(name=dataset.name, version=dataset.version, checksum=dataset.checksum))
            for problem in dataset.problems:
                match = LabelMatch(source=source, label_id=problem.id, label=problem.label)
                by_text.setdefault(normalize_text(problem.question), []).append(match)
        return cls(by_text=by_text, rows=rows, stamps=stamps)

    def lookup(self, question: str) -> list[LabelMatch]:
        return self.by_text.get(normalize_text(question), [])


# --- the audit ----------------------------------------------------------------------------------
Choice = Literal["rule", "continuous", "integer"]
CHOICES: tuple[Choice, ...] = ("rule", "continuous", "integer")
EXCERPT = 160


class Solved(BaseModel):
    status: SolveStatus
    objective: float | None = None
    message: str = ""


class LabelCheck(BaseModel):
    source: str
    label_id: str
    label_status: str
    label_objective: float | None
    agree: dict[str, bool] = Field(description="choice (rule/continuous/integer) -> rel 1e-6 verdict")
    agree_5pct: bool = Field(description="ORLM's rounded 5% rule, with the rule's integrality")


class ProblemAudit(BaseModel):
    id: str
    question: str
    built: bool
    build_error: str | None = None
    domain: Domain | None = None
    domain_reason: str = ""
    solved: dict[str, Solved] = Field(default_factory=dict, description="choice -> result")
    notes: list[str] = Field(default_factory=list)
    labels: list[LabelCheck] = Field(default_factory=list)

    def agrees(self, choice: Choice = "rule") -> bool:
        return bool(self.labels) and all(check.agree[choice] for check in self.labels)


class BuildFailure(BaseModel):
    id: str
    error: str


class Disagreement(BaseModel):
    id: str
    ours: float | None
    our_status: SolveStatus | None
    label: float | None
    label_status: str
    label_source: str
    label_id: str
    lp_optimum: float | None = None
    integer_optimum: float | None = None
    agree_5pct: bool = False
    notes: list[str] = Field(default_factory=list)
    question: str


class SourceCounts(BaseModel):
    source: str
    rows: int = Field(description="rows in the labelled file")
    matched: int = Field(description="rows whose text equals a competition document")
    agree: int
    disagree: int
    agree_5pct: int
    agree_by_choice: dict[str, int]


class AuditReport(BaseModel):
    total: int
    built: int
    solved: int = Field(description="built and answered definitively (optimal, infeasible or unbounded)")
    optimal: int
    labelled: int = Field(description="problems with at least one label of the same text")
    agree: int = Field(description="labelled problems whose optimum matches every label (rel 1e-6)")
    disagree: int
    agree_5pct: int
    agree_by_choice: dict[str, int] = Field(description="agree count under rule / all-LP / all-integer")
    label_conflicts: int = Field(description="problems whose two label sources disagree with each other")
    integrality_rule: str
    integer_problems: int
    continuous_problems: int
    per_source: list[SourceCounts]
    build_errors: list[BuildFailure]
    solve_errors: list[BuildFailure]
    disagreements: list[Disagreement]
    datasets: list[DatasetStamp]
    seconds: float
    problems: list[ProblemAudit] = Field(default_factory=list, description="per-problem detail")

    def summary(self) -> dict[str, Any]:
        """The short JSON the CLI prints."""
        return self.model_dump(mode="json", exclude={"problems"})


Solver = Callable[[Formulation], SolveResult]


def default_solver(formulation: Formulation) -> SolveResult:
    from solvers.api import solve_formulation  # imported late: the solver stack is heavy to import

    # A near-zero MIP gap: labels are compared to 1e-6, and HiGHS's default gap (1e-4) is too loose.
    options = SolveOptions(time_limit=30.0, mip_gap=1e-9, want_duals=False, diagnose_infeasible=False)
    return solve_formulation(formulation, options)


def _lp_answer_is_integral(result: Solved, values: dict[str, float]) -> bool:
    if result.status != SolveStatus.OPTIMAL or not values:
        return False
    return all(abs(v - round(v)) <= 1e-9 for v in values.values())


def audit_problem(annotation: Annotation, labels: list[LabelMatch], solver: Solver) -> ProblemAudit:
    """Build, solve under both integrality readings, and compare with every label."""
    audit = ProblemAudit(id=annotation.id, question=annotation.document, built=False)
    try:
        model = build_linear_model(annotation)
        variants = {choice: assign_domains(model, annotation, choice) for choice in CHOICES}
        formulations = {choice: to_formulation(variant) for choice, variant in variants.items()}
    except (AnnotationError, ValueError) as error:
        audit.build_error = str(error)
        return audit
    audit.built, audit.notes = True, model.notes
    audit.domain = variants["rule"].variables[0].domain
    audit.domain_reason = variants["rule"].variables[0].domain_reason

    lp = solver(formulations["continuous"])
    audit.solved["continuous"] = Solved(status=lp.status, objective=lp.objective, message=lp.message)
    if _lp_answer_is_integral(audit.solved["continuous"], lp.values):
        # An integral LP optimum is also the integer optimum: the LP is the integer model's relaxation.
        audit.solved["integer"] = audit.solved["continuous"]
    else:
        mip = solver(formulations["integer"])
        audit.solved["integer"] = Solved(status=mip.status, objective=mip.objective, message=mip.message)
    audit.solved["rule"] = audit.solved[audit.domain]

    for match in labels:
        verdicts = {
            choice: score(match.label, solved.objective, solved.status).correct[HEADLINE_RULE]
            for choice, solved in audit.solved.items()
        }
        ours = audit.solved["rule"]
        five = score(match.label, ours.objective, ours.status).correct[ORLM_RULE]
        audit.labels.append(
            LabelCheck(
                source=match.source,
                label_id=match.label_id,
                label_status=match.label.status,
                label_objective=match.label.objective,
                agree=verdicts,
                agree_5pct=five,
            )
        )
    return audit


DEFINITIVE = frozenset(
    {SolveStatus.OPTIMAL, SolveStatus.INFEASIBLE, SolveStatus.UNBOUNDED, SolveStatus.INFEASIBLE_OR_UNBOUNDED}
)


def run_audit(
    limit: int | None = None,
    solver: Solver | None = None,
    labels: LabelIndex | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> AuditReport:
    """Audit every competition annotation (or the first `limit`) against the labels."""
    started = time.perf_counter()
    solve = solver or default_solver
    index = labels or LabelIndex.load()
    annotations = load_annotations(limit)
    audits: list[ProblemAudit] = []
    solve_errors: list[BuildFailure] = []
    for position, annotation in enumerate(annotations, start=1):
        try:
            audits.append(audit_problem(annotation, index.lookup(annotation.document), solve))
        except Exception as error:  # one broken problem must not lose the other 387
            solve_errors.append(BuildFailure(id=annotation.id, error=f"{type(error).__name__}: {error}"))
        if progress is not None:
            progress(position, len(annotations))
    return _report(audits, annotations, index, solve_errors, time.perf_counter() - started)


def _report(
    audits: list[ProblemAudit],
    annotations: list[Annotation],
    index: LabelIndex,
    solve_errors: list[BuildFailure],
    seconds: float,
) -> AuditReport:
    built = [a for a in audits if a.built]
    labelled = [a for a in audits if a.labels]
    compared = [a for a in labelled if a.built]
    documents = {normalize_text(a.document) for a in annotations}
    per_source: list[SourceCounts] = []
    for source, rows in index.rows.items():
        checks = [check for a in audits for check in a.labels if check.source == source]
        matched = sum(
            len([m for m in matches if m.source == source])
            for text, matches in index.by_text.items()
            if text in documents
        )
        per_source.append(
            SourceCounts(
                source=source,
                rows=rows,
                matched=matched,
                agree=sum(c.agree["rule"] for c in checks),
                disagree=sum(not c.agree["rule"] for c in checks),
                agree_5pct=sum(c.agree_5pct for c in checks),
                agree_by_choice={choice: sum(c.agree[choice] for c in checks) for choice in CHOICES},
            )
        )
    disagreements = [
        Disagreement(
            id=a.id,
            ours=a.solved["rule"].objective,
            our_status=a.solved["rule"].status,
            label=check.label_objective,
            label_status=check.label_status,
            label_source=check.source,
            label_id=check.label_id,
            lp_optimum=a.solved["continuous"].objective,
            integer_optimum=a.solved["integer"].objective,
            agree_5pct=check.agree_5pct,
            notes=a.notes,
            question=_excerpt(a.question),
        )
        for a in compared
        for check in a.labels
        if not check.agree["rule"]
    ]
    conflicts = sum(1 for a in labelled if not _labels_agree(a.labels))
    return AuditReport(
        total=len(annotations),
        built=len(built),
        solved=sum(1 for a in built if a.solved["rule"].status in DEFINITIVE),
        optimal=sum(1 for a in built if a.solved["rule"].status == SolveStatus.OPTIMAL),
        labelled=len(labelled),
        agree=sum(a.agrees("rule") for a in compared),
        disagree=len(compared) - sum(a.agrees("rule") for a in compared),
        agree_5pct=sum(all(c.agree_5pct for c in a.labels) for a in compared),
        agree_by_choice={choice: sum(a.agrees(choice) for a in compared) for choice in CHOICES},
        label_conflicts=conflicts,
        integrality_rule=integrality_rule(),
        integer_problems=sum(a.domain == "integer" for a in built),
        continuous_problems=sum(a.domain == "continuous" for a in built),
        per_source=per_source,
        build_errors=[BuildFailure(id=a.id, error=a.build_error or "") for a in audits if not a.built],
        solve_errors=solve_errors,
        disagreements=disagreements,
        datasets=_stamps(index),
        seconds=seconds,
        problems=audits,
    )


def _labels_agree(checks: list[LabelCheck]) -> bool:
    first = checks[0]
    for other in checks[1:]:
        if other.label_status != first.label_status:
            return False
        if first.label_objective is not None and other.label_objective is not None:
            gap = abs(first.label_objective - other.label_objective)
            if gap / (abs(first.label_objective) + 1) > 1e-6:
                return False
    return True


def _stamps(index: LabelIndex) -> list[DatasetStamp]:
    stamps = list(index.stamps)
    for dataset in COMPETITION_DATASETS:
        spec = get_spec(dataset)
        checksum = file_sha256(datasets_root() / spec.path)
        stamps.append(DatasetStamp(name=dataset, version=spec.version, checksum=checksum))
    return stamps


def _excerpt(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= EXCERPT else flat[: EXCERPT - 3] + "..."
