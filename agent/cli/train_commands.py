"""`optitrace train`: optimize the agent's prompts on a training set, validated on a held-out split."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agent.cli import app
from agent.cli.agent_commands import resolve_config
from agent.datasets import DatasetError
from agent.training.data import DEFAULT_TRAIN_DIR, TestSetError
from agent.training.train import (
    TrainReport,
    TrainSettings,
    optimizer_llm_config,
    train_agent,
)
from trace_graph.llm.client import LLMClient, LLMError
from trace_graph.trainer import StepRecord

out = Console()
err = Console(stderr=True)


def _fail(message: str, code: int = 1) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code=code)


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _print_step(record: StepRecord) -> None:
    """One line per step on stderr (the progress bar is off under --json)."""
    changed = ", ".join(record.changed) or "-"
    err.print(
        f"[dim]step {record.step} ({record.status}): train {_percent(record.train_score)}, "
        f"val {_percent(record.val_score)}, best {_percent(record.best_val_score)}, changed {changed}[/dim]"
    )


def render_report(report: TrainReport, console: Console) -> None:
    table = Table(title="Training", show_header=False, box=None, pad_edge=False)
    table.add_column(style="bold")
    table.add_column()
    table.add_row("train", f"{report.train_set.name} ({report.train_set.items} items)")
    split = " (held out of train)" if report.split_from_train else ""
    table.add_row("validation", f"{report.val_set.name} ({report.val_set.items} items){split}")
    models = f"{report.optimizer} on {report.optimizer_model}; agent on {report.agent_model}"
    table.add_row("optimizer", models)
    table.add_row(
        "val accuracy",
        f"{_percent(report.baseline_val_accuracy)} -> {_percent(report.best_val_accuracy)} (rel 1e-6)",
    )
    statuses = ", ".join(f"{count} {status}" for status, count in sorted(report.statuses.items())) or "none"
    table.add_row("steps", f"{report.steps}: {statuses}; {report.rejected_updates} rewrite(s) rejected")
    table.add_row("changed", ", ".join(report.changed_parameters) or "nothing (defaults kept)")
    table.add_row("params", str(report.params_path))
    table.add_row("logs", str(report.log_dir))
    usage = report.usage
    table.add_row(
        "cost",
        f"{usage.calls} LLM call(s), {usage.prompt_tokens}+{usage.completion_tokens} tokens, "
        f"{report.seconds:.1f} s",
    )
    console.print(table)
    for warning in report.warnings:
        console.print(f"[yellow]warning:[/yellow] {escape(warning)}")
    if report.stopped:
        console.print(f"[red]stopped early:[/red] {escape(report.stopped)} (best parameters saved)")


@app.command()
def train(
    train_set: str = typer.Option(
        DEFAULT_TRAIN_DIR, "--train", help="Training data: a dataset name, JSONL file, or folder."
    ),
    val_set: str | None = typer.Option(
        None, "--val", help="Validation data; omitted or equal to --train: a seeded held-out split."
    ),
    optimizer: str = typer.Option(
        "optoprime",
        help="optoprime (reads the graph), opro (score history) or lessons (one general "
        "lesson per step, added to modeling_hints; suits small models).",
    ),
    epochs: int = typer.Option(1, help="Passes over the training set."),
    batch: int = typer.Option(4, "--batch", help="Items per optimizer step."),
    val_limit: int | None = typer.Option(20, help="Validate on at most N items."),
    train_limit: int | None = typer.Option(None, help="Train on at most N items."),
    val_fraction: float = typer.Option(0.25, help="Share held out for validation when splitting --train."),
    threads: int = typer.Option(1, help="Items solved in parallel."),
    seed: int = typer.Option(0, help="Seed of the split and the minibatch order."),
    out_path: Path = typer.Option(Path("params.json"), "--out", help="Where to save the trained parameters."),
    log_dir: Path | None = typer.Option(None, help="Step/item logs, learning curve, checkpoint."),
    style: str = typer.Option("ir", help="ir = JSON formulation; code = Pyomo program."),
    max_repairs: int = typer.Option(3, help="Agent repair rounds per item (as in `solve`)."),
    parameter: list[str] = typer.Option(
        [], "--param", help="Train only this agent parameter (repeatable); default: the style's prompts."
    ),
    train_code: bool = typer.Option(False, "--train-code", help="Also train the sanity_rules code."),
    init: Path | None = typer.Option(None, "--init", help="Start from these parameters (JSON)."),
    optimizer_base_url: str | None = typer.Option(
        None, help="Optimizer endpoint (env OPTITRACE_OPTIMIZER_BASE_URL); default: the agent's."
    ),
    optimizer_model: str | None = typer.Option(None, help="Optimizer model (env OPTITRACE_OPTIMIZER_MODEL)."),
    reply_format: str = typer.Option("json", help="Optimizer reply format: json or tags."),
    prompt_budget: int | None = typer.Option(
        None, help="Optimizer prompt limit, characters (default 6000 for the embedded model, else 10000)."
    ),
    rotate: bool | None = typer.Option(
        None,
        "--rotate/--no-rotate",
        help="One parameter per step, in turn (default: on for the embedded model).",
    ),
    allow_test_set: bool = typer.Option(
        False, "--allow-test-set", help="Allow a public benchmark as training/validation data."
    ),
    with_rejected: bool = typer.Option(
        False, "--with-rejected", help="Also use the synthesized set's rejected items (its hard cases)."
    ),
    resume: bool = typer.Option(False, "--resume", help="Continue the run in --log-dir from its checkpoint."),
    cache: bool = typer.Option(True, help="Use the persistent LLM reply cache."),
    json_output: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """Train the agent's prompts on solver feedback; keep the best on the validation split."""
    try:
        settings = TrainSettings(
            train=train_set,
            val=val_set,
            optimizer=optimizer,  # type: ignore[arg-type]
            epochs=epochs,
            batch_size=batch,
            val_limit=val_limit,
            train_limit=train_limit,
            val_fraction=val_fraction,
            threads=threads,
            seed=seed,
            out=out_path,
            log_dir=log_dir,
            allow_test_set=allow_test_set,
            with_rejected=with_rejected,
            style=style,  # type: ignore[arg-type]
            max_repairs=max_repairs,
            parameters=list(parameter) or None,
            train_code=train_code,
            init_params=init,
            prompt_budget=prompt_budget,
            rotate=rotate,
            reply_format=reply_format,  # type: ignore[arg-type]
            resume=resume,
            progress=not json_output,
        )
    except ValidationError as error:
        raise _fail("; ".join(f"{e['loc'][0]}: {e['msg']}" for e in error.errors())) from None
    try:
        agent_config = resolve_config()
        opt_config = optimizer_llm_config(agent_config, optimizer_base_url, optimizer_model)
        with LLMClient(agent_config, cache=cache) as agent_llm, LLMClient(opt_config, cache=cache) as opt_llm:
            report = train_agent(settings, agent_llm, opt_llm, on_step=_print_step if json_output else None)
    except TestSetError as error:
        raise _fail(str(error), code=2) from None
    except (DatasetError, ValueError, KeyError, OSError, LLMError) as error:
        raise _fail(str(error)) from None
    except KeyboardInterrupt:
        err.print(f"[yellow]interrupted:[/yellow] best parameters so far saved to {escape(str(out_path))}")
        raise typer.Exit(code=130) from None
    if json_output:
        typer.echo(json.dumps(report.model_dump(mode="json"), indent=2))
    else:
        render_report(report, out)
    raise typer.Exit(code=1 if report.stopped else 0)
