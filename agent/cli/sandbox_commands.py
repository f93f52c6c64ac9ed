"""`optitrace run-code FILE.py`: run a generated Pyomo program in the sandbox and show the solve."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agent.cli import app
from solvers.sandbox import Sandbox, SandboxResult, SandboxUnavailableError

out = Console()
err = Console(stderr=True)
VALUES_SHOWN = 50


def _show(result: SandboxResult) -> None:
    flag = "" if result.isolation == "bwrap" else " [bold red](NOT isolated: rlimit-only)[/bold red]"
    out.print(
        f"sandbox: [bold]{result.status}[/bold] in {result.seconds:.3f} s, isolation {result.isolation}{flag}"
    )
    if result.model is not None:
        out.print(
            f"model: {result.model.variables} variables, {result.model.constraints} constraints, "
            f"{result.model.objectives} objective(s)"
        )
    if result.stdout:
        out.print("[dim]program output:[/dim]")
        out.print(result.stdout, markup=False, highlight=False)
    solve = result.solve
    if solve is None:
        return
    out.print(
        f"solve: [bold]{solve.status}[/bold], objective {solve.objective}"
        + (f", gap {solve.gap:.3g}" if solve.gap is not None else "")
        + f" ({solve.seconds:.3f} s)"
    )
    if solve.message:
        out.print(solve.message, markup=False)
    if solve.values:
        table = Table("variable", "value")
        for name, value in list(solve.values.items())[:VALUES_SHOWN]:
            table.add_row(name, f"{value:.6g}")
        out.print(table)
        if len(solve.values) > VALUES_SHOWN:
            out.print(f"... {len(solve.values) - VALUES_SHOWN} more (use --json for all)")
    if solve.diagnosis is not None:
        out.print(f"[bold]diagnosis[/bold] ({solve.diagnosis.method}): {escape(solve.diagnosis.message)}")
        for member in solve.diagnosis.conflict:
            out.print(f"  - {member.kind} {member.name} {member.description}", markup=False)


@app.command("run-code")
def run_code(
    file: Path = typer.Argument(
        ...,
        exists=True,
        dir_okay=False,
        readable=True,
        help="A program defining build_model() that returns a Pyomo ConcreteModel.",
    ),
    json_output: bool = typer.Option(False, "--json", help="Print the whole result as JSON."),
    timeout: float = typer.Option(30.0, "--timeout", min=0.1, help="Wall-clock limit in seconds."),
    memory_mb: int = typer.Option(1024, "--memory-mb", min=64, help="Address-space limit in MB."),
    cpu_seconds: int = typer.Option(20, "--cpu-seconds", min=1, help="CPU-time limit in seconds."),
    data: Path | None = typer.Option(
        None, "--data", exists=True, dir_okay=False, help="A JSON file passed as build_model(data)."
    ),
) -> None:
    """Run a generated Pyomo program in the sandbox; the harness solves the model it builds.

    Exits 1 when the program does not produce a solvable model (syntax, runtime or contract error,
    a resource limit) or the sandbox itself fails; the solver's own status (e.g. infeasible) is
    reported, not treated as a failure.
    """
    try:
        payload = json.loads(data.read_text()) if data is not None else None
    except json.JSONDecodeError as error:
        err.print(f"[red]error:[/red] {data} is not valid JSON: {escape(str(error))}")
        raise typer.Exit(code=1) from None
    if payload is not None and not isinstance(payload, dict):
        err.print(f"[red]error:[/red] {data} must hold a JSON object")
        raise typer.Exit(code=1)
    try:
        with Sandbox() as sandbox:
            result = sandbox.run(
                file.read_text(), data=payload, timeout=timeout, memory_mb=memory_mb, cpu_seconds=cpu_seconds
            )
    except SandboxUnavailableError as error:
        err.print(f"[red]error:[/red] the sandbox is unavailable: {escape(str(error))}")
        raise typer.Exit(code=1) from None
    if json_output:
        out.print_json(result.model_dump_json())
    else:
        _show(result)
    if not result.ok:
        err.print(f"[red]error:[/red] {result.status}: {escape(result.error)}", highlight=False)
        raise typer.Exit(code=1)
