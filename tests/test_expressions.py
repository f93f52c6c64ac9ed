"""The expression language: what it accepts, and the feedback it gives for what it does not."""

from __future__ import annotations

import pickle
from typing import Any

import pyomo.environ as pyo
import pytest
from pyomo.repn import generate_standard_repn

from solvers.build import build_model
from solvers.expressions import (
    Compiler,
    ExpressionError,
    FloatAlgebra,
    FormulationError,
    SymbolTable,
    evaluate,
    instance_name,
)
from solvers.ir import Formulation


def formulation(
    objective: str = "sum(cost[i, j] * x[i, j] for i in Plants for j in Customers)",
    constraints: list[dict[str, Any]] | None = None,
    kind: str = "linear",
    **extra: Any,
) -> Formulation:
    data: dict[str, Any] = {
        "name": "shipping",
        "kind": kind,
        "sets": [
            {"name": "Plants", "elements": ["Boston", "Denver"]},
            {"name": "Customers", "elements": ["NY", "LA", "SF"]},
            {"name": "Periods", "elements": [1, 2, 3]},
            {"name": "Hubs", "elements": ["Boston"]},
        ],
        "parameters": [
            {"name": "supply", "index": ["Plants"], "value": {"Boston": 50, "Denver": 60}},
            {"name": "demand", "index": ["Customers"], "value": {"NY": 20, "LA": 30, "SF": 25}},
            {
                "name": "cost",
                "index": ["Plants", "Customers"],
                "value": {"Boston": {"NY": 1, "LA": 4, "SF": 5}, "Denver": {"NY": 3, "LA": 2, "SF": 2}},
            },
            {"name": "need", "index": ["Periods"], "value": {"1": 5, "2": 7, "3": 4}},
            {"name": "rate", "value": 2.5},
        ],
        "variables": [
            {"name": "x", "index": ["Plants", "Customers"]},
            {"name": "y", "index": ["Plants"], "domain": "binary"},
            {"name": "z"},
            {"name": "inv", "index": ["Periods"]},
        ],
        "objective": {"sense": "minimize", "expression": objective},
        "constraints": constraints or [],
    }
    data.update(extra)
    return Formulation.model_validate(data)


def linear_terms(expr: Any) -> tuple[dict[str, float], float]:
    """Coefficients by variable name, and the constant, of a linear Pyomo expression."""
    repn = generate_standard_repn(expr, compute_values=True)
    assert repn.is_linear()
    coefficients: dict[str, float] = {}
    for var, coefficient in zip(repn.linear_vars, repn.linear_coefs, strict=True):
        coefficients[var.name] = coefficients.get(var.name, 0.0) + coefficient
    return coefficients, float(repn.constant)


def errors_of(f: Formulation) -> list[ExpressionError]:
    with pytest.raises(FormulationError) as caught:
        build_model(f)
    return caught.value.errors


def only_error(f: Formulation) -> ExpressionError:
    errors = errors_of(f)
    assert len(errors) == 1, [str(e) for e in errors]
    return errors[0]


def con(
    name: str, expression: str, for_all: list[tuple[str, str]] | None = None, where: str | None = None
) -> dict:
    return {
        "name": name,
        "expression": expression,
        "for_all": [{"index": i, "set": s} for i, s in (for_all or [])],
        "where": where,
    }


# --- what it accepts -------------------------------------------------------------------------
def test_a_valid_formulation_builds_named_components() -> None:
    f = formulation(
        constraints=[
            con("capacity", "sum(x[i, j] for j in Customers) <= supply[i]", [("i", "Plants")]),
            con("meet", "sum(x[i, j] for i in Plants) >= demand[j]", [("j", "Customers")]),
            con("band", "1 <= z <= 2 * rate"),
            con("flow", "inv[t] == inv[t - 1] + need[t]", [("t", "Periods")], where="t > 1"),
        ]
    )
    built = build_model(f)
    model = built.model
    assert isinstance(model.component("capacity"), pyo.Constraint)
    assert sorted(c.name for c in model.capacity.values()) == ["capacity[Boston]", "capacity[Denver]"]
    assert [c.name for c in model.flow.values()] == ["flow[2]", "flow[3]"]
    assert model.band.lower == 1 and model.band.upper == 5
    assert built.degree == 1 and built.is_linear
    assert pyo.value(model.capacity["Boston"].upper) == 50


def test_string_elements_and_int_elements_match_table_keys_as_strings() -> None:
    f = formulation(objective="x['Boston', 'NY'] + need[2] * inv[3] + need['3']")
    built = build_model(f)
    assert linear_terms(built.model.objective.expr) == ({"x[Boston,NY]": 1.0, "inv[3]": 7.0}, 4.0)


def test_flat_and_nested_tables_are_equivalent() -> None:
    flat = {"Boston,NY": 1, "Boston, LA": 4, "(Boston,SF)": 5, "Denver,NY": 3, "Denver,LA": 2, "Denver,SF": 2}
    f = formulation()
    g = formulation()
    g.parameters[2].value = flat
    assert (
        SymbolTable.from_formulation(f).parameters["cost"].table
        == SymbolTable.from_formulation(g).parameters["cost"].table
    )


def test_defaults_fill_missing_entries() -> None:
    f = formulation()
    f.parameters[2].value = {"Boston": {"NY": 1}}
    f.parameters[2].default = 9
    coefficients, _ = linear_terms(build_model(f).model.objective.expr)
    assert coefficients["x[Boston,NY]"] == 1 and coefficients["x[Denver,SF]"] == 9


def test_filters_with_and_or_not_and_membership() -> None:
    f = formulation(
        objective="sum(x[i, j] for i in Plants for j in Customers "
        "if (i in Hubs and not j == 'NY') or cost[i, j] < 2)"
    )
    coefficients, _ = linear_terms(build_model(f).model.objective.expr)
    # hub Boston except NY, or cheap (cost 1 is only Boston,NY)
    assert sorted(coefficients) == ["x[Boston,LA]", "x[Boston,NY]", "x[Boston,SF]"]


def test_min_max_abs_of_data_and_quadratic_objective() -> None:
    f = formulation(
        objective="max(cost[i, 'NY'] for i in Plants) * z + abs(-2) * min(3, rate) * z", kind="linear"
    )
    assert linear_terms(build_model(f).model.objective.expr) == ({"z": 3 + 2 * 2.5}, 0.0)
    q = formulation(
        objective="z ** 2 + sum(x[i, j] * x[i, j] for i in Plants for j in Customers)", kind="quadratic"
    )
    assert build_model(q).degree == 2


def test_float_backend_evaluates_the_same_walker() -> None:
    f = formulation()
    table = SymbolTable.from_formulation(f)
    values = {instance_name("x", (i, j)): 1.0 for i in ("Boston", "Denver") for j in ("NY", "LA", "SF")}
    compiler = Compiler(table, FloatAlgebra(values))
    node = compiler.expression(f.objective.expression, {}, "objective")
    assert evaluate(node, {}, "objective") == pytest.approx(1 + 4 + 5 + 3 + 2 + 2)
    relation = compiler.relation("sum(x[i, j] for j in Customers) <= supply[i]", {"i": "Plants"}, "c")
    assert evaluate(relation, {"i": "Denver"}, "c") == (3.0, 60.0)


def test_instance_names_match_pyomo() -> None:
    elements = ["New York", "a,b", 'q"x', "it's", 1, 2.5, "plain", "1", "-3", "x.y"]
    model = pyo.ConcreteModel()
    model.v = pyo.Var(elements, ["B", 3])
    for key, var in model.v.items():
        assert instance_name("v", key) == var.name
    model.w = pyo.Var(elements)
    for key, var in model.w.items():
        assert instance_name("w", (key,)) == var.name


# --- the feedback ------------------------------------------------------------------------------
def test_undefined_name_suggests_close_names() -> None:
    error = only_error(formulation(objective="sum(cots[i, j] * x[i, j] for i in Plants for j in Customers)"))
    assert error.component == "objective"
    assert error.token == "cots"
    assert "'cots' is not defined" in error.message and "'cost'" in error.message


def test_wrong_number_of_indices_names_the_expected_sets() -> None:
    error = only_error(formulation(constraints=[con("cap", "x[i] <= supply[i]", [("i", "Plants")])]))
    assert error.component == "constraint cap"
    assert error.token == "x[i]"
    assert "expects 2 indices (Plants, Customers) but got 1" in error.message


def test_literal_element_not_in_set() -> None:
    error = only_error(formulation(objective="x['Bostn', 'NY']"))
    assert error.token == "'Bostn'"
    assert "not an element of Plants" in error.message and "'Boston'" in error.message


def test_element_not_in_set_found_per_instance() -> None:
    error = only_error(
        formulation(constraints=[con("flow", "inv[t] == inv[t - 1] + need[t]", [("t", "Periods")])])
    )
    assert error.component == "constraint flow[1]"
    assert error.token == "t - 1"
    assert "`t - 1` is 0 here, which is not an element of Periods" in error.message
    assert "where" in error.message


def test_index_from_the_wrong_set() -> None:
    error = only_error(
        formulation(
            constraints=[con("meet", "sum(x[j, i] for i in Plants) >= demand[j]", [("j", "Customers")])]
        )
    )
    assert error.token == "j"
    assert "runs over Customers, but position 1 of x is indexed by Plants" in error.message
    # a subset of the declared set is fine
    build_model(formulation(objective="sum(x[h, 'NY'] for h in Hubs)"))


def test_division_by_variables() -> None:
    error = only_error(formulation(objective="100 / z"))
    assert error.token == "100 / z"
    assert "division by an expression containing variables (z)" in error.message


def test_products_of_variables_in_a_linear_model() -> None:
    error = only_error(formulation(objective="sum(x[i, j] * y[i] for i in Plants for j in Customers)"))
    assert error.token == "x[i, j] * y[i]"
    assert "multiplies two expressions that contain variables" in error.message
    assert '"linear"' in error.message and "big-M" in error.message
    power = only_error(formulation(objective="z ** 2"))
    assert power.token == "z ** 2" and "power 2" in power.message


def test_quadratic_constraints_and_cubic_terms_are_rejected_in_quadratic_models() -> None:
    error = only_error(formulation(objective="z", kind="quadratic", constraints=[con("c", "z * z <= 4")]))
    assert error.component == "constraint c" and "only in the objective" in error.message
    cubic = only_error(formulation(objective="z * z * z", kind="quadratic"))
    assert "degree 2 at most" in cubic.message


@pytest.mark.parametrize(
    ("expression", "token", "words"),
    [
        ("(lambda a: a)(z)", "(lambda a: a)(z)", "lambda is not part of the expression language"),
        ("z.value", "z.value", "attribute access"),
        ("m.z + 1", "m.z", "attribute access"),
        ("log(z)", "log(z)", "function log is not available"),
        ("z if rate > 1 else 0", "z if rate > 1 else 0", "conditional expressions"),
        ("sum([x[i, 'NY'] for i in Plants])", "sum([x[i, 'NY'] for i in Plants])", "write sums as"),
        ("__import__('os')", "__import__('os')", "function __import__ is not available"),
        ("z +", "z +", "cannot parse"),
    ],
)
def test_unsupported_syntax(expression: str, token: str, words: str) -> None:
    error = only_error(formulation(objective=expression))
    assert error.component == "objective"
    assert words in error.message
    assert token in error.token or error.token in token


def test_missing_table_entry_without_default() -> None:
    f = formulation()
    f.parameters[2].value = {"Boston": {"NY": 1, "LA": 4, "SF": 5}, "Denver": {"NY": 3, "LA": 2}}
    error = only_error(f)
    assert error.token == "cost[i, j]"
    assert "no entry for (Denver, SF) and no default" in error.message


def test_all_errors_are_collected_and_repeated_ones_counted() -> None:
    f = formulation(
        objective="sum(cost[i] * x[i, j] for i in Plants for j in Customers)",
        constraints=[
            con("a", "z < 3"),
            con("b", "z"),
            con("flow", "inv[t + 5] >= 0", [("t", "Periods")]),
        ],
    )
    errors = errors_of(f)
    components = [e.component for e in errors]
    assert components[:3] == ["objective", "constraint a", "constraint b"]
    assert "strict inequality" in errors[1].message and "comparison" in errors[2].message
    assert components[3:6] == ["constraint flow[1]", "constraint flow[2]", "constraint flow[3]"]
    message = str(FormulationError(errors, "shipping"))
    assert message.startswith("6 problems in formulation 'shipping':")


def test_constant_constraints_false_is_reported_true_is_dropped() -> None:
    f = formulation(
        constraints=[
            con("never", "sum(x[i, j] for i in Plants if i == 'Nowhere') >= demand[j]", [("j", "Customers")]),
            con("always", "0 * rate <= 1"),
        ]
    )
    errors = errors_of(f)
    assert [e.component for e in errors] == [
        "constraint never[NY]",
        "constraint never[LA]",
        "constraint never[SF]",
    ]
    assert "reduces to `0 >= 20`, which is false" in errors[0].message
    g = formulation(constraints=[con("always", "sum(x[i, 'NY'] for i in Hubs if i != 'Boston') <= 1")])
    assert build_model(g).always_true == ["always"]


def test_declaration_errors_unknown_sets_and_bad_table_keys() -> None:
    f = formulation()
    f.variables[0].index = ["Plnts", "Customers"]
    f.parameters[0].value = {"Bostn": 50, "Denver": 60}
    errors = errors_of(f)
    by_component = {e.component: e for e in errors}
    assert "'Plnts' is not declared" in by_component["variable x"].message
    assert "'Plants'" in by_component["variable x"].message
    assert by_component["parameter supply"].token == "Bostn"
    assert "not an element of set Plants" in by_component["parameter supply"].message
    assert "Did you mean 'Boston'" in by_component["parameter supply"].message


def test_range_outer_parts_must_be_data_and_filters_cannot_use_variables() -> None:
    error = only_error(formulation(constraints=[con("r", "z <= inv[1] <= 5")]))
    assert error.token == "z" and "outer parts of a range" in error.message
    error = only_error(formulation(objective="sum(x[i, j] for i in Plants for j in Customers if z > 1)"))
    assert "filters can only use indices and parameters" in error.message


def test_reserved_pyomo_names_and_shadowing_indices() -> None:
    f = formulation(objective="name + z")
    f.variables.append(f.variables[2].model_copy(update={"name": "name"}))
    assert "reserved by Pyomo" in only_error(f).message
    error = only_error(formulation(objective="sum(x[i, rate] for i in Plants for rate in Customers)"))
    assert "also the name of a set, parameter or variable" in error.message


def test_expression_errors_survive_pickling() -> None:
    error = ExpressionError("bad", component="objective", token="x")
    copy = pickle.loads(pickle.dumps(error))
    assert (copy.message, copy.component, copy.token, str(copy)) == ("bad", "objective", "x", str(error))
    many = pickle.loads(pickle.dumps(FormulationError([error], "m")))
    assert str(many) == str(FormulationError([error], "m"))


def test_problems_in_where_filters_and_arithmetic_are_reported_per_instance() -> None:
    f = formulation(
        objective="z",
        constraints=[
            con("cheap", "x[i, j] <= 10", [("i", "Plants"), ("j", "Customers")], where="cost[i, j] > 1"),
            con("huge", "z <= rate ** need[t] ** 400", [("t", "Periods")]),
        ],
    )
    f.parameters[2].value = {"Boston": {"NY": 1, "LA": 4, "SF": 5}, "Denver": {"NY": 3, "LA": 2}}
    errors = errors_of(f)
    assert [e.component for e in errors] == [
        "constraint cheap[Denver,SF] (where)",
        "constraint huge[1]",
        "constraint huge[2]",
        "constraint huge[3]",
    ]
    assert "no entry for (Denver, SF)" in errors[0].message
    assert "arithmetic error" in errors[1].message
