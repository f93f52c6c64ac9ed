"""Network flow: shortest path, then min-cost flow with capacities, hubs and arcs to build."""

from __future__ import annotations

import itertools
import random

import networkx as nx

from agent.synthesis.families.base import (
    Family,
    Theme,
    Variant,
    by_level,
    constraint,
    formulation,
    index_set,
    integer_domain,
    pick_theme,
    round_down,
    round_up,
    step_value,
    table,
    variable,
)
from agent.synthesis.families.names import CITIES
from solvers.ir import Formulation

NETWORK_THEMES = (
    Theme(
        "a logistics firm routing freight between cities",
        {"nodes": CITIES},
        {"unit": "truckloads", "link": "road", "cost": "cost per truckload ($)"},
    ),
    Theme(
        "a water utility moving water through pipelines",
        {"nodes": CITIES},
        {"unit": "megaliters", "link": "pipeline", "cost": "pumping cost per megaliter ($)"},
    ),
    Theme(
        "a telecom carrier routing data between hubs",
        {"nodes": CITIES},
        {"unit": "gigabits per second", "link": "fiber link", "cost": "cost per gigabit per second ($)"},
    ),
)
NETWORK_KNOB = (
    "5 places, 7 one-way links: cheapest route for one shipment (shortest path)",
    "6 places, 9 links with capacities, one origin and two destinations (min-cost flow)",
    "7 places, 11 links, whole units, throughput limits at some transfer points",
    "8 places, 12 links, some links must be built first at a fixed cost (yes/no, capacity x build as big-M)",
    "9 places, 14 links, two origins",
)


def _network(rng: random.Random, level: int, variant: Variant) -> tuple[str, Formulation]:
    theme = pick_theme(rng, NETWORK_THEMES)
    unit, link = theme.word("unit"), theme.word("link")
    nodes = theme.names(rng, "nodes", by_level(level, (5, 6, 7, 8, 9)))
    n_arcs = by_level(level, (7, 9, 11, 12, 14))
    n_sinks = 1 if level == 1 else 2
    n_sources = 2 if level >= 5 else 1
    sources, sinks = nodes[:n_sources], nodes[-n_sinks:]
    # A backbone path through every place in order guarantees a route from each origin to each
    # destination; its links get room for all the flow. Extra links are random shortcuts.
    backbone = list(itertools.pairwise(nodes))
    extra = [
        (a, b) for a in nodes for b in nodes if a != b and (a, b) not in backbone and (b, a) not in backbone
    ]
    arcs = backbone + rng.sample(extra, n_arcs - len(backbone))
    cost: dict[str, dict[str, int | float]] = {}
    for a, b in arcs:
        cost.setdefault(a, {})[b] = step_value(rng, 2, 20)
    shortest = level == 1
    supply = {s: (1 if shortest else step_value(rng, 20, 60, 5)) for s in sources}
    total = sum(supply.values())
    demand = dict(
        zip(
            sinks,
            [total] if n_sinks == 1 else [round_down(total / 2, 5), total - round_down(total / 2, 5)],
            strict=True,
        )
    )
    domain = integer_domain(level)
    sets = [index_set("Places", nodes, "places in the network")]
    params = [
        table(
            "link_cost",
            ["Places", "Places"],
            cost,
            f"{theme.word('cost')} on each one-way {link} (listed links only)",
            default=0,
        ),
        table("supply", ["Places"], supply, f"{unit} sent out from each origin (listed only)", default=0),
        table(
            "demand",
            ["Places"],
            demand,
            f"{unit} that must arrive at each destination (listed only)",
            default=0,
        ),
    ]
    on_link = "link_cost[i, j] > 0"
    cons = [
        constraint(
            "conservation",
            "sum(flow[i, j] for j in Places if link_cost[i, j] > 0) - sum(flow[j, i] for j in Places "
            "if link_cost[j, i] > 0) == supply[i] - demand[i]",
            "what leaves a place minus what arrives equals its supply minus its demand",
            [("i", "Places")],
        ),
    ]
    variables = [variable("flow", f"{unit} sent along each {link}", ["Places", "Places"], domain)]
    objective = "sum(link_cost[i, j] * flow[i, j] for i in Places for j in Places if link_cost[i, j] > 0)"
    if not shortest:
        capacity: dict[str, dict[str, int | float]] = {}
        for a, b in arcs:
            room = total if (a, b) in backbone else rng.randint(10, total)
            capacity.setdefault(a, {})[b] = round_up(room + rng.randint(0, 20), 5)
        if variant == "infeasible":
            # The links out of the origins cannot carry the supply.
            for s in sources:
                for b in capacity.get(s, {}):
                    capacity[s][b] = max(1, int(supply[s] // (2 * len(capacity[s]))))
        params.append(
            table(
                "link_capacity", ["Places", "Places"], capacity, f"most {unit} each {link} carries", default=0
            )
        )
        link_limit = (
            "flow[i, j] <= link_capacity[i, j] * build[i, j]"
            if level >= 4
            else "flow[i, j] <= link_capacity[i, j]"
        )
        cons.append(
            constraint(
                "capacity",
                "flow[i, j] <= link_capacity[i, j]",
                f"each {link} has a capacity",
                [("i", "Places"), ("j", "Places")],
                where=on_link,
            )
        )
        if level >= 4:
            optional = rng.sample([arc for arc in arcs if arc not in backbone], 3)
            fee: dict[str, dict[str, int | float]] = {}
            for a, b in optional:
                fee.setdefault(a, {})[b] = step_value(rng, 100, 500, 50)
            params.append(
                table(
                    "build_cost",
                    ["Places", "Places"],
                    fee,
                    f"fixed cost to build each new {link} (listed only; others exist already)",
                    default=0,
                )
            )
            variables.append(
                variable("build", f"whether each new {link} is built", ["Places", "Places"], "binary")
            )
            objective += (
                " + sum(build_cost[i, j] * build[i, j] for i in Places for j in Places"
                " if build_cost[i, j] > 0)"
            )
            cons.append(
                constraint(
                    "build_first",
                    link_limit,
                    f"a new {link} carries nothing unless built",
                    [("i", "Places"), ("j", "Places")],
                    where="build_cost[i, j] > 0",
                )
            )
    elif variant == "infeasible":
        # Every link into the destination is turned around: nothing can arrive there.
        for a in [a for a in cost if sinks[0] in cost[a]]:
            price = cost[a].pop(sinks[0])
            cost.setdefault(sinks[0], {}).setdefault(a, price)
        params[0] = table(
            "link_cost",
            ["Places", "Places"],
            {a: c for a, c in cost.items() if c},
            params[0].description,
            default=0,
        )
    if level >= 3:
        transfer = [n for n in nodes if n not in sources and n not in sinks]
        limits = {n: round_up(rng.uniform(0.6, 1.0) * total + 10, 5) for n in rng.sample(transfer, 2)}
        if variant == "feasible" and not _routable(arcs, capacity, limits, supply, demand):
            limits = dict.fromkeys(limits, round_up(total, 5))  # the backbone alone then carries everything
        params.append(
            table(
                "throughput",
                ["Places"],
                limits,
                f"most {unit} a transfer point can handle (listed only)",
                default=0,
            )
        )
        cons.append(
            constraint(
                "transfer_limit",
                "sum(flow[j, i] for j in Places if link_cost[j, i] > 0) <= throughput[i]",
                "limited handling at transfer points",
                [("i", "Places")],
                where="throughput[i] > 0",
            )
        )
    f = formulation(
        "network_flow",
        f"Routing for {theme.domain}",
        sets,
        params,
        variables,
        ("minimize", objective, "total cost ($)"),
        cons,
    )
    return theme.domain, f


def _routable(
    arcs: list[tuple[str, str]],
    capacity: dict[str, dict[str, int | float]],
    limits: dict[str, int | float],
    supply: dict[str, int | float],
    demand: dict[str, int | float],
) -> bool:
    """Max flow with node limits (each limited place split into in/out halves) covers all demand."""
    graph = nx.DiGraph()

    def entry(n: str) -> str:
        return f"{n}/in" if n in limits else n

    for n, limit in limits.items():
        graph.add_edge(f"{n}/in", n, capacity=limit)
    for a, b in arcs:
        graph.add_edge(a, entry(b), capacity=capacity[a][b])
    for s, amount in supply.items():
        graph.add_edge("origin*", s, capacity=amount)
    for d, amount in demand.items():
        graph.add_edge(d, "destination*", capacity=amount)
    value, _ = nx.maximum_flow(graph, "origin*", "destination*")
    return value >= sum(demand.values()) - 1e-9


NETWORK_FLOW = Family(
    "network_flow",
    "Network flow / shortest path",
    NETWORK_KNOB,
    frozenset({"feasible", "infeasible"}),
    _network,
)
