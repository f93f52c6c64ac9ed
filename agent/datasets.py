"""Benchmark datasets: a registry of named public sets, loaders, and labels.

Every loader returns a `LoadedDataset` with the dataset's name, its version (source repository @
short commit, from the folder's SOURCE.md), the sha256 of the file bytes (computed on every load,
so a report pins exactly which data it scored) and a list of `Problem`s with normalized `Label`s.

Registered names (files under `datasets/`, see datasets/INDEX.md):

    nl4opt                    CardinalOperations NL4OPT, 245 problems, `en_answer`
    nl4opt-e                  ReSocratic NL4OPT-E, 289 problems, `results` dict
    nl4opt-competition-test   NeurIPS 2022 competition test, 289 annotated formulations, no numeric label
    nl4opt-competition-dev    competition dev, 99
    mamo-easy / mamo-complex  FreedomIntelligence Mamo EasyLP 652 / ComplexLP 211, `Answer`
    mamo-easy-cardinal / mamo-complex-cardinal   the CardinalOperations re-format of the same
    industryor-v1 / industryor-v2                IndustryOR, 100 each
    optibench                 ReSocratic OptiBench, 605 problems, `results` dict

Groups load several members at once and take `split` = a member's suffix:
`nl4opt-competition` (splits test, dev), `mamo` (easy, complex), `industryor` (v1, v2).

Labels. `status` is "optimal" with a numeric `objective`, "infeasible" for the sentinels the
sources use for problems without an optimum ("No Best Solution", -99999), "unbounded" (written by
OptiTrace's synthesis, whose solver-made labels can tell the two apart), or "unlabelled".
For `results`-dict sets the objective is the LAST entry and `values` holds every entry.

A user file (`load_dataset("my.jsonl")`) is JSON Lines or a JSON array of objects

    {"id": "optional, defaults to the row index", "question": "...", "answer": 1160 | "1160" | "infeasible"}

(or "unbounded").

`answer` may be omitted or null (unlabelled); extra fields become string metadata. Files in the
public formats above are recognized by their fields, so a re-labelled copy loads the same way.
`register_dataset` adds a named custom set to the registry.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

DATASETS_ENV = "OPTITRACE_DATASETS_DIR"
INFEASIBLE_SENTINEL = -99999.0
NO_SOLUTION_TEXTS = frozenset({"no best solution", "infeasible", "no solution", "no feasible solution"})

Format = Literal["cardinal", "mamo", "results", "nl4opt_competition", "industryor", "user"]
UNBOUNDED_TEXTS = frozenset({"unbounded", "unbounded objective"})
LabelStatus = Literal["optimal", "infeasible", "unbounded", "unlabelled"]


class DatasetError(ValueError):
    """A dataset that cannot be found or parsed; the message says which file and row."""


class Label(BaseModel):
    model_config = ConfigDict(extra="forbid")

    status: LabelStatus
    objective: float | None = None
    raw: str = Field(default="", description="the answer exactly as the file wrote it")
    values: dict[str, float] = Field(
        default_factory=dict, description="results-dict sets: every listed value, objective included"
    )


class Problem(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="stable: '<dataset>/<the file's own id or the row index>'")
    dataset: str
    question: str
    label: Label
    metadata: dict[str, str] = Field(default_factory=dict)


class SourceFile(BaseModel):
    path: Path
    sha256: str
    problems: int


class DatasetSpec(BaseModel):
    """One registered file. `path` is relative to the datasets root unless absolute."""

    model_config = ConfigDict(extra="forbid")

    name: str
    path: Path
    format: Format
    version: str = Field(description="source repo @ short commit, as recorded in SOURCE.md")
    description: str = ""
    expected_count: int | None = None
    license: str = ""


class LoadedDataset(BaseModel):
    name: str
    version: str
    checksum: str = Field(description="sha256 of the file bytes; for a group, of the members' checksums")
    split: str | None = None
    files: list[SourceFile]
    problems: list[Problem]

    def __len__(self) -> int:
        return len(self.problems)

    @property
    def labelled(self) -> list[Problem]:
        return [p for p in self.problems if p.label.status != "unlabelled"]


# --- registry ----------------------------------------------------------------------------------
_COMPETITION = "nl4opt/nl4opt-competition@49f1e0d"
_OR_LLM_AGENT = "bwz96sco/or_llm_agent@dfcc0e7"
_RESOCRATIC = "yangzhch6/ReSocratic@56a638f"
_MAMO = "FreedomIntelligence/Mamo@2c91069"


def _builtin(
    name: str, path: str, format: Format, version: str, count: int, license: str, description: str
) -> DatasetSpec:
    return DatasetSpec(
        name=name,
        path=Path(path),
        format=format,
        version=version,
        expected_count=count,
        license=license,
        description=description,
    )


_BUILTIN: tuple[DatasetSpec, ...] = (
    _builtin(
        "nl4opt",
        "NL4OPT/CardinalOperations-NL4OPT/NL4OPT_with_optimal_solution.json",
        "cardinal",
        _OR_LLM_AGENT,
        245,
        "cc-by-nc-4.0",
        "CardinalOperations NL4OPT (ORLM/OptMATH/SIRL's NL4OPT)",
    ),
    _builtin(
        "nl4opt-e",
        "NL4OPT/ReSocratic-NL4OPT-E/NL4OPT-E.json",
        "results",
        _RESOCRATIC,
        289,
        "Apache-2.0",
        "ReSocratic NL4OPT-E: the competition test texts, 50 edited, results dicts",
    ),
    _builtin(
        "nl4opt-competition-test",
        "NL4OPT/nl4opt-competition/test.jsonl",
        "nl4opt_competition",
        _COMPETITION,
        289,
        "MIT",
        "NL4OPT competition test: annotated formulations, no numeric label",
    ),
    _builtin(
        "nl4opt-competition-dev",
        "NL4OPT/nl4opt-competition/dev.jsonl",
        "nl4opt_competition",
        _COMPETITION,
        99,
        "MIT",
        "NL4OPT competition dev: annotated formulations, no numeric label",
    ),
    _builtin(
        "mamo-easy",
        "MAMO/FreedomIntelligence-Mamo/mamo_easy_lp.jsonl",
        "mamo",
        _MAMO,
        652,
        "CC BY-SA 4.0",
        "Mamo EasyLP",
    ),
    _builtin(
        "mamo-complex",
        "MAMO/FreedomIntelligence-Mamo/mamo_complex_lp.jsonl",
        "mamo",
        _MAMO,
        211,
        "CC BY-SA 4.0",
        "Mamo ComplexLP",
    ),
    _builtin(
        "mamo-easy-cardinal",
        "MAMO/CardinalOperations-MAMO-format/MAMO_EasyLP.json",
        "cardinal",
        _OR_LLM_AGENT,
        652,
        "not checked",
        "Mamo EasyLP, CardinalOperations re-format",
    ),
    _builtin(
        "mamo-complex-cardinal",
        "MAMO/CardinalOperations-MAMO-format/MAMO_ComplexLP.json",
        "cardinal",
        _OR_LLM_AGENT,
        211,
        "not checked",
        "Mamo ComplexLP, CardinalOperations re-format",
    ),
    _builtin(
        "industryor-v1",
        "IndustryOR/v1-2024/dataset.jsonl",
        "industryor",
        "LLM4OR/LLM4OR@75962df",
        100,
        "cc-by-nc-4.0",
        "IndustryOR as ORLM evaluated it (2024)",
    ),
    _builtin(
        "industryor-v2",
        "IndustryOR/v2-2025/IndustryOR.json",
        "industryor",
        _OR_LLM_AGENT,
        100,
        "cc-by-nc-4.0",
        "IndustryOR, 2025 re-wording",
    ),
    _builtin(
        "optibench",
        "OptiBench/ReSocratic/OptiBench.json",
        "results",
        _RESOCRATIC,
        605,
        "Apache-2.0",
        "ReSocratic OptiBench",
    ),
)

_REGISTRY: dict[str, DatasetSpec] = {spec.name: spec for spec in _BUILTIN}
_GROUPS: dict[str, dict[str, str]] = {
    "nl4opt-competition": {"test": "nl4opt-competition-test", "dev": "nl4opt-competition-dev"},
    "mamo": {"easy": "mamo-easy", "complex": "mamo-complex"},
    "industryor": {"v1": "industryor-v1", "v2": "industryor-v2"},
}


def datasets_root() -> Path:
    """The folder holding the data: $OPTITRACE_DATASETS_DIR, else `datasets/` next to the package."""
    configured = os.environ.get(DATASETS_ENV)
    return Path(configured) if configured else Path(__file__).resolve().parents[1] / "datasets"


def list_datasets() -> list[DatasetSpec]:
    return list(_REGISTRY.values())


def dataset_groups() -> dict[str, dict[str, str]]:
    return {name: dict(members) for name, members in _GROUPS.items()}


def get_spec(name: str) -> DatasetSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        known = ", ".join(sorted([*_REGISTRY, *_GROUPS]))
        raise DatasetError(f"unknown dataset {name!r}; known: {known}") from None


def register_dataset(
    name: str,
    path: str | Path,
    *,
    format: Format = "user",
    version: str = "local",
    description: str = "",
    expected_count: int | None = None,
    replace: bool = False,
) -> DatasetSpec:
    """Add a named set (e.g. a re-labelled copy or a user's JSONL file) to the registry."""
    if (name in _REGISTRY or name in _GROUPS) and not replace:
        raise DatasetError(f"dataset {name!r} is already registered (pass replace=True to override)")
    # A user's relative path means relative to where they run, not to the bundled data folder.
    spec = DatasetSpec(
        name=name,
        path=Path(path).expanduser().resolve(),
        format=format,
        version=version,
        description=description,
        expected_count=expected_count,
    )
    _REGISTRY[name] = spec
    return spec


def unregister_dataset(name: str) -> None:
    """Remove a custom set; the built-in ones cannot be removed."""
    if any(spec.name == name for spec in _BUILTIN):
        raise DatasetError(f"{name!r} is built in")
    _REGISTRY.pop(name, None)


# --- reading -----------------------------------------------------------------------------------
def read_records(path: Path) -> list[dict[str, Any]]:
    """Objects from a JSON array or a JSON Lines file, whatever its extension says.

    Several public `.json` files are JSON Lines, so the first non-blank character decides.
    """
    text = path.read_text(encoding="utf-8")
    stripped = text.lstrip()
    if not stripped:
        return []
    if stripped[0] == "[":
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as error:
            raise DatasetError(f"{path}: not valid JSON: {error}") from error
    else:
        rows = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as error:
                raise DatasetError(f"{path}:{number}: not valid JSON: {error}") from error
    for index, row in enumerate(rows):
        if not isinstance(row, dict):
            raise DatasetError(f"{path}: row {index} is a {type(row).__name__}, expected an object")
    return rows


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def parse_answer(raw: object) -> Label:
    """A scalar answer as the public files write it -> Label (sentinels become "infeasible",
    "unbounded" stays unbounded)."""
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        return Label(status="unlabelled", raw="" if raw is None else raw)
    text = str(raw)
    if isinstance(raw, str) and raw.strip().lower() in NO_SOLUTION_TEXTS:
        return Label(status="infeasible", raw=text)
    if isinstance(raw, str) and raw.strip().lower() in UNBOUNDED_TEXTS:
        return Label(status="unbounded", raw=text)
    if isinstance(raw, bool):
        raise DatasetError(f"answer {raw!r} is a boolean, not a number")
    try:
        value = float(text.strip().replace(",", ""))
    except ValueError:
        raise DatasetError(f"answer {text!r} is neither a number nor a no-solution marker") from None
    if not math.isfinite(value):
        raise DatasetError(f"answer {text!r} is not finite")
    if value == INFEASIBLE_SENTINEL:
        return Label(status="infeasible", raw=text)
    return Label(status="optimal", objective=value, raw=text)


def parse_results(results: object) -> Label:
    """A ReSocratic `results` object {quantity: numeric string}; the objective is the last entry."""
    if not isinstance(results, dict) or not results:
        raise DatasetError(f"`results` must be a non-empty object, got {results!r}")
    last_raw = list(results.values())[-1]
    headline = parse_answer(last_raw)
    values: dict[str, float] = {}
    for name, raw in results.items():
        entry = parse_answer(raw)
        if entry.objective is not None:
            values[str(name)] = entry.objective
    raw_text = json.dumps(results, ensure_ascii=False)
    if headline.status != "optimal":
        return Label(status=headline.status, raw=raw_text, values=values)
    return Label(status="optimal", objective=headline.objective, raw=raw_text, values=values)


def _text(row: dict[str, Any], key: str, where: str) -> str:
    value = row.get(key)
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"{where}: field {key!r} is missing or empty")
    return value


def _metadata(row: dict[str, Any], keys: tuple[str, ...]) -> dict[str, str]:
    return {key: str(row[key]) for key in keys if row.get(key) is not None}


def _own_or_row_id(row: dict[str, Any], key: str, index: int) -> str:
    value = row.get(key)
    return str(value) if value is not None else str(index)


# One converter per format: (dataset name, row, row index, where) -> Problem.
RowConverter = Callable[[str, dict[str, Any], int, str], Problem]


def _cardinal(name: str, row: dict[str, Any], index: int, where: str) -> Problem:
    return Problem(
        id=f"{name}/{_own_or_row_id(row, 'id', index)}",
        dataset=name,
        question=_text(row, "en_question", where),
        label=parse_answer(row.get("en_answer")),
        metadata=_metadata(row, ("difficulty", "question_type")),
    )


def _mamo(name: str, row: dict[str, Any], index: int, where: str) -> Problem:
    return Problem(
        id=f"{name}/{_own_or_row_id(row, 'id', index)}",
        dataset=name,
        question=_text(row, "Question", where),
        label=parse_answer(row.get("Answer")),
        metadata=_metadata(row, ("Category", "Type")),
    )


def _results(name: str, row: dict[str, Any], index: int, where: str) -> Problem:
    return Problem(
        id=f"{name}/{_own_or_row_id(row, 'index', index)}",
        dataset=name,
        question=_text(row, "question", where),
        label=parse_results(row.get("results")),
        metadata=_metadata(row, ("type",)),
    )


def _industryor(name: str, row: dict[str, Any], index: int, where: str) -> Problem:
    return Problem(
        id=f"{name}/{_own_or_row_id(row, 'id', index)}",
        dataset=name,
        question=_text(row, "en_question", where),
        label=parse_answer(row.get("en_answer")),
        metadata=_metadata(row, ("difficulty", "question_type")),
    )


def _competition(name: str, row: dict[str, Any], index: int, where: str) -> Problem:
    # Each line is {"<hash id>": {document, obj_declaration, const_declarations, ...}}.
    if len(row) != 1:
        raise DatasetError(f"{where}: expected one {{hash_id: annotation}} pair, got keys {list(row)[:5]}")
    ((hash_id, body),) = row.items()
    if not isinstance(body, dict):
        raise DatasetError(f"{where}: annotation of {hash_id} is not an object")
    return Problem(
        id=f"{name}/{hash_id}",
        dataset=name,
        question=_text(body, "document", where),
        label=Label(status="unlabelled"),
        metadata={"hash_id": str(hash_id), "row": str(index)},
    )


def _user(name: str, row: dict[str, Any], index: int, where: str) -> Problem:
    extra = {k: v for k, v in row.items() if k not in {"id", "question", "answer"}}
    return Problem(
        id=f"{name}/{_own_or_row_id(row, 'id', index)}",
        dataset=name,
        question=_text(row, "question", where),
        label=parse_answer(row.get("answer")),
        metadata={k: v if isinstance(v, str) else json.dumps(v) for k, v in extra.items()},
    )


_CONVERTERS: dict[str, RowConverter] = {
    "cardinal": _cardinal,
    "mamo": _mamo,
    "results": _results,
    "nl4opt_competition": _competition,
    "industryor": _industryor,
    "user": _user,
}


def detect_format(rows: list[dict[str, Any]]) -> Format:
    """Recognize a file's format from its first row's fields."""
    if not rows:
        return "user"
    first = rows[0]
    if "results" in first and "question" in first:
        return "results"
    if "Question" in first and "Answer" in first:
        return "mamo"
    if "en_question" in first:
        return "cardinal"
    if "question" in first:
        return "user"
    only_value = next(iter(first.values())) if len(first) == 1 else None
    if isinstance(only_value, dict) and "document" in only_value:
        return "nl4opt_competition"
    raise DatasetError(f"unrecognized dataset format; first row has fields {sorted(first)[:8]}")


def _load_file(spec: DatasetSpec, limit: int | None) -> tuple[SourceFile, list[Problem]]:
    path = spec.path if spec.path.is_absolute() else datasets_root() / spec.path
    if not path.is_file():
        raise DatasetError(f"dataset {spec.name!r}: file not found: {path}")
    rows = read_records(path)
    if spec.expected_count is not None and len(rows) != spec.expected_count:
        raise DatasetError(
            f"dataset {spec.name!r}: {path} has {len(rows)} rows, expected {spec.expected_count}"
        )
    convert = _CONVERTERS[spec.format]
    problems: list[Problem] = []
    seen: set[str] = set()
    for index, row in enumerate(rows):
        problem = convert(spec.name, row, index, f"{path}: row {index}")
        if problem.id in seen:
            raise DatasetError(f"dataset {spec.name!r}: duplicate problem id {problem.id}")
        seen.add(problem.id)
        problems.append(problem)
    if limit is not None:
        problems = problems[:limit]
    return SourceFile(path=path, sha256=file_sha256(path), problems=len(rows)), problems


def load_dataset(
    name_or_path: str | Path, split: str | None = None, limit: int | None = None
) -> LoadedDataset:
    """Load a registered dataset, a group (optionally one `split`), or a file path.

    `limit` keeps the first N problems (after choosing the split); the checksum always covers
    the whole file.
    """
    if limit is not None and limit < 0:
        raise DatasetError("limit must be >= 0")
    key = str(name_or_path)
    if key in _GROUPS:
        return _load_group(key, split, limit)
    if split is not None:
        raise DatasetError(f"dataset {key!r} has no splits; splits exist for: {', '.join(sorted(_GROUPS))}")
    if key in _REGISTRY:
        spec = _REGISTRY[key]
    else:
        path = Path(name_or_path)
        if not path.is_file():
            raise DatasetError(
                f"{key!r} is neither a registered dataset nor an existing file; "
                f"known: {', '.join(sorted([*_REGISTRY, *_GROUPS]))}"
            )
        spec = DatasetSpec(
            name=path.stem, path=path.resolve(), format=detect_format(read_records(path)), version="file"
        )
    source, problems = _load_file(spec, limit)
    return LoadedDataset(
        name=spec.name, version=spec.version, checksum=source.sha256, files=[source], problems=problems
    )


def _load_group(group: str, split: str | None, limit: int | None) -> LoadedDataset:
    members = _GROUPS[group]
    if split is not None and split not in members:
        raise DatasetError(f"dataset {group!r} has splits {', '.join(members)}, not {split!r}")
    chosen = [members[split]] if split is not None else list(members.values())
    files: list[SourceFile] = []
    problems: list[Problem] = []
    versions: list[str] = []
    for member in chosen:
        spec = _REGISTRY[member]
        source, member_problems = _load_file(spec, None)
        files.append(source)
        problems.extend(member_problems)
        if spec.version not in versions:
            versions.append(spec.version)
    if limit is not None:
        problems = problems[:limit]
    combined = hashlib.sha256("".join(f.sha256 for f in files).encode()).hexdigest()
    checksum = files[0].sha256 if len(files) == 1 else combined
    return LoadedDataset(
        name=group,
        version=", ".join(versions),
        checksum=checksum,
        split=split,
        files=files,
        problems=problems,
    )
