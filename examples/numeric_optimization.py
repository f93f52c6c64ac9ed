"""Numeric optimization with OptoPrime: find the x where a black-box function is smallest.

The black box is a bundled function. Each round the "environment" measures f at the current x and
at a probe point 0.01 further, and sends that as feedback ("f(x) = 9.1 at x = 0; f(0.01) = 9.05").
The optimizer sees only the prompt: the graph, the current x, the feedback and (memory) its earlier
attempts.

By default a ScriptedLLMServer on 127.0.0.1 stands in for the LLM. It is not given the function or
its minimum: its responder reads the current x from the prompt's #Variables section, the two
measurements from #Feedback and the previous attempt from #Past attempts, estimates the slope, and
proposes the next x with a secant step (a gradient step when there is no earlier slope to compare
with) -- what a careful person would do with the same text. With --real the same prompts go to the
endpoint configured by OPENAI_BASE_URL (or the optitrace config file), else to the embedded local
model (started on demand).

At the end the result is checked against a dense grid search over [-10, 10], done independently.

    python examples/numeric_optimization.py [--real] [--steps N]
"""

from __future__ import annotations

import argparse
import json
import math
import re
import sys

from rich.console import Console
from rich.table import Table

from trace_graph import bundle, node
from trace_graph.llm import ChatRequest, LLMClient, ScriptedLLMServer
from trace_graph.optimizers import SECTION_TITLES, OptoPrime, split_sections

PROBE = 0.01
NUMBER = r"-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?"


@bundle
def black_box(x: float) -> float:
    """An expensive measurement: the cost of running the process at setting x. Lower is better."""
    shifted = x - 2.7
    return 0.3 * shifted**4 + shifted**2 + 1.5 + 0.2 * math.sin(shifted)


def feedback_for(x: float, value: float) -> str:
    # The probe calls the plain function: a second measurement, not part of the recorded run.
    probe = black_box.function(x + PROBE)
    return (
        f"f(x) = {value:.6f} at x = {x:.6f}; the probe f(x + {PROBE}) = {probe:.6f}. "
        "Lower is better: find the x with the smallest f(x)."
    )


# -- the stand-in for the LLM ------------------------------------------------------------------------


def _slope_from(feedback: str) -> tuple[float, float] | None:
    """(x, estimated slope) from one feedback text."""
    match = re.search(
        rf"f\(x\) = ({NUMBER}) at x = ({NUMBER}); the probe f\(x \+ ({NUMBER})\) = ({NUMBER})", feedback
    )
    if match is None:
        return None
    value, x, step, probe = (float(group) for group in match.groups())
    return x, (probe - value) / step


def secant_responder(request: ChatRequest) -> str:
    """Read the prompt like an optimizer would and answer in the requested JSON shape."""
    sections = split_sections(request.last_user_text, SECTION_TITLES)
    variable = re.search(rf"^\(float\) (\S+)=({NUMBER})$", sections.get("Variables", ""), re.MULTILINE)
    current = _slope_from(sections.get("Feedback", ""))
    if variable is None or current is None:
        return json.dumps({"reasoning": "I cannot find the variable or the measurements.", "suggestion": {}})
    name = variable.group(1)
    x, slope = current
    if abs(slope) < 1e-3:
        return json.dumps(
            {"reasoning": f"The slope at x={x:g} is about 0: this is the minimum.", "suggestion": {}}
        )
    past = [_slope_from(line) for line in sections.get("Past attempts", "").splitlines()]
    previous = next((found for found in reversed(past) if found is not None and found[0] != x), None)
    step = -0.2 * slope  # a cautious gradient step
    reasoning = f"f decreases towards {'larger' if slope < 0 else 'smaller'} x (slope {slope:.3f})"
    if previous is not None:
        curvature = (slope - previous[1]) / (x - previous[0])
        if curvature > 0:  # the slopes say where the bottom is: a secant (Newton) step
            step = -slope / curvature
            reasoning += (
                f"; with the slope {previous[1]:.3f} at x={previous[0]:g} the bottom is near x={x + step:.4f}"
            )
    step = max(-2.0, min(2.0, step))  # do not jump far on a guess
    return json.dumps({"reasoning": reasoning + ".", "suggestion": {name: round(x + step, 6)}})


# -- the loop ----------------------------------------------------------------------------------------


def real_client() -> LLMClient:
    """The configured endpoint (OPENAI_BASE_URL or the config file), else the embedded local model."""
    from agent.local_llm.endpoint import resolve_llm_config  # only --real needs the agent package

    return LLMClient(resolve_llm_config())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--real", action="store_true", help="use the configured OpenAI-compatible endpoint")
    parser.add_argument("--steps", type=int, default=12, help="most optimizer steps")
    arguments = parser.parse_args()
    console = Console()

    server = None if arguments.real else ScriptedLLMServer(responder=secant_responder).start()
    try:
        client = real_client() if server is None else LLMClient(server.llm_config(), cache=False)
        x = node(0.0, name="x", trainable=True, description="the process setting", constraint="a real number")
        optimizer = OptoPrime([x], client, memory_size=3, objective="Find the x where f(x) is smallest.")
        table = Table("step", "x", "f(x)", "reasoning", title="Minimizing a black box")
        for step in range(arguments.steps):
            tried = x.value
            measured = black_box(x)
            optimizer.zero_feedback()
            optimizer.backward(measured, feedback_for(x.value, measured.value))
            result = optimizer.step()
            table.add_row(str(step), f"{tried:.6f}", f"{measured.value:.6f}", result.reasoning)
            if result.errors:
                console.print(f"[red]step {step}: {'; '.join(result.errors)}")
            if not result.changed:
                break
        console.print(table)
        client.close()
    finally:
        if server is not None:
            server.stop()

    grid = [-10 + index * 1e-4 for index in range(200_001)]
    best_x = min(grid, key=black_box.function)
    gap = black_box.function(x.value) - black_box.function(best_x)
    console.print(
        f"found x = {x.value:.5f} (grid search: {best_x:.5f}); f above the grid minimum by {gap:.2e}"
    )
    if gap <= 1e-4:
        console.print("[green]reached the minimum")
        return 0
    console.print("[red]did not reach the minimum")
    return 1


if __name__ == "__main__":
    sys.exit(main())
