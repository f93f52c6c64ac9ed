"""A complexity score computed from the instance itself, and easy / medium / hard bands.

The score reads the built model (the variables that actually appear, by type; the constraint
instances) and the IR's structure (named constraint kinds, expression size and nesting, big-M /
indicator links, a quadratic objective):

    size      = 6 ln(1 + continuous + 2 integer + 2 binary) + 4 ln(1 + constraint instances)
    structure = 3 kinds + 5 links + 8 quadratic + 2 nesting + 0.02 expression nodes
    score     = size + structure

A "link" is a constraint kind whose expression mixes a binary variable with a non-binary one
(x <= M y, x >= m y): the big-M / indicator logic small models most often get wrong. Logarithms
keep a 4x5 transportation table from outweighing one more kind of constraint.

Bands (thresholds chosen so that, over all families, knob levels 1-2 land mostly in easy, 3 in
medium and 4-5 in hard; `tests/test_synth_families.py` pins the monotonicity):

    easy    score <  EASY_BELOW  (40)
    medium  score <  HARD_FROM   (55)
    hard    score >= HARD_FROM
"""

from __future__ import annotations

import ast
import math
from typing import Literal

from pydantic import BaseModel, Field

from solvers.ir import Formulation

Band = Literal["easy", "medium", "hard"]
BANDS: tuple[Band, ...] = ("easy", "medium", "hard")
EASY_BELOW = 40.0
HARD_FROM = 55.0


class ComplexityScore(BaseModel):
    """The score and everything it was computed from (kept in each item's provenance)."""

    score: float
    band: Band
    continuous_vars: int = Field(description="variable instances that appear in the model")
    integer_vars: int
    binary_vars: int
    constraint_instances: int
    constraint_kinds: int = Field(description="named constraints in the IR")
    linking_kinds: int = Field(description="kinds mixing a binary with a non-binary variable (big-M)")
    quadratic: bool
    expression_nodes: int = Field(description="syntax-tree nodes over objective, constraints and filters")
    max_nesting: int = Field(description="deepest nesting of sums and filters")


def band_of(score: float) -> Band:
    if score < EASY_BELOW:
        return "easy"
    return "medium" if score < HARD_FROM else "hard"


def _tree(expression: str) -> ast.AST:
    return ast.parse(expression.strip(), mode="eval")


def _nesting(node: ast.AST, depth: int = 0) -> int:
    """Depth of generator expressions and their `if` filters."""
    here = depth + (1 if isinstance(node, ast.GeneratorExp | ast.comprehension | ast.IfExp) else 0)
    if isinstance(node, ast.comprehension):
        here += len(node.ifs)
    children = list(ast.iter_child_nodes(node))
    return max([here, *(_nesting(child, here) for child in children)])


def _names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _used_variables(f: Formulation) -> tuple[int, int, int, int]:
    """(continuous, integer, binary, constraint instances) of the built Pyomo model."""
    import pyomo.environ as pyo
    from pyomo.core.expr.visitor import identify_variables

    from solvers.build import build_model

    built = build_model(f)
    seen: dict[int, object] = {}
    instances = 0
    for row in built.model.component_data_objects(pyo.Constraint, active=True):
        instances += 1
        for var in identify_variables(row.body, include_fixed=False):
            seen[id(var)] = var
    for objective in built.model.component_data_objects(pyo.Objective, active=True):
        for var in identify_variables(objective.expr, include_fixed=False):
            seen[id(var)] = var
    counts = {"continuous": 0, "integer": 0, "binary": 0}
    for var in seen.values():
        if var.is_binary():  # type: ignore[attr-defined]
            counts["binary"] += 1
        elif var.is_integer():  # type: ignore[attr-defined]
            counts["integer"] += 1
        else:
            counts["continuous"] += 1
    return counts["continuous"], counts["integer"], counts["binary"], instances


def score_formulation(f: Formulation) -> ComplexityScore:
    """Score an instance. Raises solvers' FormulationError if the model cannot be built."""
    continuous, integer, binary, instances = _used_variables(f)
    domains = {v.name: v.domain for v in f.variables}
    trees = [_tree(f.objective.expression)]
    links = 0
    for c in f.constraints:
        tree = _tree(c.expression)
        trees.append(tree)
        if c.where:
            trees.append(_tree(c.where))
        used = {domains[name] for name in _names(tree) if name in domains}
        if "binary" in used and used - {"binary"}:
            links += 1
    nodes = sum(sum(1 for _ in ast.walk(tree)) for tree in trees)
    nesting = max(_nesting(tree) for tree in trees)
    quadratic = f.kind == "quadratic"
    size = 6 * math.log1p(continuous + 2 * integer + 2 * binary) + 4 * math.log1p(instances)
    structure = 3 * len(f.constraints) + 5 * links + 8 * quadratic + 2 * nesting + 0.02 * nodes
    score = round(size + structure, 2)
    return ComplexityScore(
        score=score,
        band=band_of(score),
        continuous_vars=continuous,
        integer_vars=integer,
        binary_vars=binary,
        constraint_instances=instances,
        constraint_kinds=len(f.constraints),
        linking_kinds=links,
        quadratic=quadratic,
        expression_nodes=nodes,
        max_nesting=nesting,
    )
