"""Evaluation throughput: items/s at 1, 2, 4, 8 workers against an LLM with fixed latency.

    python benchmarks/eval_throughput.py [--json] [--items 200] [--latency 0.2]

The items are generated small LPs (a plant making 2-3 products from 2-3 resources, or a blend
meeting 2-3 requirements at least cost) whose question text carries all the data. The scripted
loopback server plays the LLM: it reads the problem out of the prompt it receives, parses the
numbers from the text, and writes the formulation JSON the agent asks for, after `--latency`
seconds. The labels are computed independently, exactly, by enumerating the LP's vertices with
fractions. Everything else is the real pipeline: runner, thread executor, ModelingAgent (oneshot,
cache off), IR build, HiGHS, the independent check, scoring, fsync'd records. 100% accuracy is the
sanity check that the pipeline is honest; `speedup_8` is 8 workers versus 1 in the same run.
"""

from __future__ import annotations

import argparse
import hashlib
import itertools
import json
import random
import re
import sys
import tempfile
import time
from fractions import Fraction
from pathlib import Path

from pydantic import BaseModel
from rich.console import Console
from rich.table import Table

from agent.datasets import Label, LoadedDataset, Problem
from agent.evaluation import AgentProblemSolver, LocalExecutor, ModelRef, load_run, run_evaluation
from agent.modeler import AgentOptions
from agent.scoring import HEADLINE_RULE
from trace_graph.llm import ChatRequest, LLMClient, ScriptedLLMServer

WORKER_COUNTS = (1, 2, 4, 8)
TARGET_SPEEDUP_8 = 6.0
PRODUCTS = ["widgets", "gadgets", "brackets", "panels", "valves", "hinges", "gears", "frames"]
RESOURCES = ["machining", "assembly", "painting", "packing", "testing"]
INGREDIENTS = ["oats", "barley", "corn", "soy", "wheat", "rye"]
NUTRIENTS = ["protein", "fiber", "fat", "iron"]


# --- items and their exact optima ----------------------------------------------------------------
class LPItem(BaseModel):
    text: str
    sense: str
    costs: list[int]
    matrix: list[list[int]]
    rhs: list[int]


def production_item(rng: random.Random) -> LPItem:
    products = rng.sample(PRODUCTS, rng.choice((2, 3)))
    resources = rng.sample(RESOURCES, rng.choice((2, 3)))
    usage = [[rng.randint(1, 9) for _ in products] for _ in resources]
    capacity = [rng.randint(40, 400) for _ in resources]
    profit = [rng.randint(2, 20) for _ in products]
    uses = "; ".join(
        f"each ton of {product} uses "
        + ", ".join(f"{usage[i][j]} hours of {resource}" for i, resource in enumerate(resources))
        for j, product in enumerate(products)
    )
    available = ", ".join(f"{capacity[i]} hours of {resource}" for i, resource in enumerate(resources))
    profits = ", ".join(f"{product} ${profit[j]}" for j, product in enumerate(products))
    text = (
        f"A plant makes {', '.join(products)} (any fractional number of tons). Usage: {uses}. "
        f"Available each week: {available}. Profit per ton: {profits}. "
        "How many tons of each should it make to maximize total profit?"
    )
    return LPItem(text=text, sense="maximize", costs=profit, matrix=usage, rhs=capacity)


def blend_item(rng: random.Random) -> LPItem:
    ingredients = rng.sample(INGREDIENTS, rng.choice((2, 3)))
    nutrients = rng.sample(NUTRIENTS, rng.choice((2, 3)))
    content = [[rng.randint(1, 9) for _ in ingredients] for _ in nutrients]
    need = [rng.randint(20, 200) for _ in nutrients]
    cost = [rng.randint(2, 20) for _ in ingredients]
    contains = "; ".join(
        f"each kg of {ingredient} contains "
        + ", ".join(f"{content[i][j]} units of {nutrient}" for i, nutrient in enumerate(nutrients))
        for j, ingredient in enumerate(ingredients)
    )
    needs = ", ".join(f"{need[i]} units of {nutrient}" for i, nutrient in enumerate(nutrients))
    costs = ", ".join(f"{ingredient} ${cost[j]}" for j, ingredient in enumerate(ingredients))
    text = (
        f"A feed blend is mixed from {', '.join(ingredients)} (any fractional number of kg). Content: "
        f"{contains}. The blend needs at least: {needs}. Cost per kg: {costs}. "
        "How many kg of each should go in to minimize total cost?"
    )
    return LPItem(text=text, sense="minimize", costs=cost, matrix=content, rhs=need)


def exact_optimum(item: LPItem) -> Fraction:
    """Vertex enumeration in exact arithmetic: every basis of n tight constraints among the rows
    and x >= 0, keep the feasible points, take the best objective. Independent of any LP solver."""
    n = len(item.costs)
    le = item.sense == "maximize"
    rows = [([Fraction(a) for a in row], Fraction(b)) for row, b in zip(item.matrix, item.rhs, strict=True)]
    rows += [([Fraction(int(k == j)) for k in range(n)], Fraction(0)) for j in range(n)]  # x_j = 0
    best: Fraction | None = None
    for basis in itertools.combinations(range(len(rows)), n):
        point = _solve_exact([rows[i][0] for i in basis], [rows[i][1] for i in basis])
        if point is None or any(x < 0 for x in point):
            continue
        activity = [sum(a * x for a, x in zip(row, point, strict=True)) for row, _ in rows[: len(item.rhs)]]
        if not all((act <= b) if le else (act >= b) for act, b in zip(activity, item.rhs, strict=True)):
            continue
        value = sum(Fraction(c) * x for c, x in zip(item.costs, point, strict=True))
        if best is None or (value > best if le else value < best):
            best = value
    if best is None:
        raise ValueError("generated LP has no feasible vertex")
    return best


def _solve_exact(matrix: list[list[Fraction]], rhs: list[Fraction]) -> list[Fraction] | None:
    """Gauss-Jordan on a square system; None when singular."""
    n = len(rhs)
    augmented = [[*row, b] for row, b in zip(matrix, rhs, strict=True)]
    for column in range(n):
        pivot = next((r for r in range(column, n) if augmented[r][column] != 0), None)
        if pivot is None:
            return None
        augmented[column], augmented[pivot] = augmented[pivot], augmented[column]
        for r in range(n):
            if r != column and augmented[r][column] != 0:
                factor = augmented[r][column] / augmented[column][column]
                augmented[r] = [a - factor * p for a, p in zip(augmented[r], augmented[column], strict=True)]
    return [augmented[i][n] / augmented[i][i] for i in range(n)]


def make_dataset(count: int, seed: int = 0) -> LoadedDataset:
    rng = random.Random(seed)
    problems: list[Problem] = []
    for index in range(count):
        item = production_item(rng) if index % 2 == 0 else blend_item(rng)
        optimum = float(exact_optimum(item))
        problems.append(
            Problem(
                id=f"synthetic-lp/{index}",
                dataset="synthetic-lp",
                question=item.text,
                label=Label(status="optimal", objective=optimum, raw=repr(optimum)),
            )
        )
    checksum = hashlib.sha256(json.dumps([p.model_dump() for p in problems]).encode()).hexdigest()
    return LoadedDataset(
        name="synthetic-lp",
        version=f"eval_throughput seed {seed}",
        checksum=checksum,
        files=[],
        problems=problems,
    )


# --- the responder: reads the problem text and writes the formulation, like an LLM would -------
_NAME = r"[a-z]+"


def _problem_text(request: ChatRequest) -> str:
    prompt = request.last_user_text
    _, _, tail = prompt.rpartition("Problem: ")
    return tail.rsplit("\nJSON:", 1)[0].strip()


def formulate(text: str) -> str:
    maximize = "maximize total profit" in text
    unit = "ton" if maximize else "kg"
    verb = "uses" if maximize else "contains"
    per_item = re.findall(rf"each {unit} of ({_NAME}) {verb} ([^;.]+)", text)
    coefficients: dict[str, dict[str, float]] = {}
    for item, listing in per_item:
        coefficients[item] = {
            resource: float(amount)
            for amount, resource in re.findall(rf"(\d+(?:\.\d+)?) (?:hours|units) of ({_NAME})", listing)
        }
    limit_sentence = re.search(r"(?:Available each week|The blend needs at least): ([^.]+)\.", text)
    price_sentence = re.search(r"(?:Profit|Cost) per (?:ton|kg): ([^.]+)\.", text)
    if limit_sentence is None or price_sentence is None or not coefficients:
        raise ValueError(f"cannot read the problem: {text[:120]!r}")
    limits = {
        resource: float(amount)
        for amount, resource in re.findall(
            rf"(\d+(?:\.\d+)?) (?:hours|units) of ({_NAME})", limit_sentence.group(1)
        )
    }
    prices = {
        item: float(value)
        for item, value in re.findall(rf"({_NAME}) \$(\d+(?:\.\d+)?)", price_sentence.group(1))
    }
    comparison = "<=" if maximize else ">="
    draft = {
        "notes": "; ".join(f"{resource}: {limit:g}" for resource, limit in limits.items()),
        "variables": [
            {"name": item, "meaning": f"{unit}s of {item}", "type": "continuous"} for item in coefficients
        ],
        "objective": {
            "sense": "maximize" if maximize else "minimize",
            "expression": " + ".join(f"{prices[item]:g}*{item}" for item in coefficients),
            "meaning": "total profit ($)" if maximize else "total cost ($)",
        },
        "constraints": [
            {
                "name": f"{resource}_limit",
                "expression": " + ".join(f"{coefficients[item][resource]:g}*{item}" for item in coefficients)
                + f" {comparison} {limit:g}",
                "meaning": f"{resource} {'available' if maximize else 'required'}",
            }
            for resource, limit in limits.items()
        ],
        "missing_information": [],
    }
    return json.dumps(draft)


def respond(request: ChatRequest) -> str:
    return formulate(_problem_text(request))


# --- the measurement -----------------------------------------------------------------------------
class WorkerResult(BaseModel):
    workers: int
    seconds: float
    items_per_s: float
    accuracy: float
    executed: float
    llm_calls: int


class ThroughputReport(BaseModel):
    items: int
    latency: float
    results: list[WorkerResult]
    speedup_8: float | None
    target_speedup_8: float = TARGET_SPEEDUP_8
    meets_target: bool | None


def measure(dataset: LoadedDataset, server: ScriptedLLMServer, workers: int, root: Path) -> WorkerResult:
    before = server.request_count
    with LLMClient(server.llm_config(), cache=False) as client:
        solver = AgentProblemSolver(client, AgentOptions(mode="oneshot"))
        started = time.perf_counter()
        outcome = run_evaluation(
            dataset,
            root / f"workers-{workers}",
            LocalExecutor(solver, workers),
            modes=["oneshot"],
            model=ModelRef(name=server.model, endpoint=server.base_url, identity=server.base_url),
        )
        seconds = time.perf_counter() - started
    records = load_run(outcome.run_dir).records
    return WorkerResult(
        workers=workers,
        seconds=round(seconds, 3),
        items_per_s=round(len(records) / seconds, 3),
        accuracy=sum(r.correct_under(HEADLINE_RULE) for r in records) / len(records),
        executed=sum(r.executed for r in records) / len(records),
        llm_calls=server.request_count - before,
    )


def run(items: int, latency: float, seed: int = 0) -> ThroughputReport:
    dataset = make_dataset(items, seed)
    results: list[WorkerResult] = []
    with (
        ScriptedLLMServer(responder=respond, latency=latency) as server,
        tempfile.TemporaryDirectory() as tmp,
    ):
        for workers in WORKER_COUNTS:
            results.append(measure(dataset, server, workers, Path(tmp)))
        if server.errors:
            raise RuntimeError(f"the responder failed:\n{server.errors[0]}")
    by_workers = {r.workers: r for r in results}
    speedup = (
        round(by_workers[8].items_per_s / by_workers[1].items_per_s, 2)
        if 8 in by_workers and 1 in by_workers
        else None
    )
    return ThroughputReport(
        items=items,
        latency=latency,
        results=results,
        speedup_8=speedup,
        meets_target=None if speedup is None else speedup >= TARGET_SPEEDUP_8,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the numbers as JSON")
    parser.add_argument("--items", type=int, default=200)
    parser.add_argument("--latency", type=float, default=0.2, help="seconds per LLM call")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    report = run(args.items, args.latency, args.seed)
    if args.json:
        print(report.model_dump_json(indent=2))
        return 0
    table = Table(title=f"{report.items} items, {report.latency:g} s per LLM call (oneshot, cache off)")
    for column in ("workers", "seconds", "items/s", "accuracy", "executed", "LLM calls"):
        table.add_column(column, justify="right")
    for r in report.results:
        table.add_row(
            str(r.workers),
            f"{r.seconds:.1f}",
            f"{r.items_per_s:.2f}",
            f"{100 * r.accuracy:.1f}%",
            f"{100 * r.executed:.1f}%",
            str(r.llm_calls),
        )
    console = Console()
    console.print(table)
    console.print(f"speedup_8 = {report.speedup_8}x (target >= {TARGET_SPEEDUP_8:g}x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
