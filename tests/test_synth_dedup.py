"""Near-duplicate check against the real test sets in datasets/: planted near-copies of real test
items are caught (and the right item is named); unrelated and synthesized text is not."""

from __future__ import annotations

import re

import pytest

from agent.datasets import load_dataset
from agent.synthesis.backtranslate import instance_facts
from agent.synthesis.dedup import DUPLICATE_THRESHOLD, DedupIndex, shingles
from agent.synthesis.families import FAMILIES
from agent.synthesis.numbers import format_number, number_signature


@pytest.fixture(scope="module")
def index() -> DedupIndex:
    return DedupIndex.from_datasets()


def light_edit(text: str) -> str:
    """What a careless generator might do to a memorized item: a synonym or two, one number
    changed, one sentence appended."""
    edited = re.sub(r"\bhow many\b", "what number of", text, count=1, flags=re.IGNORECASE)
    edited = re.sub(r"\bcompany\b", "firm", edited, count=1)
    edited = re.sub(r"\d+", lambda m: str(int(m.group(0)) + 3), edited, count=1)
    return edited + " Please explain your answer."


def test_every_registered_test_set_is_indexed(index: DedupIndex) -> None:
    for name in (
        "nl4opt",
        "nl4opt-e",
        "mamo-easy",
        "mamo-complex",
        "industryor-v1",
        "industryor-v2",
        "optibench",
    ):
        assert index.loaded.get(name, 0) > 0, name
    assert not index.skipped
    assert len(index) == sum(index.loaded.values())


@pytest.mark.parametrize(
    ("dataset", "position"),
    [
        ("nl4opt", 17),
        ("nl4opt", 120),
        ("mamo-easy", 40),
        ("mamo-complex", 5),
        ("industryor-v1", 30),
        ("optibench", 300),
    ],
)
def test_planted_near_copies_of_real_test_items_are_caught(
    index: DedupIndex, dataset: str, position: int
) -> None:
    problem = load_dataset(dataset).problems[position]
    planted = light_edit(problem.question)
    assert planted != problem.question
    match = index.closest(planted)
    assert match is not None and match.duplicate and match.similarity >= DUPLICATE_THRESHOLD
    # the named item is the one copied (or a verbatim copy of it in another set)
    named = next(p for p in load_dataset(match.dataset).problems if p.id == match.id)
    assert " ".join(named.question.split()) == " ".join(problem.question.split()) or match.id == problem.id


def test_new_numbers_in_old_words_are_still_caught(index: DedupIndex) -> None:
    problem = load_dataset("nl4opt").problems[60]
    renumbered = re.sub(r"\d+", lambda m: str(int(m.group(0)) * 2 + 1), problem.question)
    match = index.closest(renumbered)
    assert match is not None and match.duplicate and match.text_similarity > 0.9


def test_unrelated_text_is_not_a_duplicate(index: DedupIndex) -> None:
    text = (
        "Our choir is planning a spring concert tour across four towns and wants to know which "
        "songs to rehearse first, given that each singer can attend only some evening sessions?"
    )
    match = index.closest(text)
    assert match is not None and not match.duplicate and match.similarity < 0.2


@pytest.mark.parametrize("name", ["production_mix", "transportation", "diet_blend", "knapsack"])
def test_synthesized_facts_are_not_duplicates(index: DedupIndex, name: str) -> None:
    """Same genre as the test sets (products, profits, shipping) yet different items."""
    text = instance_facts(FAMILIES[name].generate(3, 2)).text
    match = index.closest(text)
    assert match is not None and not match.duplicate, match


def test_shared_numbers_alone_do_not_make_a_duplicate() -> None:
    small = DedupIndex()
    small.add(
        "tiny",
        "tiny/1",
        "A farm grows 10 acres of corn and 20 acres of wheat with 30 workers and 40 tractors.",
    )
    other = "The museum sells 10 posters, 20 mugs, 30 shirts and 40 caps to visiting school groups each week?"
    match = small.closest(other)
    assert match is not None and match.number_similarity == 1.0 and not match.duplicate


def test_a_reworded_item_with_the_same_data_is_caught(index: DedupIndex) -> None:
    """An LLM paraphrase keeps the data and changes the words: the numbers signal catches it."""
    problem = next(
        p for p in load_dataset("industryor-v1").problems if len(number_signature(p.question)) >= 10
    )
    data = [format_number(v) for v in sorted(float(x) for x in number_signature(problem.question))]
    paraphrase = "Consider the following figures: " + "; ".join(data) + ". What should be decided?"
    match = index.closest(paraphrase)
    assert match is not None and match.text_similarity < 0.2
    assert match.duplicate and match.number_similarity > 0.9
    named = next(p for p in load_dataset(match.dataset).problems if p.id == match.id)
    assert number_signature(named.question) == number_signature(problem.question)


def test_an_unloadable_dataset_is_reported_not_fatal() -> None:
    partial = DedupIndex.from_datasets(["nl4opt", "no-such-set"])
    assert "no-such-set" in partial.skipped and partial.loaded == {"nl4opt": 245}


def test_shingles_ignore_case_punctuation_and_numbers() -> None:
    assert shingles("Each chair needs 3 hours!") == shingles("each CHAIR needs 7 hours")
