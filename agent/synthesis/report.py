"""What a synthesized dataset holds, read back from its ledger: outcomes by family and band.

`optitrace synth` prints a summary of one run; a dataset grown over several resumed runs needs the
summary of all of them, which only the ledger (one row per finished item) has.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path
from typing import get_args

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from agent.synthesis.complexity import BANDS
from agent.synthesis.pipeline import Outcome

# Column order of the tables: the pipeline's order, the two outcomes that make the dataset first.
OUTCOME_ORDER: tuple[str, ...] = get_args(Outcome)


class LedgerMatch(BaseModel):
    model_config = ConfigDict(extra="ignore")

    dataset: str
    id: str
    similarity: float


class LedgerRow(BaseModel):
    """One finished item as `run_pipeline` logged it."""

    model_config = ConfigDict(extra="ignore")

    id: str
    family: str
    band: str
    outcome: str
    reason: str = ""
    seconds: float = 0.0
    score: float | None = None
    story_rounds: int | None = None
    closest_test_match: LedgerMatch | None = None


class SynthReport(BaseModel):
    ledger: str
    items: int
    outcomes: dict[str, int]
    by_family: dict[str, dict[str, int]] = Field(description="family -> outcome -> items")
    by_band: dict[str, dict[str, int]] = Field(description="band -> outcome -> items")
    acceptance_rate: float | None = Field(
        description="accepted / (accepted + rejected): the forward-model pass rate"
    )
    seconds: float = Field(description="wall-clock seconds summed over items (overlapping when workers > 1)")
    closest_accepted: LedgerMatch | None = Field(description="the accepted item nearest to any test item")


class LedgerError(ValueError):
    """The ledger is missing or a row is not a ledger row."""


def read_ledger(path: Path) -> list[LedgerRow]:
    """The final row of every item: a crashed item ("error") that a later run finished counts once,
    with its later outcome."""
    if not path.is_file():
        raise LedgerError(f"{path} does not exist; run `optitrace synth --out ...` first")
    latest: dict[str, LedgerRow] = {}
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = LedgerRow.model_validate(json.loads(line))
        except (ValueError, ValidationError) as error:
            raise LedgerError(f"{path}:{number} is not a ledger row: {str(error).splitlines()[0]}") from None
        latest[row.id] = row
    return list(latest.values())


def _table(rows: list[LedgerRow], key: str) -> dict[str, dict[str, int]]:
    counts: dict[str, Counter[str]] = {}
    for row in rows:
        counts.setdefault(getattr(row, key), Counter())[row.outcome] += 1
    return {name: dict(counter) for name, counter in counts.items()}


def build_report(ledger: Path) -> SynthReport:
    rows = read_ledger(ledger)
    outcomes = Counter(row.outcome for row in rows)
    judged = outcomes["accepted"] + outcomes["rejected"]
    accepted_matches = [
        row.closest_test_match for row in rows if row.outcome == "accepted" and row.closest_test_match
    ]
    by_band = _table(rows, "band")
    return SynthReport(
        ledger=str(ledger),
        items=len(rows),
        outcomes=dict(outcomes),
        by_family=dict(sorted(_table(rows, "family").items())),
        by_band={band: by_band[band] for band in BANDS if band in by_band},
        acceptance_rate=outcomes["accepted"] / judged if judged else None,
        seconds=round(sum(row.seconds for row in rows), 1),
        closest_accepted=max(accepted_matches, key=lambda m: m.similarity, default=None),
    )


def _columns(report: SynthReport) -> list[str]:
    seen = set(report.outcomes)
    return [o for o in OUTCOME_ORDER if o in seen] + sorted(seen - set(OUTCOME_ORDER))


def render_markdown(report: SynthReport) -> str:
    columns = _columns(report)

    def table(title: str, counts: dict[str, dict[str, int]]) -> list[str]:
        lines = [f"| {title} | " + " | ".join(columns) + " | total |", "|---" * (len(columns) + 2) + "|"]
        for name, row in counts.items():
            cells = [str(row.get(c, 0)) for c in columns]
            lines.append(f"| {name} | " + " | ".join(cells) + f" | {sum(row.values())} |")
        totals = [str(report.outcomes.get(c, 0)) for c in columns]
        lines.append("| **all** | " + " | ".join(totals) + f" | {report.items} |")
        return lines

    rate = "-" if report.acceptance_rate is None else f"{100 * report.acceptance_rate:.1f}%"
    lines = [
        f"{report.items} items finished; forward-model pass rate (accepted / accepted + rejected): {rate}; "
        f"{report.seconds / 3600:.2f} h of item wall-clock time.",
        "",
        *table("family", report.by_family),
        "",
        *table("band", report.by_band),
    ]
    if report.closest_accepted is not None:
        match = report.closest_accepted
        lines += [
            "",
            f"Nearest test item to any accepted item: {match.dataset} `{match.id}`, "
            f"similarity {match.similarity:.3f}.",
        ]
    return "\n".join(lines) + "\n"
