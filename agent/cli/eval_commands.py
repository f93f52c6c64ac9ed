"""`optitrace eval`: run the agent over a benchmark into a resumable run directory and report it;
`optitrace eval report DIR...`: re-render the report from run directories without re-running."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path

import typer
from pydantic import BaseModel, ValidationError
from rich import box
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

from agent.answer import AgentMode
from agent.cli import app
from agent.cli.agent_commands import resolve_config  # the endpoint resolution `solve` uses
from agent.datasets import DatasetError, load_dataset
from agent.evaluation.executors import (
    AgentProblemSolver,
    AgentSolverSpec,
    LocalExecutor,
    RayExecutor,
    RayUnavailableError,
)
from agent.evaluation.records import EvalRecord, ModelRef, ParamsRef, RunDirError, RunOptions
from agent.evaluation.report import RunSummary, write_report
from agent.evaluation.runner import Executor, RunOutcome, run_evaluation
from agent.modeler import AgentOptions
from agent.scoring import HEADLINE_RULE
from trace_graph.llm.client import LLMClient, LLMError
from trace_graph.llm.config import LLMConfig

eval_app = typer.Typer(
    help="Evaluate the agent on a benchmark: resumable JSONL records, a paper-style report, a chart.",
    invoke_without_command=True,
)
app.add_typer(eval_app, name="eval")

out = Console()
err = Console(stderr=True)


class ModeChoice(StrEnum):
    ONESHOT = "oneshot"
    AGENT = "agent"
    BOTH = "both"

    def modes(self) -> list[AgentMode]:
        return {"oneshot": ["oneshot"], "agent": ["agent"], "both": ["oneshot", "agent"]}[self.value]


class ExecutorChoice(StrEnum):
    LOCAL = "local"
    RAY = "ray"


class EvalOutput(BaseModel):
    """What `--json` prints: where the run is, what this invocation did, and the summary."""

    run_dir: Path
    written: int
    already_done: int
    pending: int
    stopped: str | None
    summary: RunSummary


class RichProgress:
    """The runner's ProgressHook as a rich progress bar on stderr (stdout stays clean for --json)."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[score]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=err,
        )
        self.task = self.progress.add_task(label, total=None, score="")
        self.right = 0
        self.scored = 0

    def start(self, pending: int, already_done: int) -> None:
        if already_done:
            err.print(f"[dim]resuming: {already_done} record(s) already done, {pending} to go[/dim]")
        self.progress.update(self.task, total=pending)

    def advance(self, record: EvalRecord) -> None:
        if record.scored:
            self.scored += 1
            self.right += record.correct_under(HEADLINE_RULE)
        self.progress.update(self.task, advance=1, score=f"right {self.right}/{self.scored}")


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code=code)


def default_run_dir(dataset: str, split: str | None) -> Path:
    name = Path(dataset).stem if Path(dataset).suffix else dataset
    return Path("eval-runs") / (f"{name}-{split}" if split else name)


def model_ref(config: LLMConfig) -> ModelRef:
    return ModelRef(
        name=config.model, endpoint=config.base_url, identity=config.cache_scope or config.base_url
    )


_SHORT_RULES = {
    "rel_1e-6": "rel1e-6",
    "orlm_round_5pct": "orlm5%",
    "abs_1e-4": "abs1e-4",
    "mamo_rel_1e-4": "mamo",
}


def print_summary(summary: RunSummary, console: Console) -> None:
    """The report's table, compact enough for an 80-column terminal (report.md has it all)."""
    rules = [rule.name for rule in summary.rules]
    table = Table(
        title="accuracy % of labelled items",
        header_style="bold",
        box=box.SIMPLE_HEAD,
        collapse_padding=True,
        pad_edge=False,
    )
    headers = [
        "set",
        "mode",
        "n",
        *[_SHORT_RULES.get(rule, rule) for rule in rules],
        "exec%",
        "calls",
        "s/item",
    ]
    several_params = summary.several_params
    if several_params:
        headers.insert(2, "params")
    for column in headers:
        justify = "left" if column in ("set", "mode", "params") else "right"
        table.add_column(column, justify=justify, no_wrap=True)
    for group in summary.groups:
        table.add_row(
            escape(group.subset),
            group.mode,
            *([escape(group.params)] if several_params else []),
            str(group.items),
            *["-" if group.accuracy[r] is None else f"{100 * group.accuracy[r]:.1f}" for r in rules],
            f"{100 * group.execution_rate:.1f}",
            f"{group.mean_llm_calls:.2f}",
            f"{group.mean_seconds:.1f}",
        )
    console.print(table)
    for lift in summary.lifts:
        console.print(
            f"agent lift on {escape(lift.subset)} ({lift.items} items, {HEADLINE_RULE}): "
            f"{100 * lift.oneshot[HEADLINE_RULE]:.1f} -> {100 * lift.agent[HEADLINE_RULE]:.1f} "
            f"({100 * lift.lift[HEADLINE_RULE]:+.1f} pp; fixed {lift.fixed}, broken {lift.broken})"
            + (f" [{escape(lift.params)}]" if several_params else "")
        )
    for change in summary.params_changes:
        console.print(
            f"{escape(change.params)} vs default on {escape(change.subset)} / {change.mode} "
            f"({change.items} items, {HEADLINE_RULE}): {100 * change.before[HEADLINE_RULE]:.1f} -> "
            f"{100 * change.after[HEADLINE_RULE]:.1f} ({100 * change.change[HEADLINE_RULE]:+.1f} pp; "
            f"fixed {change.fixed}, broken {change.broken})"
        )


def _render(
    run_dirs: list[Path], out_dir: Path | None, json_output: bool, outcome: RunOutcome | None
) -> RunSummary:
    try:
        summary = write_report(run_dirs, out_dir)
    except (RunDirError, ValueError, OSError) as error:
        raise _fail(str(error)) from None
    target = out_dir or run_dirs[0]
    if json_output:
        if outcome is None:
            typer.echo(summary.model_dump_json(indent=2))
        else:
            document = EvalOutput(
                run_dir=outcome.run_dir,
                written=outcome.written,
                already_done=outcome.already_done,
                pending=outcome.pending,
                stopped=outcome.stopped,
                summary=summary,
            )
            typer.echo(document.model_dump_json(indent=2))
    else:
        print_summary(summary, out)
        out.print(f"report: {escape(str(target / 'report.md'))} (+ results.csv, accuracy.png)")
    return summary


@eval_app.callback()
def eval_run(
    ctx: typer.Context,
    dataset: str | None = typer.Option(None, "--dataset", "-d", help="Registered name or a JSON/JSONL file."),
    split: str | None = typer.Option(None, help="A group's member, e.g. easy/complex for mamo."),
    limit: int | None = typer.Option(None, min=0, help="Only the first N problems."),
    mode: ModeChoice = typer.Option(ModeChoice.AGENT, help="oneshot, agent, or both on the same items."),
    workers: int = typer.Option(1, min=1, help="Problems in flight at once (threads, or Ray tasks)."),
    executor: ExecutorChoice = typer.Option(ExecutorChoice.LOCAL, help="local threads, or a Ray cluster."),
    ray_address: str | None = typer.Option(None, help="Join this Ray cluster instead of a local instance."),
    out_dir: Path | None = typer.Option(None, "--out", help="Run directory (default eval-runs/<dataset>)."),
    resume: bool = typer.Option(False, help="Continue the run in --out, skipping finished problems."),
    params: Path | None = typer.Option(None, help="Trained agent parameters (JSON)."),
    style: str = typer.Option("ir", help="ir = JSON formulation; code = Pyomo program in the sandbox."),
    max_repairs: int = typer.Option(3, min=0, help="Repair rounds in agent mode."),
    samples: int = typer.Option(1, min=1, help="Self-consistency samples per problem."),
    cache: bool = typer.Option(True, help="Use the LLM reply cache (--no-cache for fresh timings)."),
    report_only: bool = typer.Option(False, "--report-only", help="Only re-render the report of --out."),
    json_output: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Run the agent over a dataset (see `optitrace eval --help`), or `eval report DIR`."""
    if ctx.invoked_subcommand is not None:
        return
    if report_only:
        if out_dir is None and dataset is None:
            raise _fail("--report-only needs --out (or --dataset, for the default run directory)")
        _render([out_dir or default_run_dir(dataset or "", split)], None, json_output, None)
        return
    if dataset is None:
        raise _fail("give --dataset NAME (or a JSON/JSONL file); see `optitrace eval --help`")
    try:
        loaded = load_dataset(dataset, split=split, limit=limit)
    except DatasetError as error:
        raise _fail(str(error)) from None
    try:
        options = AgentOptions(style=style, max_repairs=max_repairs, samples=samples)  # type: ignore[arg-type]
    except ValidationError as error:
        raise _fail("; ".join(f"{e['loc'][0]}: {e['msg']}" for e in error.errors())) from None
    params_text: str | None = None
    params_ref: ParamsRef | None = None
    if params is not None:
        try:
            params_text = params.read_text(encoding="utf-8")
            params_ref = ParamsRef.of_file(params)
        except OSError as error:
            raise _fail(f"cannot read {params}: {error.strerror or error}") from None
    run_dir = out_dir or default_run_dir(dataset, split)
    modes = mode.modes()
    run_options = RunOptions(
        modes=modes,
        workers=workers,
        executor=executor.value,
        ray_address=ray_address,
        limit=limit,
        cache=cache,
    )
    try:
        config = resolve_config()
    except LLMError as error:  # nothing configured, embedded model missing: say how to fix it
        raise _fail(str(error)) from None
    client = LLMClient(config, cache=cache)
    try:
        solver = AgentProblemSolver(client, options, params_text)
        try:
            solver.agent(modes[0])  # a broken parameter file fails now, not once per problem
        except (KeyError, ValueError) as error:
            raise _fail(f"cannot use parameters {params}: {error}") from None
        runner: Executor
        if executor is ExecutorChoice.RAY:
            spec = AgentSolverSpec(llm=config, options=options, params_text=params_text, cache=cache)
            runner = RayExecutor(spec, workers, address=ray_address)
        else:
            runner = LocalExecutor(solver, workers)
        progress = RichProgress(f"{loaded.name} {'+'.join(modes)}")
        with progress.progress:
            outcome = run_evaluation(
                loaded,
                run_dir,
                runner,
                modes=modes,
                model=model_ref(config),
                params=params_ref,
                agent_options=options,
                options=run_options,
                resume=resume,
                progress=progress,
            )
    except (RunDirError, RayUnavailableError) as error:
        raise _fail(str(error)) from None
    except KeyboardInterrupt:
        where = escape(str(run_dir))
        err.print(f"[yellow]interrupted[/yellow]; finished records are in {where}; rerun with --resume")
        raise typer.Exit(code=130) from None
    finally:
        client.close()
    _render([run_dir], None, json_output, outcome)
    if outcome.stopped is not None:
        raise _fail(
            f"the run stopped early: {outcome.stopped}\n{outcome.written} record(s) written this time, "
            f"{outcome.already_done + outcome.written} in {run_dir}; fix the endpoint and rerun with --resume"
        )


@eval_app.command("report")
def eval_report(
    run_dirs: list[Path] = typer.Argument(..., help="One or more run directories."),
    out_dir: Path | None = typer.Option(None, "--out", help="Where to write (default: the single run dir)."),
    json_output: bool = typer.Option(False, "--json", help="Print the summary as JSON."),
) -> None:
    """Re-render report.md, results.csv and accuracy.png from existing records (no LLM calls)."""
    if len(run_dirs) > 1 and out_dir is None:
        raise _fail("several run directories need --out for the combined report")
    _render(list(run_dirs), out_dir, json_output, None)
