"""`optitrace audit ...`: check benchmark data and labels before trusting a score on them."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from agent.cli import app
from agent.datasets import DatasetError, list_datasets, load_dataset
from agent.nl4opt_audit import AuditReport, run_audit

audit_app = typer.Typer(
    help="Audit benchmark data: counts, checksums, and labels against formulations.", no_args_is_help=True
)
app.add_typer(audit_app, name="audit")

QUESTION_WIDTH = 60  # one readable line beside the numbers; the JSON report has the full excerpt
out = Console()
err = Console(stderr=True)


def _number(value: float | None) -> str:
    return "-" if value is None else f"{value:.6g}"


@audit_app.command("nl4opt")
def audit_nl4opt(
    as_json: bool = typer.Option(False, "--json", help="Print the JSON summary instead of tables."),
    limit: int | None = typer.Option(None, min=1, help="Audit only the first N annotations."),
    show: int = typer.Option(25, min=0, help="Disagreements to list in the table view."),
    output: Path | None = typer.Option(
        None, "--output", "-o", help="Also write the full report, every problem."
    ),
) -> None:
    """Solve all 388 NL4OPT competition annotations and compare with the published labels."""
    with Progress(
        TextColumn("auditing NL4OPT"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err,
        transient=True,
        disable=as_json,
    ) as bar:
        task = bar.add_task("audit", total=None)
        report = run_audit(
            limit=limit, progress=lambda done, total: bar.update(task, completed=done, total=total)
        )
    if output is not None:
        output.write_text(report.model_dump_json(indent=2), encoding="utf-8")
    if as_json:
        typer.echo(json.dumps(report.summary(), indent=2))
        return
    _print_report(report, show)
    if output is not None:
        out.print(f"full report written to {escape(str(output))}")


def _print_report(report: AuditReport, show: int) -> None:
    summary = Table(title="NL4OPT annotation audit", show_header=False)
    summary.add_column("what")
    summary.add_column("count", justify="right")
    for name, value in (
        ("annotations", report.total),
        ("built", report.built),
        ("solved", report.solved),
        ("  of which optimal", report.optimal),
        ("labelled (text match)", report.labelled),
        ("agree (rel 1e-6, every label)", report.agree),
        ("disagree", report.disagree),
        ("agree (ORLM rounded 5%)", report.agree_5pct),
        ("labels conflicting with each other", report.label_conflicts),
        ("integer problems / continuous", f"{report.integer_problems} / {report.continuous_problems}"),
        ("seconds", f"{report.seconds:.1f}"),
    ):
        summary.add_row(name, str(value))
    out.print(summary)
    out.print(f"[dim]integrality: {escape(report.integrality_rule)}[/dim]")

    sources = Table(title="per label source (agree counts, rel 1e-6)")
    for column in ("source", "rows", "matched", "agree", "disagree", "5%", "all LP", "all integer"):
        sources.add_column(column, justify="left" if column == "source" else "right")
    for row in report.per_source:
        sources.add_row(
            row.source,
            str(row.rows),
            str(row.matched),
            str(row.agree),
            str(row.disagree),
            str(row.agree_5pct),
            str(row.agree_by_choice["continuous"]),
            str(row.agree_by_choice["integer"]),
        )
    out.print(sources)

    if report.disagreements and show:
        listing = Table(
            title=f"disagreements ({len(report.disagreements)}; first {min(show, len(report.disagreements))})"
        )
        for column in ("id", "ours", "label", "source", "LP", "integer"):
            listing.add_column(column, no_wrap=True)
        listing.add_column("question", overflow="fold")
        for item in report.disagreements[:show]:
            ours = _number(item.ours) if item.our_status == "optimal" else str(item.our_status)
            label = _number(item.label) if item.label_status == "optimal" else item.label_status
            listing.add_row(
                item.id.split("/", 1)[1],
                ours,
                label,
                item.label_source,
                _number(item.lp_optimum),
                _number(item.integer_optimum),
                escape(item.question[:QUESTION_WIDTH]),
            )
        out.print(listing)
    for failure in [*report.build_errors, *report.solve_errors]:
        out.print(f"[yellow]not solved[/yellow] {failure.id}: {escape(failure.error)}")


@audit_app.command("datasets")
def audit_datasets() -> None:
    """Load every registered dataset: problem counts, label kinds, version and checksum."""
    table = Table(title="registered datasets")
    for column in ("name", "problems", "labels", "version", "sha256"):
        table.add_column(column, no_wrap=column in ("name", "problems"))
    failed = False
    for spec in list_datasets():
        try:
            dataset = load_dataset(spec.name)
        except DatasetError as error:
            failed = True
            table.add_row(spec.name, "-", f"[red]{escape(str(error))}[/red]", spec.version, "-")
            continue
        kinds = Counter(problem.label.status for problem in dataset.problems)
        table.add_row(
            spec.name,
            str(len(dataset)),
            ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())),
            dataset.version,
            dataset.checksum[:16],
        )
    out.print(table)
    if failed:
        raise typer.Exit(code=1)
