"""Attached data tables: loading, the short description the LLM sees, and filling IR data."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent.data_tables import (
    DataMappingError,
    describe_table,
    load_table,
    load_tables,
    parameter_value,
    set_elements,
)
from agent.draft import DraftError, FormulationDraft, draft_to_formulation, tidy_draft
from agent.steps import solve_ir
from solvers.result import SolveOptions

FOODS_CSV = "food,cost,protein,fat\ncorn,0.3,9,2\noats,0.5,12,6\nsoy,0.9,40,\n"


@pytest.fixture
def foods(tmp_path: Path) -> Path:
    path = tmp_path / "foods.csv"
    path.write_text(FOODS_CSV)
    return path


def test_csv_cells_become_numbers_and_blanks_none(foods: Path) -> None:
    table = load_table(foods)
    assert table.name == "foods" and table.shape == (3, 4)
    assert table.rows[0] == {"food": "corn", "cost": 0.3, "protein": 9, "fat": 2}
    assert table.rows[2]["fat"] is None
    assert table.numeric_columns() == ["cost", "protein", "fat"]


def test_description_is_short_and_shows_only_a_few_rows(tmp_path: Path) -> None:
    path = tmp_path / "big table.csv"
    path.write_text("item,weight\n" + "".join(f"i{n},{n}\n" for n in range(500)))
    text = describe_table(load_table(path), sample_rows=3)
    assert "Table big_table: 500 rows x 2 columns" in text
    assert "weight (number, 0 to 499)" in text and "item (text, 500 distinct)" in text
    assert "i2,2" in text and "i3,3" not in text and "497 more rows" in text
    assert len(text) < 400


@pytest.mark.parametrize(
    "payload",
    [
        [{"food": "corn", "cost": 0.3}, {"food": "oats", "cost": 0.5}],
        {"food": ["corn", "oats"], "cost": [0.3, 0.5]},
    ],
)
def test_json_records_and_columns_load_alike(tmp_path: Path, payload: object) -> None:
    path = tmp_path / "prices.json"
    path.write_text(json.dumps(payload))
    table = load_table(path)
    assert table.columns == ["food", "cost"]
    assert table.values("cost") == [0.3, 0.5]


def test_json_keyed_rows_get_a_key_column(tmp_path: Path) -> None:
    path = tmp_path / "plants.json"
    path.write_text(json.dumps({"Boston": {"capacity": 10}, "Denver": {"capacity": 20}}))
    table = load_table(path)
    assert table.columns == ["key", "capacity"]
    assert set_elements([table], "plants.key") == ["Boston", "Denver"]


def test_broken_json_and_clashing_names_are_clear_errors(tmp_path: Path) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(DataMappingError, match="not valid JSON"):
        load_table(bad)
    (tmp_path / "a").mkdir()
    first, second = tmp_path / "x.csv", tmp_path / "a" / "x.csv"
    first.write_text("k,v\na,1\n")
    second.write_text("k,v\nb,2\n")
    with pytest.raises(DataMappingError, match="share the name"):
        load_tables([first, second])


def test_parameter_values_come_from_the_table_not_the_llm(foods: Path) -> None:
    tables = [load_table(foods)]
    assert parameter_value(tables, "foods.cost", 1, ["food"]) == {"corn": 0.3, "oats": 0.5, "soy": 0.9}
    # the key column is guessed when the table has exactly the text column needed
    assert parameter_value(tables, "foods.protein", 1) == {"corn": 9.0, "oats": 12.0, "soy": 40.0}
    assert parameter_value(tables, "foods.fat", 1) == {"corn": 2.0, "oats": 6.0}  # blank cell left out


def test_wide_matrix_and_two_key_columns(tmp_path: Path) -> None:
    wide = tmp_path / "ship.csv"
    wide.write_text("plant,NY,LA\nBoston,3,9\nDenver,6,4\n")
    long = tmp_path / "lanes.csv"
    long.write_text("plant,customer,cost\nBoston,NY,3\nBoston,LA,9\nDenver,NY,6\n")
    tables = load_tables([wide, long])
    assert set_elements(tables, "ship.*") == ["NY", "LA"]
    matrix = {"Boston": {"NY": 3.0, "LA": 9.0}, "Denver": {"NY": 6.0, "LA": 4.0}}
    assert parameter_value(tables, "ship.*", 2) == matrix
    assert parameter_value(tables, "lanes.cost", 2, ["plant", "customer"])["Boston"] == {"NY": 3.0, "LA": 9.0}


def test_bad_references_name_what_exists(foods: Path) -> None:
    tables = [load_table(foods)]
    with pytest.raises(DataMappingError, match=r"no column 'price' \(columns: food, cost, protein, fat\)"):
        parameter_value(tables, "foods.price", 1)
    with pytest.raises(DataMappingError, match="no data table named 'feed'"):
        set_elements(tables, "feed.food")
    with pytest.raises(DataMappingError, match="holds 3 value"):
        parameter_value(tables, "foods.cost", 0)
    duplicated = foods.parent / "dup.csv"
    duplicated.write_text("k,v\na,1\na,2\n")
    with pytest.raises(DataMappingError, match="do not identify a row"):
        parameter_value([load_table(duplicated)], "dup.v", 1, ["k"])


def test_draft_with_table_references_becomes_a_filled_formulation(foods: Path) -> None:
    draft = FormulationDraft.model_validate(
        {
            "notes": "protein per kg: corn 9, oats 12, soy 40; need 20 protein; cost per kg in the table",
            "sets": [{"name": "Foods", "from_table": "foods.food"}],
            "parameters": [
                {"name": "cost", "index": ["Foods"], "from_table": "foods.cost", "key_columns": ["food"]},
                {"name": "protein", "index": ["Foods"], "from_table": "foods.protein"},
            ],
            "variables": [{"name": "buy", "index": ["Foods"], "meaning": "kg bought"}],
            "objective": {"sense": "minimize", "expression": "sum(cost[f] * buy[f] for f in Foods)"},
            "constraints": [{"name": "need", "expression": "sum(protein[f] * buy[f] for f in Foods) >= 20"}],
        }
    )
    formulation = draft_to_formulation(draft, [load_table(foods)])
    assert formulation.set_named("Foods").elements == ["corn", "oats", "soy"]
    assert formulation.parameter_named("protein").value == {"corn": 9.0, "oats": 12.0, "soy": 40.0}


def test_draft_problems_are_all_reported_at_once(foods: Path) -> None:
    draft = FormulationDraft.model_validate(
        {
            "notes": "",
            "sets": [{"name": "Foods", "from_table": "foods.item"}],
            "parameters": [{"name": "cap"}],
            "variables": [{"name": "2x"}],
            "objective": {"sense": "minimize", "expression": "x"},
            "constraints": [{"name": "c", "expression": "x >= 1", "for_all": ["every food"]}],
        }
    )
    with pytest.raises(DraftError) as caught:
        draft_to_formulation(draft, [load_table(foods)])
    text = "\n".join(caught.value.problems)
    assert "set Foods: table foods has no column 'item'" in text
    assert "parameter cap: give a value or from_table" in text
    assert "variable 2x" in text and "not an identifier" in text
    assert "constraint c: for_all entry" in text


def test_repeated_constraint_labels_are_made_unique_but_repeated_variables_are_not() -> None:
    from agent.draft import draft_to_formulation as build

    draft = FormulationDraft.model_validate(
        {
            "notes": "three machines, one job each",
            "variables": [
                {"name": "ricoh", "meaning": "jobs on Ricoh", "type": "integer"},
                {"name": "xerox", "meaning": "jobs on Xerox", "type": "integer"},
            ],
            "objective": {"sense": "minimize", "expression": "13*ricoh + 40*xerox"},
            "constraints": [
                {"name": "job_limit", "expression": "ricoh <= 1"},
                {"name": "job_limit", "expression": "xerox <= 1"},
                {"name": "xerox", "expression": "ricoh + xerox >= 1"},
            ],
            "missing_information": [],
        }
    )
    formulation = build(draft)
    assert [c.name for c in formulation.constraints] == ["job_limit", "job_limit_2", "xerox_2"]
    assert [c.expression for c in formulation.constraints][1] == "xerox <= 1"
    twice = draft.model_copy(update={"variables": [draft.variables[0], draft.variables[0]]})
    with pytest.raises(DraftError, match="used twice"):
        build(twice)


def test_names_with_spaces_become_identifiers_everywhere_they_are_used() -> None:
    draft = FormulationDraft.model_validate(
        {
            "notes": "two sites cover three streets",
            "sets": [{"name": "Main Streets", "elements": ["a", "b"]}],
            "variables": [
                {"name": "Park Avenue", "type": "binary"},
                {"name": "Park Avenue North", "type": "binary"},
                {"name": "open", "index": ["Main Streets"], "type": "binary"},
            ],
            "objective": {
                "sense": "minimize",
                "expression": "3*Park Avenue + 5*Park Avenue North + sum(open[s] for s in Main Streets)",
            },
            "constraints": [
                {"name": "cover main-street", "expression": "Park Avenue + Park Avenue North >= 1"},
                {"name": "each", "expression": "open[s] <= Park Avenue", "for_all": ["s in Main Streets"]},
            ],
        }
    )
    formulation = draft_to_formulation(draft)
    assert [v.name for v in formulation.variables] == ["Park_Avenue", "Park_Avenue_North", "open"]
    assert formulation.variables[2].index == ["Main_Streets"]
    assert formulation.objective.expression == (
        "3*Park_Avenue + 5*Park_Avenue_North + sum(open[s] for s in Main_Streets)"
    )
    assert formulation.constraints[0].name == "cover_main_street"
    assert formulation.constraints[1].for_all[0].set == "Main_Streets"


def test_a_constraint_written_with_one_equals_sign_is_an_equation() -> None:
    draft = FormulationDraft.model_validate(
        {
            "notes": "stock carries over",
            "variables": [{"name": "make_1"}, {"name": "stock_1"}],
            "objective": {"sense": "minimize", "expression": "3*make_1 + stock_1"},
            "constraints": [
                {"name": "balance", "expression": "stock_1 = make_1 - 70"},
                {"name": "cap", "expression": "make_1 <= 100"},
            ],
        }
    )
    formulation = draft_to_formulation(draft)
    assert [c.expression for c in formulation.constraints] == ["stock_1 == make_1 - 70", "make_1 <= 100"]
    two_equals = draft.model_copy(
        update={"constraints": [draft.constraints[0].model_copy(update={"expression": "a = b = 3"})]}
    )
    # which part is the equation is a guess: left as written, for the repair round to explain
    assert draft_to_formulation(two_equals).constraints[0].expression == "a = b = 3"


def test_a_for_all_over_an_index_the_sum_binds_again_is_dropped_and_yes_no_tables_are_numbers() -> None:
    draft = FormulationDraft.model_validate(
        {
            "notes": "two foods, protein per kg, a cap per food",
            "sets": [{"name": "Foods", "elements": ["oats", "soy"]}],
            "parameters": [
                {"name": "protein", "index": ["Foods"], "value": {"oats": 2, "soy": 5}},
                {"name": "allowed", "index": ["Foods"], "value": {"oats": True, "soy": False}},
            ],
            "variables": [{"name": "kg", "index": ["Foods"]}],
            "objective": {"sense": "minimize", "expression": "sum(kg[f] for f in Foods)"},
            "constraints": [
                # one requirement, written as if it were one per food
                {
                    "name": "protein_need",
                    "expression": "sum(protein[f] * kg[f] for f in Foods) >= 10",
                    "for_all": ["f in Foods"],
                },
                # f is used outside the sum too: which f is meant is a guess, so it stays
                {
                    "name": "mixed",
                    "expression": "kg[f] <= sum(kg[f] for f in Foods)",
                    "for_all": ["f in Foods"],
                },
                {
                    "name": "only_allowed",
                    "expression": "kg[f] <= 100 * allowed[f]",
                    "for_all": ["f in Foods"],
                },
            ],
        }
    )
    tidied = tidy_draft(draft)
    assert [c.for_all for c in tidied.constraints] == [[], ["f in Foods"], ["f in Foods"]]
    assert tidied.parameters[1].value == {"oats": 1, "soy": 0}
    kept = draft.model_copy(update={"constraints": [draft.constraints[0], draft.constraints[2]]})
    formulation = draft_to_formulation(kept)
    assert formulation.constraints[0].for_all == []
    assert solve_ir(formulation, SolveOptions()).solve.objective == pytest.approx(5.0)  # oats only: 10/2
