"""Default values of the modeling agent's trainable parameters.

Each constant becomes a trace_graph ParameterNode that an optimizer may rewrite (issue 8), and
`sanity_rules` is the default code of the trainable sanity step. They are sized for a 1.5B model
with a 4k context: one worked example, and a `notes` field written first in which the model lists
each resource and each product's per-unit use of it (measured: 0/6 -> 6/6 on a toy LP).

The worked example is deliberately NOT one of the test problems (bakery, furniture, feed mix).
"""

from __future__ import annotations

from pydantic import BaseModel, Field

SYSTEM_PROMPT = (
    "You are an operations research expert. You turn a word problem into a linear or integer "
    "optimization model. Use only the numbers given in the problem. Answer in the requested format only."
)

FORMULATION_INSTRUCTIONS = """\
Reply with one JSON object with these fields, in this order:
- notes: first list every limited resource or requirement with its amount, and how much of it ONE
  unit of each decision uses; then the profit or cost of one unit of each decision.
- variables: one per decision: name (letters, digits, _), meaning with its unit, type "integer"
  for countable things (bikes, workers, trucks), else "continuous".
- objective: sense "maximize" or "minimize", expression with the variable names and * for products.
- constraints: one per resource, requirement or limit: name and expression such as
  "2*x + 3*y <= 240", with one term for EVERY decision that uses the resource (check the notes);
  use >= for a minimum requirement and <= for a capacity.
- missing_information: data the problem needs but does not give; [] when everything is given."""

WORKED_EXAMPLE = """\
Problem: A bike shop assembles city bikes and mountain bikes. A city bike needs 2 hours of assembly \
and 1 hour of testing; a mountain bike needs 3 hours of assembly and 2 hours of testing. Each week \
there are 240 assembly hours and 140 testing hours. At most 60 mountain bikes can be sold. The \
profit is $50 per city bike and $80 per mountain bike. How many of each should be assembled to \
maximize profit?
JSON: {"notes": "assembly hours, 240 available: city bike uses 2, mountain bike uses 3. testing \
hours, 140 available: city bike uses 1, mountain bike uses 2. mountain bikes sold at most 60. profit \
per bike: city 50, mountain 80.", "variables": [{"name": "city", "meaning": "city bikes assembled \
(bikes)", "type": "integer"}, {"name": "mountain", "meaning": "mountain bikes assembled (bikes)", \
"type": "integer"}], "objective": {"sense": "maximize", "expression": "50*city + 80*mountain", \
"meaning": "weekly profit ($)"}, "constraints": [{"name": "assembly_hours", "expression": \
"2*city + 3*mountain <= 240", "meaning": "assembly hours used within the 240 available"}, \
{"name": "testing_hours", "expression": "city + 2*mountain <= 140", "meaning": "testing hours used \
within the 140 available"}, {"name": "mountain_demand", "expression": "mountain <= 60", "meaning": \
"at most 60 mountain bikes sell"}], "missing_information": []}"""

# Problems whose text holds tables (a cost per plant and store, a need per period) get these
# instead of the scalar example: written one variable and one constraint per table entry, a
# medium synth-v1 story filled the 4k context before the model was complete (17 of 75 rejected
# replies were cut off), and in 105 items only the three families with flat data were solved.
INDEXED_INSTRUCTIONS = """\
This problem gives its data in tables, so write an indexed model instead of one variable or one
constraint per table entry. notes: one short line naming the sets. sets: each group of things
(plants, stores, periods) with its elements. parameters: each table with its index (set names) and
value, a JSON object keyed by the elements (nested for two sets); copy every number of the problem
into a parameter. variables: index them by the sets. Write sums such as
"sum(cost[p, s] * ship[p, s] for p in Plants for s in Stores)" and one constraint for every member
with "for_all": ["p in Plants"]."""

INDEXED_EXAMPLE = """\
Problem: A dairy ships milk from two plants, North and South, to three stores, A, B and C. North \
can supply at most 70 tonnes and South at most 60 tonnes. Store A needs at least 40 tonnes, store B \
35 and store C 45. Shipping cost per tonne ($):
  North: A: 4, B: 6, C: 9
  South: A: 5, B: 3, C: 7
How much should each plant ship to each store to meet every need at the least cost?
JSON: {"notes": "plants North, South; stores A, B, C; supply per plant, need per store, cost per \
plant and store.", "sets": [{"name": "Plants", "elements": ["North", "South"]}, {"name": "Stores", \
"elements": ["A", "B", "C"]}], "parameters": [{"name": "supply", "index": ["Plants"], "value": \
{"North": 70, "South": 60}}, {"name": "need", "index": ["Stores"], "value": {"A": 40, "B": 35, "C": \
45}}, {"name": "cost", "index": ["Plants", "Stores"], "value": {"North": {"A": 4, "B": 6, "C": 9}, \
"South": {"A": 5, "B": 3, "C": 7}}}], "variables": [{"name": "ship", "meaning": "tonnes shipped from \
plant p to store s", "index": ["Plants", "Stores"], "type": "continuous"}], "objective": {"sense": \
"minimize", "expression": "sum(cost[p, s] * ship[p, s] for p in Plants for s in Stores)", \
"meaning": "total shipping cost ($)"}, "constraints": [{"name": "plant_supply", "expression": \
"sum(ship[p, s] for s in Stores) <= supply[p]", "for_all": ["p in Plants"], "meaning": "a plant \
ships at most its supply"}, {"name": "store_need", "expression": "sum(ship[p, s] for p in Plants) \
>= need[s]", "for_all": ["s in Stores"], "meaning": "every store gets at least its need"}], \
"missing_information": []}"""

DATA_TABLE_INSTRUCTIONS = """\
Data tables are attached; do not copy their numbers. Declare index sets and parameters that point
at table columns, e.g. {"name": "Foods", "from_table": "foods.food"} and {"name": "cost",
"index": ["Foods"], "from_table": "foods.cost", "key_columns": ["food"]}; index variables by the
sets ("index": ["Foods"]) and write sums such as "sum(cost[f] * buy[f] for f in Foods)"; a
constraint per member uses "for_all": ["f in Foods"]."""

CODE_INSTRUCTIONS = """\
Write one Python program with Pyomo (import pyomo.environ as pyo). Define a function build_model()
that creates a pyo.ConcreteModel with the decision variables, exactly one objective and the
constraints, and returns it. Do not solve it, do not print, read files or import other modules.
Reply with the program in one ```python block."""

CODE_WORKED_EXAMPLE = """\
Problem: A bike shop assembles city bikes and mountain bikes. A city bike needs 2 hours of assembly \
and 1 hour of testing; a mountain bike needs 3 hours of assembly and 2 hours of testing. Each week \
there are 240 assembly hours and 140 testing hours. At most 60 mountain bikes can be sold. The \
profit is $50 per city bike and $80 per mountain bike. How many of each should be assembled to \
maximize profit?
```python
import pyomo.environ as pyo


def build_model():
    m = pyo.ConcreteModel()
    # assembly hours: city 2, mountain 3, 240 available; testing hours: city 1, mountain 2, 140 available
    m.city = pyo.Var(domain=pyo.NonNegativeIntegers, doc="city bikes assembled (bikes)")
    m.mountain = pyo.Var(domain=pyo.NonNegativeIntegers, doc="mountain bikes assembled (bikes)")
    m.profit = pyo.Objective(expr=50 * m.city + 80 * m.mountain, sense=pyo.maximize)
    m.assembly_hours = pyo.Constraint(expr=2 * m.city + 3 * m.mountain <= 240)
    m.testing_hours = pyo.Constraint(expr=m.city + 2 * m.mountain <= 140)
    m.mountain_demand = pyo.Constraint(expr=m.mountain <= 60)
    return m
```"""

REPAIR_INSTRUCTIONS = """\
Your previous model of this problem failed a check. Read the evidence, find the mistake it points
at (a wrong number, a <= that should be >=, a missing or extra constraint, a misspelled name),
fix it, keep everything that was right, and reply with the complete corrected model in the same
format."""


# Lessons learned by training, shown with the formulation instructions. Empty by default (the
# untrained agent's prompts are unchanged); short, so that a 1.5B optimizer can rewrite it whole,
# which it cannot do with a 1,500-character instruction block (it stops copying halfway).
MODELING_HINTS = ""


def hints_block(hints: str) -> str:
    """The hints as a prompt section, or nothing when there are none."""
    return f"\n\nLessons from earlier problems (follow them):\n{hints.strip()}" if hints.strip() else ""


# What an optimizer may and may not do to each prompt (ParameterNode.constraint). The model has a
# 4k-token context shared by instructions, example, problem and a ~1k-token reply.
_SHORT = "Stay under {chars} characters: the 1.5B model has a 4k-token context."
PARAMETER_CONSTRAINTS: dict[str, str] = {
    "system_prompt": "One or two sentences of role and rules. " + _SHORT.format(chars=400),
    "formulation_instructions": (
        "Must name the JSON fields notes, variables, objective, constraints, missing_information (and "
        "keep notes first: the per-unit use of each resource). Expressions use variable names, * and "
        "<=, >=, ==. " + _SHORT.format(chars=1500)
    ),
    "worked_example": (
        "Exactly one example: a line starting 'Problem:' and a line starting 'JSON:' followed by one "
        "valid JSON object of the draft shape, notes first. Never one of the evaluation problems. "
        + _SHORT.format(chars=2000)
    ),
    "indexed_instructions": (
        "Must ask for sets, parameters keyed by the set elements, indexed variables, sums and for_all "
        "constraints. " + _SHORT.format(chars=900)
    ),
    "indexed_example": (
        "Exactly one example with tables of data: a line starting 'Problem:' and a line starting 'JSON:' "
        "followed by one valid JSON object of the draft shape, notes first, with sets, indexed "
        "parameters and variables. Never one of the evaluation problems. " + _SHORT.format(chars=2500)
    ),
    "data_instructions": "Must explain from_table 'table.column' and key_columns. "
    + _SHORT.format(chars=800),
    "code_instructions": (
        "Must require def build_model() returning a pyomo ConcreteModel, without solving, printing, file "
        "access or imports other than pyomo. " + _SHORT.format(chars=1000)
    ),
    "code_worked_example": (
        "Exactly one example: 'Problem:' then one ```python block defining build_model(). "
        + _SHORT.format(chars=2000)
    ),
    "repair_instructions": "Must ask for the complete corrected model. " + _SHORT.format(chars=800),
    "modeling_hints": (
        "At most 6 short lessons for turning a word problem into a model, one per line starting '- ', "
        "each general (never one problem's names or numbers); keep the lessons that still hold and "
        "add one that would have prevented the errors in the feedback. " + _SHORT.format(chars=700)
    ),
}


class SanityFacts(BaseModel):
    """What the sanity step may look at: the problem text and the solved model, as plain values."""

    question: str
    sense: str = Field(description='"maximize" or "minimize"')
    objective: float
    values: dict[str, float] = Field(description='solution values keyed "x" or "x[i]"')
    domains: dict[str, str] = Field(description="variable name -> continuous | integer | binary")
    meanings: dict[str, str] = Field(default_factory=dict, description="variable name -> meaning")


def sanity_rules(facts: SanityFacts) -> list[str]:
    """Return the reasons this solved answer looks wrong for the problem; [] when it looks right."""
    concerns: list[str] = []
    text = facts.question.lower()
    everything_zero = all(abs(v) < 1e-9 for v in facts.values.values())
    if facts.sense == "maximize" and abs(facts.objective) < 1e-9 and everything_zero:
        concerns.append(
            "the best plan does nothing (every variable 0, objective 0): a maximization with a "
            "zero optimum usually means a constraint points the wrong way or a coefficient is missing"
        )
    if facts.sense == "minimize" and everything_zero:
        # a word problem that asks to minimize never means "do nothing": something must be
        # produced, covered or staffed, so the requirement forcing it is missing or reversed
        concerns.append(
            "every variable is 0: the plan does nothing, yet the problem asks to minimize while "
            "meeting its requirements (demand, hours needed, at least / minimum): a requirement is "
            "probably missing or written as <= instead of >="
        )
    if facts.objective < -1e-9 and any(w in text for w in ("profit", "revenue", "cost", "income")):
        concerns.append(f"the objective {facts.objective:g} is negative; profits and costs here are positive")
    whole_numbers = any(w in text for w in ("integer", "whole number", "whole units", "cannot be fraction"))
    for key, value in facts.values.items():
        name = key.split("[", 1)[0]
        countable = whole_numbers or facts.meanings.get(name, "").lower().startswith("number of")
        if countable and facts.domains.get(name) == "continuous" and abs(value - round(value)) > 1e-6:
            concerns.append(f"{key} = {value:g} is fractional but counts whole items; make {name} integer")
    return concerns
