"""Attached CSV/JSON data tables: describe them briefly to the LLM, then fill IR data from them.

A 4k-context model cannot read a 500-row table, and should not copy numbers anyway. The prompt
shows each table's name, shape, column kinds and a few sample rows; the LLM then names, for each
set and parameter, the column it comes from ("costs.cost") and the key columns. The values
themselves are read here from the real table, so no number passes through the LLM.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

Cell = str | int | float | None
Element = str | int

WIDE_COLUMNS = "*"  # "table.*": every numeric column, for wide matrices and header-named sets


class DataMappingError(ValueError):
    """A reference to a table or column that does not exist, or data that does not fit the IR."""


class DataTable(BaseModel):
    name: str = Field(description="identifier the LLM uses to refer to the table")
    source: str = ""
    columns: list[str]
    rows: list[dict[str, Cell]]

    @property
    def shape(self) -> tuple[int, int]:
        return len(self.rows), len(self.columns)

    def values(self, column: str) -> list[Cell]:
        return [row.get(column) for row in self.rows]

    def is_numeric(self, column: str) -> bool:
        cells = [v for v in self.values(column) if v is not None]
        return bool(cells) and all(isinstance(v, int | float) for v in cells)

    def numeric_columns(self) -> list[str]:
        return [c for c in self.columns if self.is_numeric(c)]


# --- loading --------------------------------------------------------------------------------------
def table_name_for(path: Path) -> str:
    name = re.sub(r"\W+", "_", path.stem).strip("_") or "table"
    return f"t_{name}" if name[0].isdigit() else name


def parse_cell(text: str) -> Cell:
    cleaned = text.strip()
    if cleaned == "":
        return None
    numeric = cleaned.replace(",", "") if re.fullmatch(r"-?\d{1,3}(,\d{3})+(\.\d+)?", cleaned) else cleaned
    for convert in (int, float):
        try:
            return convert(numeric)
        except ValueError:
            continue
    return cleaned


def table_from_csv(text: str, name: str, source: str = "") -> DataTable:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames:
        raise DataMappingError(f"{source or name}: the CSV has no header row")
    columns = [c.strip() for c in reader.fieldnames]
    pairs = list(zip(columns, reader.fieldnames, strict=True))
    rows = [{column: parse_cell(raw.get(original) or "") for column, original in pairs} for raw in reader]
    return DataTable(name=name, source=source, columns=columns, rows=rows)


def _json_cell(value: Any, where: str) -> Cell:
    if isinstance(value, bool):
        return int(value)
    if value is None or isinstance(value, int | float):
        return value
    if isinstance(value, str):
        return parse_cell(value)
    raise DataMappingError(f"{where}: nested value {value!r} is not a table cell")


def table_from_json(data: Any, name: str, source: str = "") -> DataTable:
    """Accepts records ([{...}]), columns ({col: [...]}), keyed rows ({key: {...}}) or scalars ({k: v})."""
    where = source or name
    if isinstance(data, list) and data and all(isinstance(r, dict) for r in data):
        records = data
    elif isinstance(data, dict) and data and all(isinstance(v, list) for v in data.values()):
        lengths = {len(v) for v in data.values()}
        if len(lengths) != 1:
            raise DataMappingError(f"{where}: columns have different lengths {sorted(lengths)}")
        columns = list(data)
        records = [{c: data[c][i] for c in columns} for i in range(lengths.pop())]
    elif isinstance(data, dict) and data and all(isinstance(v, dict) for v in data.values()):
        records = [{"key": key, **row} for key, row in data.items()]
    elif isinstance(data, dict) and data:
        records = [data]
    else:
        raise DataMappingError(f"{where}: expected a list of records or an object of columns/rows/values")
    columns: list[str] = []
    for record in records:
        columns += [str(c) for c in record if str(c) not in columns]
    rows = [{str(k): _json_cell(v, where) for k, v in record.items()} for record in records]
    return DataTable(name=name, source=source, columns=columns, rows=rows)


def load_table(path: Path | str, name: str | None = None) -> DataTable:
    path = Path(path)
    table_name = name or table_name_for(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise DataMappingError(f"cannot read data table {path}: {error.strerror or error}") from error
    if path.suffix.lower() == ".json":
        try:
            return table_from_json(json.loads(text), table_name, str(path))
        except json.JSONDecodeError as error:
            raise DataMappingError(f"{path}: not valid JSON ({error.msg}, line {error.lineno})") from error
    return table_from_csv(text, table_name, str(path))


def load_tables(paths: list[Path | str]) -> list[DataTable]:
    tables = [load_table(p) for p in paths]
    names = [t.name for t in tables]
    repeated = sorted({n for n in names if names.count(n) > 1})
    if repeated:
        raise DataMappingError(f"data tables would share the name(s) {', '.join(repeated)}; rename a file")
    return tables


# --- what the LLM sees ----------------------------------------------------------------------------
def _column_summary(table: DataTable, column: str) -> str:
    cells = [v for v in table.values(column) if v is not None]
    if table.is_numeric(column):
        return f"{column} (number, {min(cells):g} to {max(cells):g})" if cells else f"{column} (empty)"
    distinct = list(dict.fromkeys(str(v) for v in cells))
    return f"{column} (text, {len(distinct)} distinct)"


def _csv_line(cells: list[Cell]) -> str:
    return ",".join("" if c is None else f"{c:g}" if isinstance(c, float) else str(c) for c in cells)


def describe_table(table: DataTable, sample_rows: int = 3) -> str:
    rows, cols = table.shape
    lines = [
        f"Table {table.name}: {rows} rows x {cols} columns",
        "  columns: " + ", ".join(_column_summary(table, c) for c in table.columns),
        "  " + ",".join(table.columns),
    ]
    lines += ["  " + _csv_line([row.get(c) for c in table.columns]) for row in table.rows[:sample_rows]]
    if rows > sample_rows:
        lines.append(f"  ... ({rows - sample_rows} more rows)")
    return "\n".join(lines)


def describe_tables(tables: list[DataTable], sample_rows: int = 3) -> str:
    return "\n".join(describe_table(t, sample_rows) for t in tables)


# --- from references to IR data -------------------------------------------------------------------
def _find_table(tables: list[DataTable], name: str) -> DataTable:
    table = next((t for t in tables if t.name == name), None)
    if table is None:
        known = ", ".join(t.name for t in tables) or "none attached"
        raise DataMappingError(f"no data table named {name!r} (tables: {known})")
    return table


def resolve_reference(tables: list[DataTable], reference: str) -> tuple[DataTable, str]:
    """'table.column' -> (table, column); the column may be '*' for every numeric column."""
    table_name, dot, column = reference.strip().partition(".")
    if not dot:
        raise DataMappingError(f"data reference {reference!r} must look like table.column")
    table = _find_table(tables, table_name)
    if column != WIDE_COLUMNS and column not in table.columns:
        raise DataMappingError(
            f"table {table.name} has no column {column!r} (columns: {', '.join(table.columns)})"
        )
    return table, column


def set_elements(tables: list[DataTable], reference: str) -> list[Element]:
    """Distinct values of a column in first-seen order, or the numeric column names for 'table.*'."""
    table, column = resolve_reference(tables, reference)
    if column == WIDE_COLUMNS:
        return list(table.numeric_columns())
    elements: list[Element] = []
    for value in table.values(column):
        if value is None:
            continue
        element: Element = int(value) if isinstance(value, float) and value.is_integer() else value  # type: ignore[assignment]
        if isinstance(element, float):
            raise DataMappingError(f"column {table.name}.{column} holds fractional numbers; not set members")
        if element not in elements:
            elements.append(element)
    return elements


def _key(value: Cell) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _guess_key_columns(table: DataTable, value_column: str, dimensions: int) -> list[str]:
    text_columns = [c for c in table.columns if c != value_column and not table.is_numeric(c)]
    if len(text_columns) >= dimensions:
        return text_columns[:dimensions]
    others = [c for c in table.columns if c != value_column]
    if len(others) >= dimensions:
        return others[:dimensions]
    raise DataMappingError(
        f"cannot tell which columns of {table.name} index {value_column!r}; give key_columns "
        f"(columns: {', '.join(table.columns)})"
    )


def parameter_value(
    tables: list[DataTable], reference: str, dimensions: int, key_columns: list[str] | None = None
) -> float | dict[str, Any]:
    """A scalar (dimensions 0) or a nested {key: ... value} table read from the referenced column.

    'table.*' with one key column reads a wide matrix: rows by the key column, columns by header.
    """
    table, column = resolve_reference(tables, reference)
    if column == WIDE_COLUMNS:
        return _wide_matrix(table, dimensions, key_columns)
    if dimensions == 0:
        cells = [v for v in table.values(column) if v is not None]
        if len(cells) != 1 or not isinstance(cells[0], int | float):
            raise DataMappingError(
                f"{table.name}.{column} is used as one number but holds {len(cells)} value(s)"
            )
        return float(cells[0])
    keys = key_columns or _guess_key_columns(table, column, dimensions)
    if len(keys) != dimensions:
        raise DataMappingError(f"{reference}: {len(keys)} key column(s) given for {dimensions} index set(s)")
    for key in keys:
        resolve_reference(tables, f"{table.name}.{key}")
    nested: dict[str, Any] = {}
    for row_number, row in enumerate(table.rows, start=1):
        value = row.get(column)
        if value is None:
            continue
        if not isinstance(value, int | float):
            raise DataMappingError(f"{table.name}.{column} row {row_number} is not a number: {value!r}")
        level = nested
        path = [_key(row.get(k)) for k in keys]
        for part in path[:-1]:
            level = level.setdefault(part, {})
        if path[-1] in level:
            raise DataMappingError(
                f"{table.name}: two rows for {', '.join(path)} in {column}; the key columns "
                f"{', '.join(keys)} do not identify a row"
            )
        level[path[-1]] = float(value)
    return nested


def _wide_matrix(table: DataTable, dimensions: int, key_columns: list[str] | None) -> dict[str, Any]:
    if dimensions != 2:
        raise DataMappingError(f"{table.name}.* reads a matrix and needs 2 index sets, not {dimensions}")
    keys = key_columns or [c for c in table.columns if not table.is_numeric(c)][:1]
    if len(keys) != 1 or keys[0] not in table.columns:
        raise DataMappingError(f"{table.name}.* needs exactly one row-key column (columns: {table.columns})")
    value_columns = [c for c in table.numeric_columns() if c != keys[0]]
    return {
        _key(row.get(keys[0])): {c: float(row[c]) for c in value_columns if row.get(c) is not None}  # type: ignore[arg-type]
        for row in table.rows
    }
