"""Overhead of trace_graph against Microsoft Trace (PyPI ``trace-opt==0.1.3.8``), measured side by side.

    python benchmarks/trace_overhead.py [--json] [--venv DIR] [--no-trace-opt]

Both libraries run the same workloads, one after the other, each in a fresh subprocess of this
script (``--worker ours|trace-opt``), so neither pays for the other's imports or garbage:

* ``per_call_us``: microseconds per call of a trivial bundled function (10,000 calls, best of 3);
* ``bytes_per_node``: traced memory per ``node(i)`` created (tracemalloc over 10,000 nodes), and
  ``bytes_per_op``: per bundled call kept alive in a chain (the output node and its bookkeeping);
* ``backward_{100,1000,4000}_ms``: ``backward()`` on a chain of bundled ops rooted at one trainable
  parameter (best of 3 fresh chains; the parameter is checked to have received the feedback);
* ``prompt_chars``: characters of the OptoPrime prompt for the same 2-op graph, built without calling
  an LLM (trace-opt: ``OptoPrime.construct_prompt``; ours: ``trace_graph/optimizers/optoprime.py``
  when it exists, else reported as unavailable).

trace-opt is installed into a reusable virtualenv (default ``~/.cache/optitrace/bench-venv``) as the
package plus what ``import opto.trace`` / ``opto.optimizers`` really import (graphviz, numpy, black).
Its LLM back ends (litellm, openai; plus scikit-learn and xgboost, which nothing here imports) are not
installed: the trace-opt worker puts two tiny stand-in modules in ``sys.modules`` before importing
``opto`` -- only attributes touched at import time, never called -- so it runs offline. If trace-opt
cannot be installed, the script says so and still prints our column.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import subprocess
import sys
import time
import tracemalloc
import types
from collections.abc import Callable
from pathlib import Path
from typing import Any

TRACE_OPT = "trace-opt==0.1.3.8"
# What `import opto.trace` and `import opto.optimizers` import besides the standard library.
TRACE_OPT_IMPORTS = ["graphviz", "numpy", "black"]
DEFAULT_VENV = Path.home() / ".cache" / "optitrace" / "bench-venv"
REPO = Path(__file__).resolve().parent.parent
CALLS = 10_000
NODES = 10_000
CHAIN_SIZES = (100, 1_000, 4_000)
REPEATS = 3
FEEDBACK = "The result of the code is not as expected. The result should be 10, but the code returns 1"

# Reference figures for trace-opt 0.1.3.8 measured earlier on this kind of machine (shared notes).
REFERENCE = {"per_call_us": 59.0, "bytes_per_node": 1900.0, "backward_4000_ms": 933.0}


# -- the libraries, behind one small interface -------------------------------------------------------


class Library:
    name: str
    node: Callable[..., Any]
    bundle: Callable[[Callable[..., Any]], Any]

    def feedback_count(self, parameter: Any) -> int:
        raise NotImplementedError

    def prompt_chars(self) -> tuple[int | None, str]:
        raise NotImplementedError


class Ours(Library):
    name = "trace_graph"

    def __init__(self) -> None:
        sys.path.insert(0, str(REPO))
        import trace_graph

        self.module = trace_graph
        self.node = trace_graph.node
        self.bundle = trace_graph.bundle

    def feedback_count(self, parameter: Any) -> int:
        return len(parameter.feedback)

    def prompt_chars(self) -> tuple[int | None, str]:
        if not (REPO / "trace_graph" / "optimizers" / "optoprime.py").exists():
            return None, "trace_graph/optimizers/optoprime.py does not exist yet"
        import importlib

        optoprime = importlib.import_module("trace_graph.optimizers.optoprime")
        parameter = small_graph(self)
        return _measure_prompt(optoprime, parameter, self.module.build_report(parameter.feedback))


class TraceOpt(Library):
    name = "trace-opt"

    def __init__(self) -> None:
        _stand_in_llm_modules()
        from opto import trace

        self.trace = trace
        self.node = trace.node
        self.bundle = trace.bundle()  # trace-opt's decorator always takes arguments

    def feedback_count(self, parameter: Any) -> int:
        return sum(len(items) for items in parameter.feedback.values())

    def prompt_chars(self) -> tuple[int | None, str]:
        from opto.optimizers import OptoPrime

        parameter = small_graph(self)
        optimizer = OptoPrime([parameter], llm=object())  # an LLM object is needed, never called
        system, user = optimizer.construct_prompt(optimizer.summarize())
        return len(system) + len(user), "OptoPrime.construct_prompt (system + user)"


def _stand_in_llm_modules() -> None:
    """Minimal `litellm` and `openai` modules: opto.utils.llm imports them and reads `openai.OpenAI`
    in an annotation; nothing in this benchmark calls an LLM."""
    litellm = types.ModuleType("litellm")

    def completion(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the benchmark never calls an LLM")

    litellm.completion = completion  # type: ignore[attr-defined]
    openai = types.ModuleType("openai")
    openai.OpenAI = type("OpenAI", (), {})  # type: ignore[attr-defined]
    sys.modules.setdefault("litellm", litellm)
    sys.modules.setdefault("openai", openai)


def _measure_prompt(optoprime: Any, parameter: Any, report: Any) -> tuple[int | None, str]:
    """Our OptoPrime module is written separately; try the ways it may expose its prompt."""
    for function_name in ("render_prompt", "build_prompt", "prompt_for_report", "format_report"):
        function = getattr(optoprime, function_name, None)
        if callable(function):
            return _text_length(function(report)), f"optoprime.{function_name}(report)"
    optimizer_class = getattr(optoprime, "OptoPrime", None)
    if optimizer_class is None:
        return None, "trace_graph.optimizers.optoprime has no OptoPrime class or prompt function"
    try:
        optimizer = optimizer_class([parameter])
    except TypeError:
        optimizer = optimizer_class([parameter], llm=None)
    for method_name in ("construct_prompt", "build_prompt", "build_messages", "prompt", "messages"):
        method = getattr(optimizer, method_name, None)
        if callable(method):
            try:
                return _text_length(method()), f"OptoPrime.{method_name}()"
            except TypeError:
                return _text_length(method(report)), f"OptoPrime.{method_name}(report)"
    return None, "found OptoPrime but no prompt-building method"


def _text_length(prompt: Any) -> int:
    if isinstance(prompt, str):
        return len(prompt)
    if isinstance(prompt, dict):
        return len(str(prompt.get("content", "")))
    if hasattr(prompt, "content"):
        return len(str(prompt.content))
    return sum(_text_length(part) for part in prompt)


# -- the workloads -----------------------------------------------------------------------------------


def add_one(x: int) -> int:
    return x + 1


def add(x: int, y: int) -> int:
    """Add x and y."""
    return x + y


def subtract(x: int, y: int) -> int:
    """Subtract y from x."""
    return x - y


def small_graph(library: Library) -> Any:
    """OptoPrime's own example: z = subtract(add(a, b), c), a trainable; feedback sent back."""
    a = library.node(5, name="a", trainable=True)
    b = library.node(1, name="b")
    c = library.node(5, name="c")
    bundled_add, bundled_subtract = library.bundle(add), library.bundle(subtract)
    output = bundled_subtract(bundled_add(a, b), c)
    output.backward(FEEDBACK)
    return a


def per_call_us(library: Library) -> float:
    bundled = library.bundle(add_one)
    x = library.node(1, name="x")
    for _ in range(200):  # warm-up
        bundled(x)
    timings = []
    for _ in range(REPEATS):
        started = time.perf_counter()
        for _ in range(CALLS):
            bundled(x)
        timings.append(time.perf_counter() - started)
    return min(timings) / CALLS * 1e6


def traced_bytes(create: Callable[[], Any], count: int) -> float:
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    kept = create()
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    del kept
    return (after - before) / count


def bytes_per_node(library: Library) -> float:
    return traced_bytes(lambda: [library.node(i) for i in range(NODES)], NODES)


def bytes_per_op(library: Library) -> float:
    bundled = library.bundle(add_one)
    start = library.node(0, name="start")

    def chain() -> Any:
        current = start
        for _ in range(NODES):
            current = bundled(current)
        return current

    return traced_bytes(chain, NODES)


def backward_ms(library: Library, size: int) -> float:
    bundled = library.bundle(add_one)
    timings = []
    for _ in range(REPEATS):
        parameter = library.node(0, name="p", trainable=True)
        current = parameter
        for _ in range(size):
            current = bundled(current)
        gc.collect()
        started = time.perf_counter()
        current.backward(FEEDBACK)
        timings.append(time.perf_counter() - started)
        if library.feedback_count(parameter) != 1:
            raise RuntimeError(f"{library.name}: backward did not reach the parameter")
    return min(timings) * 1e3


def run_worker(which: str) -> dict[str, Any]:
    library: Library = Ours() if which == "ours" else TraceOpt()
    results: dict[str, Any] = {
        "python": sys.version.split()[0],
        "per_call_us": per_call_us(library),
        "bytes_per_node": bytes_per_node(library),
        "bytes_per_op": bytes_per_op(library),
    }
    for size in CHAIN_SIZES:
        results[f"backward_{size}_ms"] = backward_ms(library, size)
    try:
        results["prompt_chars"], results["prompt_source"] = library.prompt_chars()
    except Exception as error:  # the prompt is one figure among several: report, do not abort
        results["prompt_chars"], results["prompt_source"] = None, f"failed: {type(error).__name__}: {error}"
    return results


# -- orchestration -----------------------------------------------------------------------------------


def venv_python(venv: Path) -> Path:
    return venv / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_trace_opt(venv: Path) -> tuple[Path | None, str]:
    """A Python with trace-opt importable (created on first use, reused after)."""
    python = venv_python(venv)
    check = [str(python), "-c", "import importlib.metadata as m; print(m.version('trace-opt'))"]
    if python.exists():
        found = subprocess.run(check, capture_output=True, text=True, check=False)
        if found.returncode == 0 and found.stdout.strip() == TRACE_OPT.split("==")[1]:
            return python, f"reused {venv}"
    steps = [
        [sys.executable, "-m", "venv", str(venv)],
        [str(python), "-m", "pip", "install", "--quiet", "--no-deps", TRACE_OPT],
        [str(python), "-m", "pip", "install", "--quiet", *TRACE_OPT_IMPORTS],
    ]
    print(f"installing {TRACE_OPT} into {venv} ...", file=sys.stderr)
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, check=False, timeout=900)
        if done.returncode != 0:
            return None, f"`{' '.join(step)}` failed: {(done.stderr or done.stdout).strip()[-500:]}"
    return python, f"installed into {venv}"


def measure(python: Path | str, which: str) -> dict[str, Any]:
    done = subprocess.run(
        [str(python), str(Path(__file__).resolve()), "--worker", which],
        capture_output=True,
        text=True,
        check=False,
        timeout=1800,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{which} worker failed:\n{done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def ratio(theirs: float | None, ours: float | None) -> float | None:
    return None if not theirs or not ours else round(theirs / ours, 1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.add_argument("--venv", type=Path, default=DEFAULT_VENV, help="virtualenv for trace-opt")
    parser.add_argument("--no-trace-opt", action="store_true", help="measure trace_graph only")
    parser.add_argument("--worker", choices=["ours", "trace-opt"], help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    if arguments.worker:
        print(json.dumps(run_worker(arguments.worker)))
        return 0

    ours = measure(sys.executable, "ours")
    theirs: dict[str, Any] = {}
    if arguments.no_trace_opt:
        status = "skipped (--no-trace-opt)"
    else:
        python, status = ensure_trace_opt(arguments.venv)
        if python is not None:
            try:
                theirs = measure(python, "trace-opt")
            except (RuntimeError, subprocess.TimeoutExpired) as error:
                status = f"trace-opt measurement failed: {error}"
    metrics = ["per_call_us", "bytes_per_node", "bytes_per_op", *[f"backward_{n}_ms" for n in CHAIN_SIZES]]
    result: dict[str, Any] = {"trace_opt": TRACE_OPT, "trace_opt_status": status}
    for metric in [*metrics, "prompt_chars"]:
        result[metric] = _rounded(ours.get(metric))
        result[f"trace_opt_{metric}"] = _rounded(theirs.get(metric))
    for metric in metrics:
        result[f"speedup_{metric}" if "ms" in metric or "us" in metric else f"ratio_{metric}"] = ratio(
            theirs.get(metric), ours.get(metric)
        )
    result["prompt_source"] = ours.get("prompt_source")
    result["trace_opt_prompt_source"] = theirs.get("prompt_source")
    result["python"] = ours.get("python")
    result["reference_trace_opt"] = REFERENCE
    if arguments.json:
        print(json.dumps(result, indent=2))
    else:
        _print_table(result, metrics)
    return 0


def _rounded(value: Any) -> Any:
    return round(value, 3) if isinstance(value, float) else value


def _print_table(result: dict[str, Any], metrics: list[str]) -> None:
    print(f"trace-opt: {result['trace_opt_status']}")
    print(f"{'metric':<22}{'trace_graph':>14}{'trace-opt':>14}{'ratio':>10}")
    for metric in [*metrics, "prompt_chars"]:
        ours, theirs = result[metric], result[f"trace_opt_{metric}"]
        factor = ratio(theirs, ours) if metric != "prompt_chars" else None
        cells = [f"{value:>14}" if value is not None else f"{'-':>14}" for value in (ours, theirs)]
        print(f"{metric:<22}{cells[0]}{cells[1]}{(f'{factor}x' if factor else '-'):>10}")
    print(f"prompt: ours {result['prompt_source']}; trace-opt {result['trace_opt_prompt_source']}")


if __name__ == "__main__":
    sys.exit(main())
