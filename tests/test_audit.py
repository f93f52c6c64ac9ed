"""The NL4OPT audit: numbers, declarations -> IR, hand-solved optima, repairs, the full run, the CLI."""

from __future__ import annotations

import json
import re

import pytest
from typer.testing import CliRunner

from agent.cli import app
from agent.datasets import parse_answer
from agent.nl4opt_audit import (
    Annotation,
    AnnotationError,
    LabelIndex,
    LabelMatch,
    assign_domains,
    audit_problem,
    build_linear_model,
    decide_domain,
    default_solver,
    load_annotations,
    normalize_text,
    parse_quantity,
    render_linear,
    run_audit,
    to_formulation,
)
from solvers.expressions import FloatAlgebra, compile_formulation
from solvers.result import SolveResult, SolveStatus

SLED_DOGS = "nl4opt-competition-test/1117636837"  # fish by sled dog or truck, $1000 budget
FURNITURE = "nl4opt-competition-test/1588230199"  # chairs and dressers, stain and oak wood
TELECOM = "nl4opt-competition-test/2005236115"  # invest in telecom and healthcare
ORCHARD = "nl4opt-competition-test/294897151"  # acres of apples and pears
TRAINS = "nl4opt-competition-test/1695786577"  # order_mapping sends "train" to trams
KAYAKS = "nl4opt-competition-test/-876754599"  # vars ["kayak", "motorboat", "Kayaks"]
ADS = "nl4opt-competition-test/1275707149"  # ratio limit "5" means 5%
STAMPS = "nl4opt-competition-test/-642253022"  # "more than" annotated as LESS_OR_EQUAL
BROKEN = {
    "nl4opt-competition-dev/-641246185": "objective: no terms",
    "nl4opt-competition-dev/-1379231929": "constraint 2 (linear): no terms",
    "nl4opt-competition-dev/141730788": "constraint 1 (linear): no terms",
}


@pytest.fixture(scope="module")
def annotations() -> dict[str, Annotation]:
    return {a.id: a for a in load_annotations()}


@pytest.fixture(scope="module")
def labels() -> LabelIndex:
    return LabelIndex.load()


def solve(annotation: Annotation, choice: str) -> SolveResult:
    model = assign_domains(build_linear_model(annotation), annotation, choice)
    return default_solver(to_formulation(model))


@pytest.mark.parametrize(
    ("text", "value", "percent"),
    [
        ("1000", 1000, False),
        ("250,000", 250000, False),
        ("$5", 5, False),
        ("0.30", 0.3, False),
        ("20%", 0.2, True),
        ("7.5%", 0.075, True),
        ("35 percent", 0.35, True),
        ("thirty percent", 0.3, True),
        ("fifteen", 15, False),
        ("Two", 2, False),
        ("one hundred thousand", 100000, False),
        ("third", 1 / 3, False),
        ("a third", 1 / 3, False),
        ("half", 0.5, False),
        ("twice", 2, False),
        ("thrice", 3, False),
        ("three times", 3, False),
        ("2 times", 2, False),
        ("1.5 times", 1.5, False),
        ("ten times", 10, False),
    ],
)
def test_numbers_as_annotators_wrote_them(text: str, value: float, percent: bool) -> None:
    quantity = parse_quantity(text)
    assert quantity.value == pytest.approx(value)
    assert quantity.percent is percent
    assert quantity.note is None


def test_trailing_units_are_dropped_with_a_note_and_nonsense_is_refused() -> None:
    quantity = parse_quantity("8000 minutes")
    assert quantity.value == 8000 and "minutes" in (quantity.note or "")
    with pytest.raises(AnnotationError, match="banana"):
        parse_quantity("banana")


def test_every_declaration_type_is_seen_and_388_annotations_load(annotations: dict[str, Annotation]) -> None:
    assert len(annotations) == 388
    kinds = {c.type for a in annotations.values() for c in a.constraints}
    assert kinds == {"linear", "sum", "upperbound", "lowerbound", "xy", "xby", "ratio"}
    assert {a.objective.type for a in annotations.values()} == {"objective", "objvar"}


def test_sled_dogs_model_and_its_hand_computed_optimum(annotations: dict[str, Annotation]) -> None:
    annotation = annotations[SLED_DOGS]
    model = build_linear_model(annotation)
    assert model.sense == "maximize"
    assert model.objective == {"sled_dogs": 100.0, "trucks": 300.0}
    rows = [(c.coefficients, c.sense, c.rhs) for c in model.constraints]
    assert rows == [
        ({"sled_dogs": 50.0, "trucks": 100.0}, "<=", 1000.0),
        ({"sled_dogs": 1.0, "trucks": -1.0}, "<=", 0.0),
    ]
    formulation = to_formulation(assign_domains(model, annotation))
    assert formulation.constraints[0].expression == "50 * sled_dogs + 100 * trucks <= 1000"
    assert not compile_formulation(formulation, FloatAlgebra({})).errors
    # Trucks carry 3 fish per dollar, sled dogs 2: all $1000 on 10 truck trips, 3000 fish.
    assert decide_domain(annotation)[0] == "integer"
    for choice in ("integer", "continuous"):
        result = solve(annotation, choice)
        assert result.status == SolveStatus.OPTIMAL
        assert result.objective == pytest.approx(3000.0)


def test_furniture_lp_and_integer_optima_by_hand(annotations: dict[str, Annotation]) -> None:
    # max 43c + 52d, 1.4c + 1.1d <= 17, 2c + 3d <= 11. LP: c = 5.5 -> 236.5. Integer: the best of
    # c = 0..5 with d = floor((11 - 2c) / 3) is c = 4, d = 1 -> 224.
    annotation = annotations[FURNITURE]
    assert solve(annotation, "continuous").objective == pytest.approx(236.5)
    assert solve(annotation, "integer").objective == pytest.approx(224.0)
    assert decide_domain(annotation)[0] == "integer"


def test_an_investment_is_continuous_and_its_label_is_wrong(
    annotations: dict[str, Annotation], labels: LabelIndex
) -> None:
    # T + H <= 100000, T >= 3H, T <= 70000, max 0.03T + 0.01H: T = 70000, H = 70000/3 -> 2333.33.
    # The CardinalOperations label 2400 needs H = 30000, which breaks T >= 3H.
    annotation = annotations[TELECOM]
    domain, reason = decide_domain(annotation)
    assert domain == "continuous" and "how much" in reason
    audit = audit_problem(annotation, labels.lookup(annotation.document), default_solver)
    assert audit.solved["rule"].objective == pytest.approx(2100 + 70000 / 300)
    [check] = audit.labels
    assert (check.source, check.label_objective, check.agree["rule"]) == ("nl4opt", 2400.0, False)
    assert check.agree_5pct  # within 5% once rounded: ORLM's rule would accept the wrong label


def test_measured_decisions_are_continuous(annotations: dict[str, Annotation]) -> None:
    domain, reason = decide_domain(annotations[ORCHARD])
    assert domain == "continuous" and "acres of" in reason
    domains = [decide_domain(a)[0] for a in annotations.values()]
    assert domains.count("continuous") == 44 and domains.count("integer") == 344


def test_annotation_repairs_are_recorded(annotations: dict[str, Annotation]) -> None:
    trains = build_linear_model(annotations[TRAINS])
    assert trains.constraints[0].coefficients == {"trains": 120.0, "trams": 30.0}
    assert any("order_mapping sends 'train'" in note for note in trains.notes)
    kayaks = build_linear_model(annotations[KAYAKS])
    assert [v.text for v in kayaks.variables] == ["kayak", "motorboat"]
    ads = build_linear_model(annotations[ADS])
    ratio = ads.constraints[2]
    assert ratio.kind == "ratio" and ratio.coefficients["z_tube"] == pytest.approx(0.95)
    assert any("read as 5%" in note for note in ads.notes)
    stamps = build_linear_model(annotations[STAMPS])
    assert any("contradicts operator <=" in note for note in stamps.notes)


def test_incomplete_annotations_are_build_errors(annotations: dict[str, Annotation]) -> None:
    for annotation_id, message in BROKEN.items():
        with pytest.raises(AnnotationError, match=re.escape(message)):
            build_linear_model(annotations[annotation_id])


def test_rendering_of_linear_expressions() -> None:
    order = ["x", "y", "z"]
    assert render_linear({"x": -1.0, "y": 0.5, "z": -2.0}, order) == "-x + 0.5 * y - 2 * z"
    assert render_linear({"y": 1.0, "x": 0.0}, order) == "y"
    assert render_linear({}, order) == "0 * x"


def test_labels_match_by_text(annotations: dict[str, Annotation], labels: LabelIndex) -> None:
    assert labels.rows == {"nl4opt": 245, "nl4opt-e": 289}
    assert normalize_text("  A  Fishery\nwants ") == "a fishery wants"
    # Case and spacing do not matter; the NL4OPT-E copy of this text carries 3000, and the
    # CardinalOperations copy was rewritten without numbers, so it matches nothing.
    shouted = "  " + annotations[SLED_DOGS].document.upper().replace(" ", "  ")
    assert [(m.source, m.label.objective) for m in labels.lookup(shouted)] == [("nl4opt-e", 3000.0)]


def test_infeasible_label_on_a_feasible_problem_is_a_disagreement(annotations: dict[str, Annotation]) -> None:
    # Pills A and B (nl4opt-competition-test/1703643437): buying enough of both always works,
    # yet the CardinalOperations label says "No Best Solution".
    annotation = annotations["nl4opt-competition-test/1703643437"]
    match = LabelMatch(source="nl4opt", label_id="nl4opt/x", label=parse_answer("No Best Solution"))
    audit = audit_problem(annotation, [match], default_solver)
    assert audit.solved["rule"].status == SolveStatus.OPTIMAL
    assert not audit.labels[0].agree["rule"]


def test_one_failing_problem_does_not_stop_the_audit(labels: LabelIndex) -> None:
    def flaky(formulation):  # the real solver, except on one model
        if formulation.name.endswith("1884763091"):
            raise RuntimeError("solver crashed")
        return default_solver(formulation)

    report = run_audit(limit=4, solver=flaky, labels=labels)
    assert report.total == 4 and len(report.problems) == 3
    assert [e.id for e in report.solve_errors] == ["nl4opt-competition-test/1884763091"]
    assert "solver crashed" in report.solve_errors[0].error


def test_full_audit(labels: LabelIndex) -> None:
    report = run_audit(labels=labels)
    assert report.total == 388
    assert report.built == 385
    assert {e.id for e in report.build_errors} == set(BROKEN)
    assert report.solved >= 380 and report.optimal >= 350 and not report.solve_errors
    assert report.labelled == 279
    assert report.agree + report.disagree == report.labelled
    assert 230 <= report.agree <= 250
    # The principled rule beats both blanket readings; an all-LP reading matches far fewer labels.
    assert report.agree_by_choice["continuous"] < report.agree_by_choice["integer"] <= report.agree + 5
    sources = {s.source: s for s in report.per_source}
    assert (sources["nl4opt"].matched, sources["nl4opt-e"].matched) == (244, 239)
    assert report.disagreements and all(d.id and d.label_source in sources for d in report.disagreements)
    assert any(d.id == TELECOM and d.label == 2400.0 for d in report.disagreements)
    assert len(report.disagreements) == sum(s.disagree for s in report.per_source)
    stamps = {s.name for s in report.datasets}
    assert stamps == {"nl4opt", "nl4opt-e", "nl4opt-competition-test", "nl4opt-competition-dev"}


def test_cli_json_and_table() -> None:
    runner = CliRunner()
    result = runner.invoke(app, ["audit", "nl4opt", "--json", "--limit", "12"])
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert summary["total"] == 12 and summary["built"] == 12
    for key in ("solved", "labelled", "agree", "disagree", "disagreements"):
        assert key in summary
    for item in summary["disagreements"]:
        assert {"id", "ours", "label"} <= set(item)
    table = runner.invoke(app, ["audit", "nl4opt", "--limit", "12"])
    assert table.exit_code == 0 and "NL4OPT annotation audit" in table.stdout
