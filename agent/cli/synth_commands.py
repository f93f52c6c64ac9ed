"""`optitrace synth`: synthesize labelled benchmark items (generate, solve, back-translate, dedup,
forward-model with rejection sampling). Resumable: rerun the same command to continue."""

from __future__ import annotations

import json
from pathlib import Path
from typing import get_args

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from agent.cli import app
from agent.cli.agent_commands import resolve_config
from agent.modeler import AgentOptions, ModelingAgent
from agent.synthesis.backtranslate import StoryStyle, StoryWriter
from agent.synthesis.dedup import DedupIndex
from agent.synthesis.families import parse_families
from agent.synthesis.pipeline import (
    AgentFormulator,
    ItemResult,
    SynthConfig,
    SynthSummary,
    companion_path,
    run_pipeline,
)
from agent.synthesis.report import LedgerError, build_report, render_markdown
from trace_graph.llm.client import LLMClient, LLMError

out = Console()
err = Console(stderr=True)


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code=1)


@app.command()
def synth(
    families: str = typer.Option("all", help="'all' or a comma-separated list of family names."),
    n: int = typer.Option(10, "--n", min=1, help="Items planned per family."),
    difficulty: str = typer.Option("all", help="easy, medium, hard, or all (bands cycle by seed)."),
    out_file: Path = typer.Option(
        ..., "--out", help="Accepted items (JSONL, the eval question/answer format)."
    ),
    rejected: Path | None = typer.Option(None, help="Rejected items (default: <out>.rejected.jsonl)."),
    seed: int = typer.Option(0, help="First seed; items use seed .. seed+n-1."),
    workers: int = typer.Option(1, min=1, help="Items in flight at once."),
    infeasible_share: float = typer.Option(0.0, help="Share of items built infeasible (families that can)."),
    unbounded_share: float = typer.Option(0.0, help="Share of items built unbounded (families that can)."),
    story_rounds: int = typer.Option(3, min=1, help="Stories written per item before giving up."),
    story_style: str = typer.Option(
        "narrative",
        help="narrative: the model retells every fact; framed: it writes the opening and the question, "
        "the fact lines stand unchanged between them.",
    ),
    repairs: int = typer.Option(2, min=0, help="Repair rounds of the forward-modeling agent."),
    time_limit: float = typer.Option(30.0, help="Seconds per HiGHS solve; a time-limit hit is dropped."),
    dedup: bool = typer.Option(True, help="Check every story against the test sets in datasets/."),
    json_output: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
    report_only: bool = typer.Option(
        False,
        "--report-only",
        help="No synthesis: summarize everything in --out's ledger (all runs) and write <out>.report.md.",
    ),
) -> None:
    """Synthesize labelled optimization word problems with known optima."""
    if report_only:
        _report(out_file, json_output)
        return
    try:
        chosen = [f.name for f in parse_families(families)]
        config = SynthConfig(
            families=chosen,
            n=n,
            difficulty=difficulty,  # type: ignore[arg-type]
            seed=seed,
            out=out_file,
            rejected=rejected,
            workers=workers,
            infeasible_share=infeasible_share,
            unbounded_share=unbounded_share,
            time_limit=time_limit,
            dedup=dedup,
        )
        if story_style not in get_args(StoryStyle):
            raise _fail(f"--story-style must be narrative or framed, not {story_style!r}")
    except KeyError as error:
        raise _fail(str(error.args[0])) from None
    except ValidationError as error:
        raise _fail("; ".join(f"{e['loc'][0]}: {e['msg']}" for e in error.errors())) from None
    index = None
    if config.dedup:
        with err.status("indexing the test sets for the near-duplicate check", spinner="dots"):
            index = DedupIndex.from_datasets()
        for name, why in index.skipped.items():
            err.print(f"[yellow]dedup: skipped {escape(name)}: {escape(why)}[/yellow]")
    try:
        llm_config = resolve_config()
        with LLMClient(llm_config) as client:
            writer = StoryWriter(client, max_rounds=story_rounds, style=story_style)  # type: ignore[arg-type]
            agent = ModelingAgent(client, AgentOptions(max_repairs=repairs))
            summary = _run(config, writer, AgentFormulator(agent), index, quiet=json_output)
    except LLMError as error:
        raise _fail(str(error)) from None
    if json_output:
        typer.echo(json.dumps(summary.model_dump(), indent=2))
    else:
        _print_summary(summary)
    if summary.stopped:
        raise typer.Exit(code=1 if summary.stopped != "interrupted" else 130)


def _report(out_file: Path, json_output: bool) -> None:
    ledger = companion_path(out_file, "ledger.jsonl")
    try:
        report = build_report(ledger)
    except LedgerError as error:
        raise _fail(str(error)) from None
    markdown = render_markdown(report)
    report_path = companion_path(out_file, "report.md")
    report_path.write_text(f"# Synthesis report: {out_file.name}\n\n{markdown}", encoding="utf-8")
    if json_output:
        typer.echo(report.model_dump_json(indent=2))
    else:
        typer.echo(markdown)
        err.print(f"written: {report_path}")


def _run(
    config: SynthConfig,
    writer: StoryWriter,
    formulator: AgentFormulator,
    index: DedupIndex | None,
    quiet: bool,
) -> SynthSummary:
    with Progress(
        TextColumn("synthesizing"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[tally]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err,
        disable=quiet,
    ) as bar:
        task = bar.add_task("synth", total=None, tally="")
        tally = {"accepted": 0, "rejected": 0}

        def progress(done: int, total: int, result: ItemResult | None) -> None:
            if result is not None and result.outcome in tally:
                tally[result.outcome] += 1
            text = f"accepted {tally['accepted']} rejected {tally['rejected']}"
            bar.update(task, completed=done, total=total, tally=text)

        return run_pipeline(config, writer, formulator, index, progress)


def _print_summary(summary: SynthSummary) -> None:
    table = Table(title="synthesis summary", show_header=False)
    table.add_column("what")
    table.add_column("count", justify="right")
    rows = [
        ("planned", summary.planned),
        ("already done (resumed)", summary.resumed),
        ("generated", summary.generated),
        ("solved (labelled by HiGHS)", summary.solved),
        ("translated (story passed the number check)", summary.translated),
        ("duplicates of test items", summary.duplicates),
        ("accepted", summary.accepted),
        ("rejected (hard cases)", summary.rejected),
        ("LLM calls", summary.llm_calls),
        ("seconds", summary.seconds),
    ]
    for name, value in rows:
        table.add_row(name, str(value))
    out.print(table)
    if summary.by_family:
        families = Table(title="by family")
        outcomes = sorted({o for counts in summary.by_family.values() for o in counts})
        families.add_column("family")
        for outcome in outcomes:
            families.add_column(outcome, justify="right")
        for family, counts in summary.by_family.items():
            families.add_row(family, *(str(counts.get(o, 0)) for o in outcomes))
        out.print(families)
    out.print(f"accepted -> {escape(summary.out)}\nrejected -> {escape(summary.rejected_out)}")
    if summary.stopped:
        err.print(
            f"[yellow]stopped early: {escape(summary.stopped)}; rerun the same command to resume[/yellow]"
        )
