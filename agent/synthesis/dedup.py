"""Near-duplicate check of synthesized items against every test set in `datasets/`.

Two signals, both cheap:
* text: MinHash (datasketch, 128 permutations) of word 3-shingles of the normalized question
  (lowercase, every number replaced by `#`, punctuation dropped), so re-worded numbers do not hide
  a copied story;
* numbers: the exact Jaccard similarity of the two questions' sets of numbers (a copied data set
  with new words around it). It only counts when the two share at least MIN_SHARED_NUMBERS (6)
  distinct numbers: "10, 20, 30 and 40" in two unrelated problems is coincidence, six or more
  identical data values are not.

    similarity = max(text, (text + numbers) / 2)   if they share >= MIN_SHARED_NUMBERS numbers
               = text                              otherwise

An item is a duplicate when similarity >= DUPLICATE_THRESHOLD (0.5). For calibration: a real
NL4OPT question with a few words and one number changed scores ~0.7-0.9; an unrelated problem of
the same genre (another production-mix story) scores ~0.05-0.2.

Every item kept reports its closest test item (dataset, id, similarity) in its provenance.
"""

from __future__ import annotations

import re

import numpy as np
from datasketch import MinHash
from pydantic import BaseModel, Field

from agent.datasets import DatasetError, list_datasets, load_dataset
from agent.synthesis.numbers import number_signature

NUM_PERM = 128
DUPLICATE_THRESHOLD = 0.5
MIN_SHARED_NUMBERS = 6
_NUMBER = re.compile(r"\d[\d,]*(?:\.\d+)?|\.\d+")
_NOT_WORD = re.compile(r"[^a-z#]+")


def normalize(text: str) -> list[str]:
    lowered = _NUMBER.sub(" # ", text.lower())
    return [w for w in _NOT_WORD.sub(" ", lowered).split() if w]


def shingles(text: str, size: int = 3) -> set[str]:
    words = normalize(text)
    if len(words) < size:
        return {" ".join(words)} if words else set()
    return {" ".join(words[k : k + size]) for k in range(len(words) - size + 1)}


def minhash(text: str) -> MinHash:
    signature = MinHash(num_perm=NUM_PERM, seed=1)
    signature.update_batch([s.encode("utf-8") for s in sorted(shingles(text))])
    return signature


def _jaccard(a: set[str], b: set[str]) -> float:
    if not a or not b:
        return 0.0
    return len(a & b) / len(a | b)


class ClosestMatch(BaseModel):
    dataset: str
    id: str
    similarity: float
    text_similarity: float
    number_similarity: float
    duplicate: bool
    excerpt: str = Field(default="", description="the start of the test question")


class DedupIndex:
    """MinHash signatures and number sets of every test question; `closest(text)` finds the nearest."""

    def __init__(self, threshold: float = DUPLICATE_THRESHOLD) -> None:
        self.threshold = threshold
        self.keys: list[tuple[str, str, str]] = []  # (dataset, id, excerpt)
        self.numbers: list[set[str]] = []
        self._signatures: list[np.ndarray] = []
        self._matrix: np.ndarray | None = None
        self.loaded: dict[str, int] = {}
        self.skipped: dict[str, str] = {}

    @classmethod
    def from_datasets(
        cls, names: list[str] | None = None, threshold: float = DUPLICATE_THRESHOLD
    ) -> DedupIndex:
        """Every registered dataset (or `names`). A set that fails to load is listed in `skipped`."""
        index = cls(threshold)
        for name in names if names is not None else [spec.name for spec in list_datasets()]:
            try:
                dataset = load_dataset(name)
            except DatasetError as error:
                index.skipped[name] = str(error)
                continue
            for problem in dataset.problems:
                index.add(dataset.name, problem.id, problem.question)
            index.loaded[dataset.name] = len(dataset.problems)
        return index

    def add(self, dataset: str, item_id: str, question: str) -> None:
        self.keys.append((dataset, item_id, " ".join(question.split())[:160]))
        self.numbers.append(number_signature(question))
        self._signatures.append(minhash(question).hashvalues)
        self._matrix = None

    def __len__(self) -> int:
        return len(self.keys)

    def closest(self, text: str) -> ClosestMatch | None:
        if not self.keys:
            return None
        if self._matrix is None:
            self._matrix = np.vstack(self._signatures)
        text_scores = (self._matrix == minhash(text).hashvalues).mean(axis=1)
        mine = number_signature(text)
        best: tuple[float, float, float, int] | None = None
        for k, theirs in enumerate(self.numbers):
            text_score = float(text_scores[k])
            number_score = _jaccard(mine, theirs)
            if number_score > 0 and len(mine & theirs) >= MIN_SHARED_NUMBERS:
                score = max(text_score, (text_score + number_score) / 2)
            else:
                score = text_score
            if best is None or score > best[0]:
                best = (score, text_score, number_score, k)
        assert best is not None
        score, text_score, number_score, k = best
        dataset, item_id, excerpt = self.keys[k]
        return ClosestMatch(
            dataset=dataset,
            id=item_id,
            similarity=round(score, 4),
            text_similarity=round(text_score, 4),
            number_similarity=round(number_score, 4),
            duplicate=score >= self.threshold,
            excerpt=excerpt,
        )
