"""`optitrace solve`: one problem in plain language -> a solved, verified, explained model."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table

from agent.answer import AgentAnswer, AnswerStatus
from agent.cli import app
from agent.data_tables import DataMappingError, load_tables
from agent.explain import format_number
from agent.modeler import AgentOptions, ModelingAgent
from trace_graph.llm.client import LLMClient, LLMError, LLMUnavailableError
from trace_graph.llm.config import LLMConfig, config_file_path

out = Console()
err = Console(stderr=True)

_EXIT_CODES = {
    AnswerStatus.OPTIMAL: 0,
    AnswerStatus.TIME_LIMIT: 0,
    AnswerStatus.INFEASIBLE: 2,
    AnswerStatus.UNBOUNDED: 2,
    AnswerStatus.INFEASIBLE_OR_UNBOUNDED: 2,
    AnswerStatus.NEEDS_CLARIFICATION: 3,
    AnswerStatus.ERROR: 1,
}


def resolve_config() -> LLMConfig:
    """The configured endpoint, else the embedded local model (started on demand).

    Every way this can fail (nothing configured, the embedded model missing or not starting)
    becomes an LLMUnavailableError whose message says how to fix it.
    """
    try:
        from agent.local_llm.endpoint import resolve_llm_config
        from agent.local_llm.registry import LocalModelError
    except ModuleNotFoundError as error:
        if not (error.name or "").startswith("agent.local_llm"):
            raise
        config = LLMConfig.from_environment()
        if config is None:
            raise LLMUnavailableError(
                "No LLM endpoint is configured and the embedded model is not installed. Set "
                f"OPENAI_BASE_URL (or base_url in the [llm] table of {config_file_path()})."
            ) from None
        return config
    try:
        return resolve_llm_config(start_if_needed=True)
    except LocalModelError as error:
        raise LLMUnavailableError(str(error)) from error


def answer_document(answer: AgentAnswer, config: LLMConfig | None = None) -> dict[str, Any]:
    """The JSON printed by `--json`: the whole answer, plus top-level `values` and the endpoint."""
    document = answer.model_dump(mode="json")
    document["values"] = answer.solve.values if answer.solve is not None else {}
    if config is not None:
        document["llm"] = {"base_url": config.base_url, "model": config.model}
    return document


def render_answer(answer: AgentAnswer, console: Console, *, show_model: bool = False) -> None:
    """A person-readable answer: status, decisions, limits, explanation, model on request."""
    colour = {"optimal": "green", "time_limit": "yellow", "needs_clarification": "yellow"}.get(
        answer.status.value, "red"
    )
    headline = f"[bold {colour}]{answer.status.value}[/]"
    if answer.objective is not None:
        headline += f"   {answer.sense or 'objective'} = [bold]{format_number(answer.objective)}[/]"
    headline += f"   confidence {answer.confidence}"
    parts: list[Any] = [headline]
    if answer.decisions:
        table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        table.add_column("decision")
        table.add_column("value", justify="right")
        table.add_column("meaning")
        for decision in answer.decisions:
            table.add_row(escape(decision.variable), format_number(decision.value), escape(decision.meaning))
        parts.append(table)
    if answer.binding_constraints:
        parts.append("[bold]Limiting:[/] " + escape(", ".join(answer.binding_constraints)))
    if answer.explanation:
        parts.append(escape(answer.explanation))
    if answer.clarifying_questions:
        parts.append(
            "[bold]Questions:[/]\n" + "\n".join(f"- {escape(q)}" for q in answer.clarifying_questions)
        )
    if answer.assumptions:
        parts.append("[bold]Assumptions:[/]\n" + "\n".join(f"- {escape(a)}" for a in answer.assumptions))
    if answer.error and answer.status == AnswerStatus.ERROR:
        parts.append(f"[red]{escape(answer.error)}[/]")
    if answer.repair_rounds or answer.status == AnswerStatus.ERROR:
        rounds = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
        for column in ("round", "stage", "outcome"):
            rounds.add_column(column)
        for attempt in answer.attempts:
            rounds.add_row(str(attempt.round), attempt.stage, escape(attempt.outcome))
        parts.append(rounds)
    usage = answer.usage
    parts.append(
        f"[dim]{usage.calls} LLM call(s), {usage.prompt_tokens}+{usage.completion_tokens} tokens, "
        f"{usage.seconds:.1f} s in the LLM, {answer.seconds:.1f} s in total[/]"
    )
    console.print(Panel(Group(*parts), title="OptiTrace", expand=False))
    if show_model:
        if answer.model_math:
            console.print(Panel(escape(answer.model_math), title="model", expand=False))
        if answer.code:
            console.print(Syntax(answer.code, "python", line_numbers=False))
        elif answer.formulation is not None:
            console.print(Syntax(answer.formulation.to_json(), "json"))


def _read_question(question: str | None, file: Path | None) -> str:
    if file is not None:
        try:
            return file.read_text(encoding="utf-8")
        except OSError as error:
            raise typer.BadParameter(f"cannot read {file}: {error.strerror or error}") from error
    if question == "-" or (question is None and not sys.stdin.isatty()):
        return sys.stdin.read()
    if question is None:
        raise typer.BadParameter("give the problem text, --file FILE, or pipe it on stdin")
    return question


def _load_params(agent: ModelingAgent, path: Path) -> None:
    try:
        agent.load_params(path)
    except (OSError, ValueError, KeyError) as error:  # JSON errors are ValueErrors
        raise _fail(f"cannot load parameters from {path}: {error}") from None


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code=1)


@app.command()
def solve(
    question: str | None = typer.Argument(None, help="The problem in plain language ('-' reads stdin)."),
    file: Path | None = typer.Option(None, "--file", "-f", help="Read the problem text from a file."),
    data: list[Path] = typer.Option([], "--data", "-d", help="A CSV or JSON data table (repeatable)."),
    json_output: bool = typer.Option(False, "--json", help="Print the answer as JSON."),
    style: str = typer.Option("ir", help="ir = JSON formulation; code = a Pyomo program run in the sandbox."),
    mode: str = typer.Option("agent", help="agent = repair + sanity checks; oneshot = one formulation."),
    samples: int = typer.Option(1, help="Sample K formulations and vote on the objective."),
    max_repairs: int = typer.Option(3, help="Repair rounds after a failed formulation."),
    params: Path | None = typer.Option(None, help="Trained parameters (JSON from `optitrace train`)."),
    ask: bool = typer.Option(False, help="Ask clarifying questions instead of assuming missing data."),
    show_model: bool = typer.Option(False, "--show-model", help="Also print the model and the IR/code."),
) -> None:
    """Solve one optimization problem described in plain language."""
    text = _read_question(question, file)
    try:
        options = AgentOptions(
            style=style, mode=mode, samples=samples, max_repairs=max_repairs, interactive=ask
        )  # type: ignore[arg-type]
    except ValidationError as error:
        raise _fail("; ".join(f"{e['loc'][0]}: {e['msg']}" for e in error.errors())) from None
    try:
        tables = load_tables(list(data))
    except DataMappingError as error:
        raise _fail(str(error)) from None
    try:
        config = resolve_config()
        with LLMClient(config) as client:
            agent = ModelingAgent(client, options)
            if params is not None:
                _load_params(agent, params)
            answer = agent.solve(text, tables=tables)
    except LLMError as error:  # LLMUnavailableError above all: say what and how to fix it
        raise _fail(str(error)) from None
    if json_output:
        typer.echo(json.dumps(answer_document(answer, config), indent=2))
    else:
        render_answer(answer, out, show_model=show_model)
    raise typer.Exit(code=_EXIT_CODES.get(answer.status, 1))
