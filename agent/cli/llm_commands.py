"""`optitrace llm ...`: serve the embedded model, show what is configured and reachable, list models."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from types import FrameType

import typer
from pydantic import BaseModel
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from agent.cli import app
from agent.local_llm.native import build_native_server
from agent.local_llm.registry import (
    DEFAULT_MODEL_NAME,
    INSTALL_COMMAND,
    MODELS,
    LocalModelError,
    ensure_weights,
    get_model,
    missing_chunk_packages,
    verified_weights,
    weights_path,
)
from agent.local_llm.server import (
    LocalServer,
    choose_threads,
    fetch_model_ids,
    log_tail,
    missing_runtime_modules,
    running_servers,
    server_answers,
    stop_server,
)
from trace_graph.llm.config import LLMConfig, config_file_path

llm_app = typer.Typer(help="The LLM endpoint: serve the embedded local model, check what is reachable.")
app.add_typer(llm_app, name="llm")

out = Console()
err = Console(stderr=True)


def _fail(error: Exception) -> typer.Exit:
    # escape: messages carry `pip install -e ".[local]"`, which rich would read as a markup tag.
    err.print(f"[red]error:[/red] {escape(str(error))}")
    return typer.Exit(code=1)


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


@llm_app.command()
def serve(
    model: str = typer.Option(DEFAULT_MODEL_NAME, help="Registry name (see `optitrace llm models`)."),
    port: int = typer.Option(8011, help="Port on 127.0.0.1."),
    threads: int | None = typer.Option(
        None, help="CPU threads; default: the free cores now (or $OPTITRACE_LLM_THREADS)."
    ),
    n_ctx: int | None = typer.Option(None, help="Context size in tokens; default from the registry."),
    engine: str = typer.Option(
        "python",
        help="python = llama-cpp-python's server; native = llama.cpp's llama-server "
        "(build it with `optitrace llm build-native`), which decodes --parallel requests together.",
    ),
    parallel: int = typer.Option(1, help="Requests decoded together (native engine); match --workers."),
) -> None:
    """Run the embedded model's OpenAI-compatible server in the foreground until Ctrl-C."""
    for state in running_servers(model):
        if state.shared:
            out.print(
                f"{model} is already served at {state.base_url} (pid {state.pid}); not starting another."
            )
            return
    try:
        server = LocalServer(
            model, port=port, threads=threads, n_ctx=n_ctx, shared=True, engine=engine, parallel=parallel
        )
        choice = server.thread_choice
        err.print(
            f"Starting {server.model.name} ({engine} engine, {parallel} slot(s)) "
            f"on {choice.threads} thread(s) "
            f"({choice.reason}; load {choice.load:.2f} on {choice.cores} cores) ..."
        )
        server.start()
    except LocalModelError as error:
        raise _fail(error) from None
    # `kill` or a closed terminal should stop the server as cleanly as Ctrl-C does.
    for stop_signal in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(stop_signal, _interrupt)
    try:
        out.print(f"Serving [bold]{server.model.name}[/bold] at [bold]{server.base_url}[/bold] "
                  f"(ready in {server.startup_seconds:.1f} s; log {server.log_path})")  # fmt: skip
        out.print(
            "Other OptiTrace commands on this machine use it automatically. For other tools:\n"
            f"  export OPENAI_BASE_URL={server.base_url} OPENAI_API_KEY=not-needed "
            f"OPTITRACE_MODEL={server.model.name}\n"
            "Press Ctrl-C to stop."
        )
        while server.is_running():
            time.sleep(0.5)
        if server.stopped_elsewhere():
            err.print("The server was stopped (optitrace llm stop).")
            return
        err.print(f"[red]the server exited unexpectedly.[/red] Last lines of {server.log_path}:")
        err.print(log_tail(server.log_path), markup=False, highlight=False)
        raise typer.Exit(code=1)
    except KeyboardInterrupt:
        err.print("Stopping ...")
    finally:
        server.stop()


class ConfiguredEndpoint(BaseModel):
    source: str
    base_url: str
    model: str
    answers: bool
    models: list[str] | None


class RunningServerReport(BaseModel):
    pid: int
    base_url: str
    model: str
    threads: int
    n_ctx: int
    shared: bool
    engine: str
    parallel: int
    answers: bool
    started_at: str


class EmbeddedReport(BaseModel):
    model: str
    weights_installed: bool
    missing_packages: list[str]
    assembled: bool
    weights_path: Path
    runtime_importable: bool
    missing_runtime: list[str]
    threads_now: int
    servers: list[RunningServerReport]


class StatusReport(BaseModel):
    uses: str
    configured: ConfiguredEndpoint | None
    embedded: EmbeddedReport


def _configured_endpoint() -> ConfiguredEndpoint | None:
    config = LLMConfig.from_environment()
    if config is None:
        return None
    source = "environment" if os.environ.get("OPENAI_BASE_URL") else str(config_file_path())
    models = fetch_model_ids(config.base_url, timeout=5.0, api_key=config.api_key)
    return ConfiguredEndpoint(
        source=source, base_url=config.base_url, model=config.model, answers=models is not None, models=models
    )


def _embedded_report(model_name: str) -> EmbeddedReport:
    model = get_model(model_name)
    missing = missing_chunk_packages(model)
    runtime_missing = missing_runtime_modules()
    servers = [
        RunningServerReport(
            pid=state.pid,
            base_url=state.base_url,
            model=state.model,
            threads=state.threads,
            n_ctx=state.n_ctx,
            shared=state.shared,
            engine=state.engine,
            parallel=state.parallel,
            answers=server_answers(state),
            started_at=state.started_at.isoformat(timespec="seconds"),
        )
        for state in running_servers(model.name)
    ]
    return EmbeddedReport(
        model=model.name,
        weights_installed=not missing,
        missing_packages=missing,
        assembled=verified_weights(model) is not None,
        weights_path=weights_path(model),
        runtime_importable=not runtime_missing,
        missing_runtime=runtime_missing,
        threads_now=choose_threads().threads,
        servers=servers,
    )


@llm_app.command()
def status(
    model: str = typer.Option(DEFAULT_MODEL_NAME, help="Embedded model to report on."),
    as_json: bool = typer.Option(False, "--json", help="Print the report as JSON."),
) -> None:
    """What endpoint commands will use, whether it answers, and the embedded model's state."""
    try:
        configured = _configured_endpoint()
        embedded = _embedded_report(model)
    except (LocalModelError, ValueError) as error:
        raise _fail(error) from None
    report = StatusReport(
        uses="configured" if configured else "embedded", configured=configured, embedded=embedded
    )
    if as_json:
        print(report.model_dump_json(indent=2))
        return
    _print_status(report)


def _yes_no(flag: bool) -> str:
    return "[green]yes[/green]" if flag else "[red]no[/red]"


def _print_status(report: StatusReport) -> None:
    configured = report.configured
    if configured is None:
        out.print("Configured endpoint: none (commands start the embedded model on demand)")
    else:
        listed = ", ".join(configured.models or []) or "-"
        out.print(
            f"Configured endpoint ({configured.source}): {configured.base_url}  model {configured.model}\n"
            f"  answers /models: {_yes_no(configured.answers)}  lists: {listed}"
        )
    embedded = report.embedded
    out.print(f"\nEmbedded model: [bold]{embedded.model}[/bold]")
    out.print(f"  weights installed: {_yes_no(embedded.weights_installed)}", end="")
    if embedded.missing_packages:
        out.print(f"  ({len(embedded.missing_packages)} packages missing: {escape(INSTALL_COMMAND)})", end="")
    out.print(f"\n  assembled + verified: {_yes_no(embedded.assembled)}  {embedded.weights_path}")
    out.print(f"  runtime importable: {_yes_no(embedded.runtime_importable)}", end="")
    if embedded.missing_runtime:
        out.print(f"  (missing {', '.join(embedded.missing_runtime)}: {escape(INSTALL_COMMAND)})", end="")
    out.print(f"\n  threads if started now: {embedded.threads_now}")
    if not embedded.servers:
        out.print("  server running: [dim]no[/dim]")
    for server in embedded.servers:
        kind = "shared (llm serve)" if server.shared else "on demand"
        answer = "answers" if server.answers else "busy or not answering /models"
        out.print(
            f"  server running: {server.base_url}  pid {server.pid}, {kind}, {server.engine} engine "
            f"with {server.parallel} slot(s), {server.threads} thread(s), "
            f"n_ctx {server.n_ctx}, since {server.started_at}, {answer}"
        )
    out.print(f"\nCommands use: [bold]{report.uses}[/bold] endpoint")


@llm_app.command()
def models() -> None:
    """List the local models OptiTrace knows, and whether they are installed and assembled."""
    table = Table(title="Embedded models")
    for column in ("name", "size", "installed", "assembled", "n_ctx", "temperature", "max_tokens"):
        table.add_column(column)
    for model in MODELS.values():
        table.add_row(
            model.name + (" (default)" if model.name == DEFAULT_MODEL_NAME else ""),
            f"{model.size_bytes / 1e9:.2f} GB",
            _yes_no(not missing_chunk_packages(model)),
            _yes_no(verified_weights(model) is not None),
            str(model.n_ctx),
            str(model.temperature),
            str(model.max_tokens),
        )
    out.print(table)
    for model in MODELS.values():
        out.print(
            f"[bold]{model.name}[/bold]: {escape(model.description)}\n  {escape(model.chat_template_notes)}"
        )


@llm_app.command()
def assemble(model: str = typer.Option(DEFAULT_MODEL_NAME, help="Registry name.")) -> None:
    """Assemble and verify the model's weights now (otherwise the first start does it)."""
    try:
        path = ensure_weights(model)
    except LocalModelError as error:
        raise _fail(error) from None
    out.print(f"{model}: {path}", soft_wrap=True)


@llm_app.command("build-native")
def build_native(
    jobs: int | None = typer.Option(None, help="Compiler jobs; default: the cores."),
    dest: Path | None = typer.Option(
        None, help="Where to put the llama-server binary; default ~/.cache/optitrace/bin/llama-server."
    ),
) -> None:
    """Compile llama.cpp's llama-server (the engine behind `llm serve --engine native`) from source."""
    err.print("Building llama-server from the llama-cpp-python sdist (about 6 minutes on 2 idle cores) ...")
    began = time.monotonic()
    try:
        path = build_native_server(dest, jobs=jobs)
    except LocalModelError as error:
        raise _fail(error) from None
    out.print(f"built {path} in {time.monotonic() - began:.0f} s", soft_wrap=True)


@llm_app.command()
def stop(
    model: str | None = typer.Option(None, help="Only servers of this model."),
    on_demand: bool = typer.Option(
        False, "--on-demand", help="Also stop servers other commands started for themselves."
    ),
) -> None:
    """Stop running embedded servers started by `optitrace llm serve`."""
    stopped = 0
    for state in running_servers(model):
        if (state.shared or on_demand) and stop_server(state):
            out.print(f"stopped {state.model} at {state.base_url} (pid {state.pid})")
            stopped += 1
    if not stopped:
        out.print("no embedded server to stop")
