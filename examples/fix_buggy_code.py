"""Fixing buggy trainable code from its exception, with OptoPrime.

``average_speed`` is a bundled function with ``trainable=True``: its source code is a parameter.
It has two bugs. Calling it returns an exception node instead of crashing; ``backward()`` with no
text sends the exception's own explanation: the source with the failing line marked
``<--- (ErrType) message``. The optimizer proposes new source, the next call compiles and runs it,
and the loop repeats until the function works; the result is then checked on trips it never saw.

By default a ScriptedLLMServer on 127.0.0.1 stands in for the LLM. It knows nothing about this
function: its responder reads the code from the prompt's #Variables section and the marked line and
error from #Feedback, and repairs the failing line by rules a programmer would apply -- a misspelt
name becomes the closest name defined in the function; subscripting a number drops the subscript.
The optimizer asks for XML-ish tags rather than JSON (``reply_format="tags"``: code inside a tag
needs no escaping, which small models get wrong in JSON strings), and the responder answers so.
With --real the same prompts go to the endpoint configured by OPENAI_BASE_URL (or the optitrace
config file), else to the embedded local model (started on demand).

    python examples/fix_buggy_code.py [--real] [--rounds N]
"""

# ruff: noqa: F821 - `hour` in average_speed is a deliberate bug (a comment there would hint at it)
from __future__ import annotations

import argparse
import ast
import builtins
import difflib
import re
import sys

from rich.console import Console
from rich.syntax import Syntax

from trace_graph import ExceptionNode, bundle
from trace_graph.llm import ChatRequest, LLMClient, ScriptedLLMServer
from trace_graph.optimizers import SECTION_TITLES, OptoPrime, split_sections


@bundle(trainable=True)
def average_speed(distances_km: list[float], hours: list[float]) -> float:
    """Average speed of a trip in km/h: the total distance divided by the total time."""
    total_distance = sum(distances_km)
    total_time = sum(hour)
    return total_distance / total_time[-1]


# -- the stand-in for the LLM ------------------------------------------------------------------------

MARK = re.compile(r"^(?P<code>.*?)  <--- \((?P<error>\w+)\) (?P<message>.*)$", re.MULTILINE)


def _defined_names(source: str) -> set[str]:
    """Arguments and assigned names of the function: what a misspelt name probably meant."""
    names: set[str] = set()
    for item in ast.walk(ast.parse(source)):
        if isinstance(item, ast.arg):
            names.add(item.arg)
        elif isinstance(item, ast.Name) and isinstance(item.ctx, ast.Store):
            names.add(item.id)
    return names


def _fix_line(line: str, error: str, message: str, source: str) -> tuple[str, str] | None:
    """The repaired line and why, or None when no rule applies."""
    if error == "NameError":
        missing = re.search(r"name '(\w+)' is not defined", message)
        if missing:
            known = sorted(_defined_names(source) | set(dir(builtins)))
            close = difflib.get_close_matches(missing.group(1), known, n=1, cutoff=0.6)
            if close:
                fixed = re.sub(rf"\b{missing.group(1)}\b", close[0], line)
                return fixed, f"`{missing.group(1)}` is not defined; the function defines `{close[0]}`"
    if error == "TypeError" and "not subscriptable" in message:
        indent = line[: len(line) - len(line.lstrip())]
        statement = ast.parse(line.strip())
        subscripts = [item for item in ast.walk(statement) if isinstance(item, ast.Subscript)]
        if subscripts:

            class DropSubscripts(ast.NodeTransformer):
                def visit_Subscript(self, item: ast.Subscript) -> ast.AST:
                    return self.visit(item.value)

            fixed = indent + ast.unparse(DropSubscripts().visit(statement))
            return fixed, f"{message}: the value is already a number, so the subscript goes"
    return None


def repair_responder(request: ChatRequest) -> str:
    sections = split_sections(request.last_user_text, SECTION_TITLES)
    variable = re.match(r"\(code\) (\S+):\n(.*)", sections.get("Variables", ""), re.DOTALL)
    marked = MARK.search(sections.get("Feedback", ""))
    if variable is None or marked is None:
        return "<reasoning>There is no marked failing line to repair.</reasoning>"
    name, source = variable.group(1), variable.group(2)
    lines = source.splitlines()
    failing = next((i for i, line in enumerate(lines) if line.rstrip() == marked["code"].rstrip()), None)
    repair = (
        None if failing is None else _fix_line(lines[failing], marked["error"], marked["message"], source)
    )
    if repair is None:
        return f"<reasoning>No rule repairs a {marked['error']} on this line.</reasoning>"
    lines[failing], why = repair
    new_source = "\n".join(lines)
    return (
        f"<reasoning>The line `{marked['code'].strip()}` raised {marked['error']}: {why}.</reasoning>\n"
        f"<variable>\n<name>{name}</name>\n<value>\n{new_source}\n</value>\n</variable>"
    )


# -- the loop ----------------------------------------------------------------------------------------


def real_client() -> LLMClient:
    """The configured endpoint (OPENAI_BASE_URL or the config file), else the embedded local model."""
    from agent.local_llm.endpoint import resolve_llm_config  # only --real needs the agent package

    return LLMClient(resolve_llm_config())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--real", action="store_true", help="use the configured OpenAI-compatible endpoint")
    parser.add_argument("--rounds", type=int, default=5, help="most repair rounds")
    arguments = parser.parse_args()
    console = Console()
    trip = ([120.0, 45.5, 80.0], [1.5, 0.5, 1.0])

    server = None if arguments.real else ScriptedLLMServer(responder=repair_responder).start()
    try:
        client = real_client() if server is None else LLMClient(server.llm_config(), cache=False)
        optimizer = OptoPrime([average_speed.parameter], client, reply_format="tags")
        for round_number in range(1, arguments.rounds + 1):
            result = average_speed(*trip)
            if not isinstance(result, ExceptionNode):
                console.print(f"round {round_number}: average_speed returned {result.value:.4f} km/h")
                break
            console.print(f"[yellow]round {round_number}: average_speed raised {result.value}")
            optimizer.zero_feedback()
            optimizer.backward(result)  # no text: the exception explains itself, failing line marked
            step = optimizer.step()
            console.print(f"  optimizer: {step.reasoning or '; '.join(step.errors)}")
            if not step.changed:
                break
        client.close()
    finally:
        if server is not None:
            server.stop()

    console.print(Syntax(average_speed.parameter.value, "python", theme="ansi_dark", word_wrap=True))
    unseen = [([10.0, 20.0], [0.25, 0.25]), ([300.0], [4.0]), ([1.0, 2.0, 3.0], [0.1, 0.2, 0.3])]
    for distances, hours in [trip, *unseen]:
        output = average_speed(distances, hours)
        expected = sum(distances) / sum(hours)
        if isinstance(output, ExceptionNode) or abs(output.value - expected) > 1e-9:
            console.print(f"[red]still wrong on {distances}, {hours}: {output.value} (expected {expected})")
            return 1
    console.print("[green]fixed: the repaired code gives the right average speed on every trip")
    return 0


if __name__ == "__main__":
    sys.exit(main())
