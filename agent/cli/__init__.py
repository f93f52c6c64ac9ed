"""The `optitrace` command line. Each command group lives in its own module and registers on `app`."""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="optitrace",
    help="Turn optimization problems in plain language into solved, verified models.",
    no_args_is_help=True,
    pretty_exceptions_show_locals=False,
)

# Modules that add commands to `app` when imported. Missing ones are skipped so a partial
# install (or a command group still being built) does not break the others.
COMMAND_MODULES = (
    "agent.cli.solver_commands",
    "agent.cli.sandbox_commands",
    "agent.cli.audit_commands",
    "agent.cli.llm_commands",
    "agent.cli.agent_commands",
    "agent.cli.chat_commands",
    "agent.cli.eval_commands",
    "agent.cli.synth_commands",
    "agent.cli.train_commands",
)

for _module in COMMAND_MODULES:
    try:
        importlib.import_module(_module)
    except ModuleNotFoundError as error:
        if error.name != _module:
            raise


def main() -> None:
    app()
