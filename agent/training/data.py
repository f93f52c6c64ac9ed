"""Training data: which sets may be trained on, and a deterministic train/validation split.

Training on a public benchmark's test problems and then reporting accuracy on them measures
memory, not modeling. So a training or validation set is refused when it is a registered public
benchmark (by name), a file in one of the benchmarks' own formats (a copy or re-labelled copy),
or a file that shares questions with any benchmark present on disk (a converted copy) —
unless the caller explicitly allows it.
"""

from __future__ import annotations

import hashlib
import random
import re
from pathlib import Path

from pydantic import BaseModel, Field

from agent.datasets import (
    DatasetError,
    LoadedDataset,
    Problem,
    dataset_groups,
    datasets_root,
    detect_format,
    list_datasets,
    load_dataset,
    read_records,
)
from agent.synthesis.pipeline import default_rejected_path

# Synthetic data lives here (agent/synthesis writes question/answer JSONL).
DEFAULT_TRAIN_DIR = "synth-v1"
# Inside a dataset folder, the file a folder name stands for, in order of preference.
_FOLDER_FILES = ("train.jsonl", "train.json", "data.jsonl", "problems.jsonl")


class TestSetError(ValueError):
    """Training or validation data is (or overlaps) a public benchmark's test set."""

    __test__ = False  # not a pytest test class, despite the name


class TestSetMatch(BaseModel):
    __test__ = False

    benchmark: str
    reason: str = Field(description='"name", "format" or "questions"')
    shared_questions: int = 0


def public_benchmarks() -> list[str]:
    """Registered public benchmark names (built-in formats) and their groups."""
    names = [spec.name for spec in list_datasets() if spec.format != "user"]
    return [*names, *dataset_groups()]


def resolve_dataset_path(name_or_path: str) -> str:
    """A registered name stays a name; a folder (e.g. ``datasets/synth-v1``) becomes its data file."""
    if name_or_path in public_benchmarks() or name_or_path in {s.name for s in list_datasets()}:
        return name_or_path
    candidates = [Path(name_or_path)]
    if not Path(name_or_path).is_absolute():
        candidates.append(datasets_root() / name_or_path)
    for path in candidates:
        if path.is_file():
            return str(path)
        if path.is_dir():
            for file_name in _FOLDER_FILES:
                if (path / file_name).is_file():
                    return str(path / file_name)
            data_files = sorted(p for p in path.iterdir() if p.suffix in (".jsonl", ".json"))
            if len(data_files) == 1:
                return str(data_files[0])
            raise DatasetError(
                f"{path} holds {len(data_files)} data files; name one of them "
                f"(or add {_FOLDER_FILES[0]}): {', '.join(p.name for p in data_files[:8])}"
            )
    return name_or_path  # load_dataset says what is wrong with it


def _normalized(text: str) -> str:
    return re.sub(r"\s+", " ", text).strip().lower()


def benchmark_questions() -> dict[str, set[str]]:
    """Normalized questions of every public benchmark whose file is on disk."""
    found: dict[str, set[str]] = {}
    for spec in list_datasets():
        if spec.format == "user":
            continue
        try:
            loaded = load_dataset(spec.name)
        except DatasetError:  # not installed here: nothing to compare with
            continue
        found[spec.name] = {_normalized(problem.question) for problem in loaded.problems}
    return found


def test_set_matches(name_or_path: str, problems: list[Problem]) -> list[TestSetMatch]:
    """Why the data counts as a public test set; empty when it does not."""
    matches: list[TestSetMatch] = []
    if name_or_path in public_benchmarks():
        matches.append(TestSetMatch(benchmark=name_or_path, reason="name"))
    path = Path(name_or_path)
    if path.is_file():
        try:
            file_format = detect_format(read_records(path))
        except DatasetError:
            file_format = "user"
        if file_format != "user":
            matches.append(TestSetMatch(benchmark=f"a {file_format}-format benchmark file", reason="format"))
    questions = {_normalized(problem.question) for problem in problems}
    for benchmark, known in benchmark_questions().items():
        if benchmark == name_or_path:
            continue
        shared = len(questions & known)
        if shared:
            matches.append(TestSetMatch(benchmark=benchmark, reason="questions", shared_questions=shared))
    return matches


def describe_matches(role: str, name: str, matches: list[TestSetMatch]) -> str:
    reasons = []
    for match in matches:
        if match.reason == "questions":
            reasons.append(f"{match.shared_questions} question(s) also in {match.benchmark}")
        elif match.reason == "name":
            reasons.append(f"{match.benchmark} is a registered public benchmark")
        else:
            reasons.append(f"the file is {match.benchmark}")
    return f"the {role} set {name!r} is a public test set: {'; '.join(reasons)}"


class DataSplit(BaseModel):
    """The items to train and validate on, and where they came from."""

    train_name: str
    train_checksum: str
    val_name: str
    val_checksum: str
    split_from_train: bool = Field(description="validation items were held out of the training set")
    train: list[Problem]
    val: list[Problem]
    dropped_unlabelled: int = 0
    dropped_overlap: int = Field(default=0, description="validation items whose question is in training")
    warnings: list[str] = Field(default_factory=list)


def split_problems(
    problems: list[Problem], val_fraction: float, seed: int
) -> tuple[list[Problem], list[Problem]]:
    """A seeded, disjoint (train, val) split; the order of each part follows the file."""
    if not 0 < val_fraction < 1:
        raise ValueError("val_fraction must be between 0 and 1")
    if len(problems) < 2:
        raise DatasetError(f"cannot split {len(problems)} labelled problem(s) into train and validation")
    order = list(range(len(problems)))
    random.Random(seed).shuffle(order)
    val_count = min(len(problems) - 1, max(1, round(len(problems) * val_fraction)))
    val_indices = set(order[:val_count])
    train = [p for i, p in enumerate(problems) if i not in val_indices]
    val = [p for i, p in enumerate(problems) if i in val_indices]
    return train, val


def with_rejected_items(dataset: LoadedDataset, data_file: str) -> LoadedDataset:
    """The synthesized set plus its rejected items: solver-labelled problems the agent got wrong,
    i.e. the ones it has most to learn from."""
    companion = default_rejected_path(Path(data_file))
    if not companion.is_file():
        raise DatasetError(
            f"--with-rejected: {data_file!r} has no rejected set beside it ({companion.name} is missing)"
        )
    rejected = load_dataset(str(companion))
    checksum = hashlib.sha256(f"{dataset.checksum}+{rejected.checksum}".encode()).hexdigest()
    return dataset.model_copy(
        update={
            "name": f"{dataset.name}+rejected",
            "checksum": checksum,
            "files": [*dataset.files, *rejected.files],
            "problems": [*dataset.problems, *rejected.problems],
        }
    )


def _labelled(dataset: LoadedDataset) -> tuple[list[Problem], int]:
    labelled = dataset.labelled
    return labelled, len(dataset.problems) - len(labelled)


def prepare_data(
    train: str,
    val: str | None = None,
    *,
    val_fraction: float = 0.25,
    seed: int = 0,
    train_limit: int | None = None,
    val_limit: int | None = None,
    allow_test_set: bool = False,
    with_rejected: bool = False,
) -> DataSplit:
    """Load, guard and split. ``val`` None or equal to ``train`` holds validation items out of it.

    Raises TestSetError for a public test set unless ``allow_test_set`` (then it is a warning).
    """
    train_ref = resolve_dataset_path(train)
    val_ref = resolve_dataset_path(val) if val is not None else train_ref
    train_set = load_dataset(train_ref)
    if with_rejected:
        train_set = with_rejected_items(train_set, train_ref)
    same = val_ref == train_ref
    val_set = train_set if same else load_dataset(val_ref)
    warnings: list[str] = []
    for role, ref, loaded in (("training", train_ref, train_set), ("validation", val_ref, val_set)):
        if role == "validation" and same:
            continue
        matches = test_set_matches(ref, loaded.problems)
        if matches:
            message = describe_matches(role, ref, matches)
            if not allow_test_set:
                raise TestSetError(message + "; train on synthetic data, or pass --allow-test-set")
            warnings.append(message + " (allowed by --allow-test-set: do not report accuracy on it)")

    train_items, dropped = _labelled(train_set)
    dropped_overlap = 0
    if same:
        train_items, val_items = split_problems(train_items, val_fraction, seed)
    else:
        val_items, dropped_val = _labelled(val_set)
        dropped += dropped_val
        seen = {_normalized(p.question) for p in train_items}
        kept = [p for p in val_items if _normalized(p.question) not in seen]
        dropped_overlap = len(val_items) - len(kept)
        val_items = kept
    if dropped:
        warnings.append(f"{dropped} unlabelled item(s) skipped: nothing to score them against")
    if dropped_overlap:
        warnings.append(
            f"{dropped_overlap} validation item(s) dropped: their question is in the training set"
        )
    if train_limit is not None:
        train_items = train_items[:train_limit]
    if val_limit is not None:
        val_items = val_items[:val_limit]
    if not train_items:
        raise DatasetError(f"no labelled training items in {train_ref!r}")
    if not val_items:
        raise DatasetError(f"no labelled validation items in {val_ref!r}")
    return DataSplit(
        train_name=train_set.name,
        train_checksum=train_set.checksum,
        val_name=val_set.name,
        val_checksum=val_set.checksum,
        split_from_train=same,
        train=train_items,
        val=val_items,
        dropped_unlabelled=dropped,
        dropped_overlap=dropped_overlap,
        warnings=warnings,
    )
