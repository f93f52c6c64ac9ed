"""Loaders on the real public files: counts, sentinels, ids, checksums, and user JSONL files."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from pathlib import Path

import pytest

from agent.datasets import (
    DatasetError,
    datasets_root,
    detect_format,
    get_spec,
    list_datasets,
    load_dataset,
    parse_answer,
    parse_results,
    read_records,
    register_dataset,
    unregister_dataset,
)

# Counts from datasets/INDEX.md.
EXPECTED = {
    "nl4opt": 245,
    "nl4opt-e": 289,
    "nl4opt-competition-test": 289,
    "nl4opt-competition-dev": 99,
    "mamo-easy": 652,
    "mamo-complex": 211,
    "mamo-easy-cardinal": 652,
    "mamo-complex-cardinal": 211,
    "industryor-v1": 100,
    "industryor-v2": 100,
    "optibench": 605,
}


def test_registry_names_every_public_file() -> None:
    assert {spec.name for spec in list_datasets()} >= set(EXPECTED)
    for name in EXPECTED:
        assert (datasets_root() / get_spec(name).path).is_file()


@pytest.mark.parametrize(("name", "count"), EXPECTED.items())
def test_counts_match_the_index(name: str, count: int) -> None:
    dataset = load_dataset(name)
    assert len(dataset.problems) == count
    assert len({p.id for p in dataset.problems}) == count
    assert all(p.id.startswith(f"{name}/") and p.question.strip() for p in dataset.problems)
    assert "@" in dataset.version


@pytest.mark.parametrize("name", ["nl4opt", "mamo-easy", "industryor-v2", "optibench", "nl4opt-e"])
def test_limit_takes_a_slice_and_keeps_the_file_checksum(name: str) -> None:
    full = load_dataset(name)
    head = load_dataset(name, limit=3)
    assert [p.id for p in head.problems] == [p.id for p in full.problems[:3]]
    assert head.checksum == full.checksum


def test_json_lines_behind_a_json_extension_and_json_arrays_are_both_read() -> None:
    jsonl = datasets_root() / get_spec("nl4opt").path
    array = datasets_root() / get_spec("optibench").path
    assert jsonl.suffix == ".json" and jsonl.read_text().lstrip()[0] == "{"
    assert array.read_text().lstrip()[0] == "["
    assert len(read_records(jsonl)) == 245
    assert len(read_records(array)) == 605


def test_sniffing_ignores_the_extension(tmp_path: Path) -> None:
    lines = tmp_path / "rows.json"
    lines.write_text('\n\n  {"question": "q1", "answer": 1}\n{"question": "q2", "answer": 2}\n')
    array = tmp_path / "rows.jsonl"
    array.write_text('  [{"question": "q1", "answer": 1}]')
    assert [r["question"] for r in read_records(lines)] == ["q1", "q2"]
    assert [r["question"] for r in read_records(array)] == ["q1"]
    broken = tmp_path / "broken.jsonl"
    broken.write_text('{"question": "q1"}\n{"question": \n')
    with pytest.raises(DatasetError, match=r"broken.jsonl:2"):
        read_records(broken)


def test_cardinal_nl4opt_sentinels_become_infeasible() -> None:
    dataset = load_dataset("nl4opt")
    by_raw = Counter(p.label.raw for p in dataset.problems if p.label.status == "infeasible")
    assert by_raw == {"No Best Solution": 14, "-99999.0": 6, "-99999": 2}
    for problem in dataset.problems:
        if problem.label.status == "infeasible":
            assert problem.label.objective is None
        else:
            assert problem.label.status == "optimal" and problem.label.objective is not None
    assert dataset.problems[0].label.objective == 1160.0


def test_industryor_v1_sentinel_rows_and_a_real_negative_optimum() -> None:
    problems = load_dataset("industryor-v1").problems
    assert [i for i, p in enumerate(problems) if p.label.status == "infeasible"] == [14, 48, 53]
    assert problems[89].label.status == "optimal" and problems[89].label.objective == -1900.0
    assert problems[0].metadata["difficulty"] == "Easy"
    assert Counter(p.metadata["question_type"] for p in problems)["LP"] == 36


def test_results_dict_objective_is_the_last_entry() -> None:
    first = load_dataset("nl4opt-e", limit=1).problems[0]
    assert first.id == "nl4opt-e/0"
    assert first.label.objective == 3000.0
    assert first.label.values == {
        "Number of sled dog trips": 0.0,
        "Number of truck trips": 10.0,
        "Maximized number of fish transported": 3000.0,
    }
    optibench = load_dataset("optibench", limit=1).problems[0]
    assert optibench.label.objective == 3600.0 and optibench.metadata["type"]


def test_mamo_ids_leading_space_answer_and_cardinal_copy_agree() -> None:
    original = load_dataset("mamo-complex")
    assert original.problems[0].id == "mamo-complex/1"
    assert any(p.label.raw == " 172666.667" and p.label.objective == 172666.667 for p in original.problems)
    # SOURCE.md: the CardinalOperations re-format has identical answers (checked by question text).
    for plain, cardinal in (("mamo-easy", "mamo-easy-cardinal"), ("mamo-complex", "mamo-complex-cardinal")):
        answers = {p.question: p.label.objective for p in load_dataset(plain).problems}
        other = load_dataset(cardinal).problems
        assert all(answers[p.question] == p.label.objective for p in other)


def test_competition_rows_are_unlabelled_with_hash_ids() -> None:
    test = load_dataset("nl4opt-competition-test", limit=2)
    assert test.problems[0].id == "nl4opt-competition-test/1117636837"
    assert test.problems[0].label.status == "unlabelled"
    assert test.problems[0].question.startswith("A fishery wants to transport")


def test_groups_and_splits() -> None:
    both = load_dataset("nl4opt-competition")
    assert len(both.problems) == 388 and len(both.files) == 2
    dev = load_dataset("nl4opt-competition", split="dev")
    assert len(dev.problems) == 99 and dev.checksum == load_dataset("nl4opt-competition-dev").checksum
    assert both.checksum not in {f.sha256 for f in both.files}
    with pytest.raises(DatasetError, match="splits test, dev"):
        load_dataset("nl4opt-competition", split="train")
    with pytest.raises(DatasetError, match="no splits"):
        load_dataset("nl4opt", split="test")


def test_checksum_is_sha256_of_the_bytes_and_stable() -> None:
    path = datasets_root() / get_spec("industryor-v2").path
    expected = hashlib.sha256(path.read_bytes()).hexdigest()
    assert load_dataset("industryor-v2").checksum == expected
    assert load_dataset("industryor-v2").checksum == expected


def test_checksum_follows_the_content(tmp_path: Path) -> None:
    path = tmp_path / "mine.jsonl"
    path.write_text('{"question": "q", "answer": 1}\n')
    before = load_dataset(path).checksum
    path.write_text('{"question": "q", "answer": 2}\n')
    assert load_dataset(path).checksum != before


def test_user_jsonl_file(tmp_path: Path) -> None:
    rows = [
        {"question": "Maximize x with x <= 3.", "answer": 3, "difficulty": "easy"},
        {"id": "b", "question": "An impossible one.", "answer": "infeasible"},
        {"question": "No answer yet.", "answer": None},
        {"question": "String number.", "answer": "1,160.5"},
    ]
    path = tmp_path / "mine.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    dataset = load_dataset(path)
    assert dataset.name == "mine" and dataset.version == "file"
    ids = [p.id for p in dataset.problems]
    assert ids == ["mine/0", "mine/b", "mine/2", "mine/3"]
    labels = [p.label for p in dataset.problems]
    assert (labels[0].status, labels[0].objective) == ("optimal", 3.0)
    assert labels[1].status == "infeasible" and labels[2].status == "unlabelled"
    assert labels[3].objective == 1160.5
    assert dataset.problems[0].metadata == {"difficulty": "easy"}
    assert len(dataset.labelled) == 3


def test_user_file_errors_name_the_row(tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text('{"question": "ok", "answer": 1}\n{"question": "", "answer": 2}\n')
    with pytest.raises(DatasetError, match="row 1: field 'question'"):
        load_dataset(path)
    path.write_text('{"question": "ok", "answer": "about five"}\n')
    with pytest.raises(DatasetError, match="about five"):
        load_dataset(path)
    with pytest.raises(DatasetError, match="neither a registered dataset nor an existing file"):
        load_dataset(tmp_path / "missing.jsonl")


def test_register_a_custom_set(tmp_path: Path) -> None:
    path = tmp_path / "relabelled.jsonl"
    path.write_text('{"question": "q", "answer": 7}\n{"question": "r", "answer": 8}\n')
    register_dataset("my-relabelled", path, version="me@1", expected_count=2)
    try:
        dataset = load_dataset("my-relabelled")
        assert dataset.version == "me@1" and [p.label.objective for p in dataset.problems] == [7.0, 8.0]
        assert dataset.problems[0].id == "my-relabelled/0"
        with pytest.raises(DatasetError, match="already registered"):
            register_dataset("my-relabelled", path)
        register_dataset("my-relabelled", path, expected_count=3, replace=True)
        with pytest.raises(DatasetError, match="has 2 rows, expected 3"):
            load_dataset("my-relabelled")
    finally:
        unregister_dataset("my-relabelled")
    with pytest.raises(DatasetError, match="unknown dataset"):
        get_spec("my-relabelled")
    with pytest.raises(DatasetError, match="built in"):
        unregister_dataset("nl4opt")


def test_formats_are_recognized_by_their_fields() -> None:
    assert detect_format([{"en_question": "q", "en_answer": "1"}]) == "cardinal"
    assert detect_format([{"Question": "q", "Answer": "1"}]) == "mamo"
    assert detect_format([{"question": "q", "results": {"a": "1"}}]) == "results"
    assert detect_format([{"123": {"document": "d"}}]) == "nl4opt_competition"
    assert detect_format([{"question": "q"}]) == "user"
    with pytest.raises(DatasetError, match="unrecognized"):
        detect_format([{"prompt": "q"}])


def test_answer_parsing_edge_cases() -> None:
    assert parse_answer("No Best Solution").status == "infeasible"
    assert parse_answer(-99999).status == "infeasible"
    assert parse_answer("-99998").objective == -99998.0
    assert parse_answer(None).status == "unlabelled"
    assert parse_answer("  ").status == "unlabelled"
    with pytest.raises(DatasetError):
        parse_answer("nan")
    with pytest.raises(DatasetError):
        parse_answer(True)
    with pytest.raises(DatasetError):
        parse_results({})
    assert parse_results({"x": "1", "profit": "No Best Solution"}).status == "infeasible"
