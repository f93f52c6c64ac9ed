"""`optitrace chat`: talk to one optimization model in the terminal.

At a terminal it is a rich UI (prompt, panels and tables for results, diffs and comparisons).
With piped stdin it reads one message per line, echoes it, prints plain text and exits at EOF, so
a conversation can be scripted: `printf 'problem...\\n/set oven 50\\n' | optitrace chat`.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import typer
from rich.console import Console, Group
from rich.markup import escape
from rich.panel import Panel
from rich.syntax import Syntax
from rich.table import Table

from agent.chat.analysis import Comparison
from agent.chat.session import ChatSession, ChatTurn, SessionFileError, read_record
from agent.cli import app
from agent.cli.agent_commands import resolve_config
from agent.data_tables import DataMappingError, load_tables
from agent.explain import format_number
from agent.modeler import AgentOptions, ModelingAgent
from trace_graph.llm.client import LLMClient, LLMError

QUIT_WORDS = ("/quit", "/exit", "quit", "exit")
err = Console(stderr=True)


def _fail(message: str) -> typer.Exit:
    err.print(f"[red]error:[/red] {escape(message)}")
    return typer.Exit(code=1)


def _number(value: float | None) -> str:
    return "-" if value is None else format_number(value)


# --- plain output (pipes, logs) -------------------------------------------------------------------
def _comparison_lines(comparison: Comparison) -> list[str]:
    lines = [
        f"  {comparison.goal}: {_number(comparison.base_objective)} -> {_number(comparison.new_objective)}"
        + (f"  (delta {_number(comparison.delta)})" if comparison.delta is not None else "")
    ]
    lines += [
        f"  {c.variable}: {_number(c.before)} -> {_number(c.after)}"
        + (f"  ({c.meaning})" if c.meaning else "")
        for c in comparison.changes
    ]
    return lines


def plain_turn(turn: ChatTurn) -> str:
    """The turn as plain text: the reply, then the diff and the comparison table if any."""
    lines = [turn.reply if turn.ok else f"[not done] {turn.reply}"]
    if turn.diff is not None and not turn.diff.empty:
        lines += ["model change:", *turn.diff.lines]
    if turn.comparison is not None:
        lines += ["comparison:", *_comparison_lines(turn.comparison)]
    if turn.files:
        lines.append("files: " + ", ".join(turn.files))
    return "\n".join(lines)


# --- rich output (a terminal) ---------------------------------------------------------------------
def _decisions_table(turn: ChatTurn) -> Table | None:
    answer = turn.answer
    if answer is None or not answer.decisions:
        return None
    table = Table(title="decisions", show_header=True, header_style="bold", box=None, pad_edge=False)
    for column in ("decision", "value", "meaning"):
        table.add_column(column, justify="right" if column == "value" else "left")
    for decision in answer.decisions:
        table.add_row(escape(decision.variable), format_number(decision.value), escape(decision.meaning))
    return table


def _comparison_table(comparison: Comparison) -> Table:
    table = Table(title=escape(comparison.change), show_header=True, header_style="bold", box=None)
    for column in ("", "current", "changed"):
        table.add_column(column, justify="left" if not column else "right")
    table.add_row(
        escape(comparison.goal), _number(comparison.base_objective), _number(comparison.new_objective)
    )
    table.add_row("status", comparison.base_status, comparison.new_status)
    for change in comparison.changes:
        label = change.variable + (f" ({change.meaning})" if change.meaning else "")
        table.add_row(escape(label), _number(change.before), _number(change.after))
    return table


def render_turn(turn: ChatTurn, console: Console) -> None:
    parts: list[Any] = [escape(turn.reply)]
    decisions = _decisions_table(turn)
    if decisions is not None and turn.intent in ("new_problem", "edit"):
        parts.append(decisions)
    colour = "green" if turn.ok else "red"
    console.print(
        Panel(Group(*parts), title=turn.intent.replace("_", " "), border_style=colour, expand=False)
    )
    if turn.diff is not None and not turn.diff.empty:
        console.print(
            Panel(Syntax(turn.diff.text, "diff", word_wrap=True), title="model change", expand=False)
        )
    if turn.comparison is not None:
        console.print(_comparison_table(turn.comparison))
    if turn.sensitivity is not None and turn.sensitivity.constraints:
        table = Table(title="duals", show_header=True, header_style="bold", box=None)
        for column in ("constraint", "dual", "slack", "binding"):
            table.add_column(column)
        for c in turn.sensitivity.constraints:
            table.add_row(escape(c.name), format_number(c.dual), _number(c.slack), "yes" if c.binding else "")
        console.print(table)
    usage = turn.usage
    if usage.calls or usage.cache_hits:
        console.print(
            f"[dim]{usage.calls} LLM call(s), {usage.prompt_tokens}+{usage.completion_tokens} tokens, "
            f"{turn.seconds:.1f} s[/dim]"
        )


# --- the loop -------------------------------------------------------------------------------------
def _read(console: Console, interactive: bool) -> str | None:
    """One message, or None at the end of input."""
    if not interactive:
        line = sys.stdin.readline()
        return None if line == "" else line
    try:
        return console.input("[bold cyan]you>[/] ")
    except EOFError:
        return None


def run_chat(session: ChatSession, console: Console, interactive: bool) -> None:
    if interactive:
        console.print(
            "[bold]OptiTrace chat[/bold]: describe an optimization problem, then change it or ask about it. "
            "/help lists the commands, /quit leaves."
        )
    if session.answer is not None:
        objective = _number(session.answer.objective)
        note = f"Loaded model: {session.answer.status.value}, objective {objective}."
        console.print(note if not interactive else f"[dim]{escape(note)}[/dim]")
    while True:
        try:
            line = _read(console, interactive)
        except KeyboardInterrupt:
            break
        if line is None:
            break
        text = line.strip()
        if not text:
            continue
        if text.lower() in QUIT_WORDS:
            break
        if not interactive:  # the echo makes a piped transcript read as a conversation
            console.print(f"> {text}")
        turn = session.send(text)
        if interactive:
            render_turn(turn, console)
        else:
            console.print(plain_turn(turn))
            console.print()


@app.command()
def chat(
    params: Path | None = typer.Option(None, help="Trained agent parameters (JSON from `optitrace train`)."),
    load: Path | None = typer.Option(None, "--load", help="Continue a session saved with /save."),
    data: list[Path] = typer.Option([], "--data", "-d", help="A CSV or JSON data table (repeatable)."),
) -> None:
    """Chat about an optimization model: create it, change it, ask what-if and why-not questions."""
    interactive = sys.stdin.isatty() and sys.stdout.isatty()
    # Plain output for pipes: no colour codes, no wrapping of long lines.
    console = Console() if interactive else Console(no_color=True, highlight=False, soft_wrap=True)
    try:
        tables = load_tables(list(data))
    except DataMappingError as error:
        raise _fail(str(error)) from None
    try:
        record = read_record(load) if load is not None else None
    except SessionFileError as error:
        raise _fail(str(error)) from None
    try:
        config = resolve_config()
        with LLMClient(config) as client:
            # At a terminal a person can answer clarifying questions; a piped script cannot.
            agent = ModelingAgent(client, AgentOptions(interactive=interactive))
            if params is not None:
                try:
                    agent.load_params(params)
                except (OSError, ValueError, KeyError) as error:
                    raise _fail(f"cannot load parameters from {params}: {error}") from None
            session = ChatSession(agent, client, tables=tables, record=record)
            run_chat(session, console, interactive)
    except LLMError as error:  # no endpoint at all; errors during turns are replies
        raise _fail(str(error)) from None
