"""`optitrace solve-ir FILE.json`: solve a formulation (the IR), verify the answer, show it.

Exit codes: 0 for a definite answer (optimal and verified, infeasible, unbounded, time limit);
1 when the formulation cannot be built, the solver fails or the check finds violations;
2 when the file cannot be read or is not a valid formulation.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from agent.cli import app
from solvers.ir import Formulation
from solvers.result import CheckReport, SolveOptions, SolveResult, SolveStatus

out = Console()
err = Console(stderr=True, soft_wrap=True)  # messages stay on one line: easy to grep
ROWS_SHOWN = 50


def _validation_summary(error: ValidationError, limit: int = 15) -> str:
    lines = []
    for item in error.errors()[:limit]:
        location = ".".join(str(part) for part in item["loc"]) or "(top level)"
        lines.append(f"  {location}: {item['msg']}")
    more = error.error_count() - limit
    if more > 0:
        lines.append(f"  ... and {more} more")
    return "\n".join(lines)


def _load(file: Path) -> Formulation:
    try:
        text = file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as error:
        reason = error.strerror if isinstance(error, OSError) else error
        err.print(f"cannot read {file}: {reason}", markup=False)
        raise typer.Exit(2) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as error:
        where = f"line {error.lineno}, column {error.colno}"
        err.print(f"{file} is not valid JSON: {error.msg} ({where})", markup=False)
        raise typer.Exit(2) from None
    try:
        return Formulation.model_validate(data)
    except ValidationError as error:
        count = error.error_count()
        problems = f"{count} problem{'s' if count != 1 else ''}"
        err.print(f"{file} is not a valid formulation ({problems}):", markup=False)
        err.print(_validation_summary(error), markup=False)
        raise typer.Exit(2) from None


def _show(result: SolveResult, check: CheckReport | None) -> None:
    headline = f"[bold]{result.status.value}[/bold]"
    if result.objective is not None:
        headline += f", objective {result.objective:.10g}"
    if result.gap is not None:
        headline += f", gap {result.gap:.3g}"
    out.print(f"{headline} ({result.seconds:.3f} s, {result.path or 'no'} path)")
    if result.message:
        out.print(result.message, markup=False)
    if check is not None:
        out.print(("[green]" if check.ok else "[red]") + check.summary().replace("[", "\\["))
    if result.values:
        table = Table("variable", "value", "reduced cost", title="solution (nonzero values)")
        shown = [(n, v) for n, v in result.values.items() if abs(v) > 1e-12]
        for name, value in shown[:ROWS_SHOWN]:
            reduced = result.reduced_costs.get(name)
            table.add_row(name, f"{value:.6g}", "" if reduced is None else f"{reduced:.6g}")
        out.print(table)
        if len(shown) > ROWS_SHOWN:
            out.print(f"... {len(shown) - ROWS_SHOWN} more nonzero values (use --json for all)")
    if result.duals:
        table = Table("constraint", "dual (d objective / d rhs)", title="duals")
        for name, dual in list(result.duals.items())[:ROWS_SHOWN]:
            table.add_row(name, f"{dual:.6g}")
        out.print(table)
    if result.diagnosis is not None:
        out.print(f"[bold]why infeasible[/bold] ({result.diagnosis.method}):")
        out.print(result.diagnosis.message, markup=False)


@app.command("solve-ir")
def solve_ir(
    file: Path = typer.Argument(..., help="A formulation (IR) JSON file."),
    json_output: bool = typer.Option(False, "--json", help="Print the SolveResult (and check) as JSON."),
    time_limit: float | None = typer.Option(None, "--time-limit", min=0.0, help="Seconds."),
    mip_gap: float | None = typer.Option(None, "--mip-gap", min=0.0, help="Relative MIP gap to stop at."),
    path: str = typer.Option("auto", "--path", help="auto, fast (arrays) or pyomo (SolverFactory)."),
) -> None:
    """Solve a formulation with HiGHS, check the answer independently, and show it."""
    from solvers.api import solve_formulation
    from solvers.check import check_solution

    if path not in ("auto", "fast", "pyomo"):
        err.print(f"--path must be auto, fast or pyomo, not {path!r}", markup=False)
        raise typer.Exit(2)
    formulation = _load(file)
    chosen: Literal["auto", "fast", "pyomo"] = path  # type: ignore[assignment]
    options = SolveOptions(time_limit=time_limit, mip_gap=mip_gap, path=chosen)
    result = solve_formulation(formulation, options)
    check = None
    if result.status == SolveStatus.OPTIMAL:
        check = check_solution(formulation, result.values, result.objective)
    if json_output:
        payload: dict[str, Any] = result.model_dump(mode="json")
        payload["check"] = None if check is None else check.model_dump(mode="json")
        out.print_json(json.dumps(payload))
    else:
        _show(result, check)
    if result.status == SolveStatus.ERROR or (check is not None and not check.ok):
        raise typer.Exit(1)
