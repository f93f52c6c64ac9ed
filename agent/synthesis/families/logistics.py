"""Transportation, assignment and facility location: who serves whom, at what cost."""

from __future__ import annotations

import random

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
    scalar,
    step_value,
    table,
    variable,
)
from agent.synthesis.families.names import CITIES, NEIGHBORHOODS, PEOPLE, SITES
from solvers.ir import Formulation

TRANSPORT_THEMES = (
    Theme(
        "a beverage company shipping cases from plants to distribution centers",
        {"sources": CITIES[:10], "sinks": CITIES[10:]},
        {"source": "plant", "sink": "distribution center", "unit": "cases", "load": "truckloads of cases"},
    ),
    Theme(
        "a grain cooperative moving wheat from silos to mills",
        {"sources": CITIES[10:], "sinks": CITIES[:10]},
        {"source": "silo", "sink": "mill", "unit": "tons", "load": "railcar loads of wheat"},
    ),
    Theme(
        "a furniture retailer supplying stores from warehouses",
        {"sources": CITIES[5:15], "sinks": CITIES[:5] + CITIES[15:]},
        {"source": "warehouse", "sink": "store", "unit": "pieces", "load": "van loads"},
    ),
)
TRANSPORT_KNOB = (
    "2 sources x 3 destinations, supply and demand, continuous amounts",
    "3 x 3, capacity limits on some routes",
    "3 x 4, whole shipments",
    "4 x 4: a fixed fee for each route used (yes/no per route, linked with the source's supply as big-M)",
    "4 x 5, each destination served by at most a given number of sources",
)


def _split(rng: random.Random, total: int, parts: int, step: int = 5) -> list[int]:
    """`parts` positive multiples of `step` summing to `total` (itself a multiple of step)."""
    units = total // step
    cuts = sorted(rng.sample(range(1, units), parts - 1))
    return [(b - a) * step for a, b in zip([0, *cuts], [*cuts, units], strict=True)]


def _transportation(rng: random.Random, level: int, variant: Variant) -> tuple[str, Formulation]:
    theme = pick_theme(rng, TRANSPORT_THEMES)
    source, sink, unit = theme.word("source"), theme.word("sink"), theme.word("unit")
    plants = theme.names(rng, "sources", by_level(level, (2, 3, 3, 4, 4)))
    customers = theme.names(rng, "sinks", by_level(level, (3, 3, 4, 4, 5)))
    max_sources = 2
    demand = {c: step_value(rng, 20, 120, 5) for c in customers}
    # Reference shipments: each destination is served by one or two sources.
    flow = {p: {c: 0 for c in customers} for p in plants}
    for c in customers:
        servers = rng.sample(plants, rng.randint(1, max_sources))
        for p, amount in zip(
            servers, _split(rng, demand[c], len(servers)) if len(servers) > 1 else [demand[c]], strict=True
        ):
            flow[p][c] = amount
    load = {p: sum(flow[p].values()) for p in plants}
    supply = {p: round_up(load[p] * rng.uniform(1.1, 1.5) + 10, 10) for p in plants}
    if variant == "infeasible":
        # Total supply below total demand: some demand must go unmet.
        total = sum(demand.values())
        supply = {p: round_down(total * 0.85 / len(plants), 5) for p in plants}
    cost = {p: {c: step_value(rng, 2, 20, 0.5) for c in customers} for p in plants}
    domain = integer_domain(level)
    shipped = theme.word("load") if level >= 3 else unit
    sets = [
        index_set("Sources", plants, f"{source}s that ship"),
        index_set("Destinations", customers, f"{sink}s that must be supplied"),
    ]
    params = [
        table("supply", ["Sources"], supply, f"{shipped} each {source} can ship"),
        table("demand", ["Destinations"], demand, f"{shipped} each {sink} needs"),
        table(
            "cost",
            ["Sources", "Destinations"],
            cost,
            f"shipping cost per one of the {shipped} on each route ($)",
        ),
    ]
    variables = [variable("ship", f"{shipped} sent on each route", ["Sources", "Destinations"], domain)]
    cons = [
        constraint(
            "supply_limit",
            "sum(ship[p, c] for c in Destinations) <= supply[p]",
            f"a {source} cannot ship more than its supply",
            [("p", "Sources")],
        ),
        constraint(
            "meet_demand",
            "sum(ship[p, c] for p in Sources) >= demand[c]",
            f"every {sink} gets what it needs",
            [("c", "Destinations")],
        ),
    ]
    objective = "sum(cost[p, c] * ship[p, c] for p in Sources for c in Destinations)"
    if level >= 2:
        routes = [(p, c) for p in plants for c in customers]
        capped = rng.sample(routes, min(3, len(routes)))
        caps: dict[str, dict[str, int | float]] = {}
        for p, c in capped:
            caps.setdefault(p, {})[c] = round_up(flow[p][c] * rng.uniform(1.1, 1.5) + 5, 5)
        params.append(
            table(
                "route_cap",
                ["Sources", "Destinations"],
                caps,
                "most that can move on a limited route (routes not listed have no limit)",
                default=0,
            )
        )
        cons.append(
            constraint(
                "route_limit",
                "ship[p, c] <= route_cap[p, c]",
                "limited routes",
                [("p", "Sources"), ("c", "Destinations")],
                where="route_cap[p, c] > 0",
            )
        )
    if level >= 4:
        params.append(
            scalar("route_fee", step_value(rng, 50, 300, 25), "fixed fee for using a route at all ($)")
        )
        variables.append(variable("use", "whether each route is used", ["Sources", "Destinations"], "binary"))
        objective += " + sum(route_fee * use[p, c] for p in Sources for c in Destinations)"
        cons.append(
            constraint(
                "use_link",
                "ship[p, c] <= supply[p] * use[p, c]",
                "only used routes carry goods",
                [("p", "Sources"), ("c", "Destinations")],
            )
        )
    if level >= 5:
        params.append(scalar("max_sources", max_sources, f"most {source}s that may serve one {sink}"))
        cons.append(
            constraint(
                "source_limit",
                "sum(use[p, c] for p in Sources) <= max_sources",
                f"each {sink} deals with few {source}s",
                [("c", "Destinations")],
            )
        )
    f = formulation(
        "transportation",
        f"Shipping plan for {theme.domain}",
        sets,
        params,
        variables,
        ("minimize", objective, "total cost ($)"),
        cons,
    )
    return theme.domain, f


ASSIGN_THEMES = (
    Theme(
        "a construction firm assigning workers to jobs",
        {
            "agents": PEOPLE,
            "tasks": (
                "Welding",
                "Painting",
                "Wiring",
                "Plumbing",
                "Framing",
                "Roofing",
                "Tiling",
                "Inspection",
                "Drywall",
                "Glazing",
            ),
        },
        {"agent": "worker", "task": "job"},
    ),
    Theme(
        "a consulting company staffing client projects",
        {
            "agents": PEOPLE,
            "tasks": (
                "Audit",
                "Pricing study",
                "Supply review",
                "Market survey",
                "IT upgrade",
                "Training",
                "Merger review",
                "Tax plan",
                "Cost study",
            ),
        },
        {"agent": "consultant", "task": "project"},
    ),
    Theme(
        "a print shop scheduling jobs on machines",
        {
            "agents": ("Heidel", "Komori", "Ryobi", "Xerox", "Canon", "Ricoh", "Epson"),
            "tasks": (
                "Brochures",
                "Posters",
                "Menus",
                "Flyers",
                "Catalogs",
                "Labels",
                "Banners",
                "Invitations",
                "Calendars",
            ),
        },
        {"agent": "machine", "task": "job"},
    ),
)
ASSIGN_KNOB = (
    "3 agents x 3 tasks, one task each, binary",
    "4 x 4, some pairs not allowed",
    "5 agents x 4 tasks, not every agent is used",
    "4 agents x 6 tasks with task hours and agent hour limits (generalized assignment)",
    "5 x 7, cost = hourly rate x task hours, every agent gets at least one task",
)


def _assignment(rng: random.Random, level: int, variant: Variant) -> tuple[str, Formulation]:
    theme = pick_theme(rng, ASSIGN_THEMES)
    agent, task = theme.word("agent"), theme.word("task")
    n_agents, n_tasks = by_level(level, (3, 4, 5, 4, 5)), by_level(level, (3, 4, 4, 6, 7))
    one_each = level <= 3
    if variant == "infeasible" and one_each:
        n_agents = n_tasks - 1  # fewer agents than tasks while each takes one task at most
    agents = theme.names(rng, "agents", n_agents)
    tasks = theme.names(rng, "tasks", n_tasks)
    # Reference assignment: tasks dealt to agents so that every agent gets one (as far as tasks go).
    order = rng.sample(tasks, len(tasks))
    owner = {t: agents[k % len(agents)] for k, t in enumerate(order)}
    sets = [index_set("Agents", agents, f"{agent}s"), index_set("Tasks", tasks, f"{task}s to cover")]
    params = []
    cons = [
        constraint(
            "cover_task",
            "sum(assign[a, t] for a in Agents) == 1",
            f"every {task} gets exactly one {agent}",
            [("t", "Tasks")],
        )
    ]
    if level <= 4:
        cost = {a: {t: step_value(rng, 10, 60) for t in tasks} for a in agents}
        params.append(
            table("cost", ["Agents", "Tasks"], cost, f"cost of giving each {task} to each {agent} ($)")
        )
        objective = "sum(cost[a, t] * assign[a, t] for a in Agents for t in Tasks)"
    else:
        rate = {a: step_value(rng, 20, 60, 5) for a in agents}
        params.append(table("rate", ["Agents"], rate, f"hourly rate of each {agent} ($ per hour)"))
        objective = "sum(rate[a] * hours[t] * assign[a, t] for a in Agents for t in Tasks)"
    if one_each:
        cons.append(
            constraint(
                "one_task",
                "sum(assign[a, t] for t in Tasks) <= 1",
                f"an {agent} takes at most one {task}",
                [("a", "Agents")],
            )
        )
    else:
        hours = {t: step_value(rng, 2, 12) for t in tasks}
        load = {a: sum(hours[t] for t in tasks if owner[t] == a) for a in agents}
        capacity = {a: load[a] + rng.randint(2, 10) for a in agents}
        if variant == "infeasible":
            # Total capacity below total hours: the tasks cannot all be covered.
            total = sum(hours.values())
            capacity = {a: max(1, int(total * 0.8 / len(agents))) for a in agents}
        params += [
            table("hours", ["Tasks"], hours, f"hours each {task} takes"),
            table("capacity", ["Agents"], capacity, f"hours each {agent} has available"),
        ]
        cons.append(
            constraint(
                "hour_limit",
                "sum(hours[t] * assign[a, t] for t in Tasks) <= capacity[a]",
                f"an {agent}'s {task}s fit in their hours",
                [("a", "Agents")],
            )
        )
    if level >= 2:
        forbidden: dict[str, dict[str, int]] = {}
        pairs = [(a, t) for a in agents for t in tasks if owner.get(t) != a]
        for a, t in rng.sample(pairs, min(len(pairs), by_level(level, (0, 3, 4, 4, 5)))):
            forbidden.setdefault(a, {})[t] = 1
        params.append(
            table(
                "not_allowed",
                ["Agents", "Tasks"],
                forbidden,
                f"pairs where the {agent} cannot do the {task} (listed pairs only)",
                default=0,
            )
        )
        cons.append(
            constraint(
                "respect_skills",
                "assign[a, t] == 0",
                f"an {agent} only does {task}s they can do",
                [("a", "Agents"), ("t", "Tasks")],
                where="not_allowed[a, t] > 0",
            )
        )
    if level >= 5:
        cons.append(
            constraint(
                "everyone_works",
                "sum(assign[a, t] for t in Tasks) >= 1",
                f"every {agent} gets at least one {task}",
                [("a", "Agents")],
            )
        )
    f = formulation(
        "assignment",
        f"Assignment for {theme.domain}",
        sets,
        params,
        [variable("assign", f"whether each {agent} does each {task}", ["Agents", "Tasks"], "binary")],
        ("minimize", objective, "total cost ($)"),
        cons,
    )
    return theme.domain, f


FACILITY_THEMES = (
    Theme(
        "a retailer choosing which warehouses to open",
        {"sites": CITIES, "customers": NEIGHBORHOODS},
        {"site": "warehouse", "customer": "store region", "unit": "pallets"},
    ),
    Theme(
        "a health authority choosing clinic locations",
        {"sites": SITES, "customers": NEIGHBORHOODS},
        {"site": "clinic", "customer": "neighborhood", "unit": "patient visits"},
    ),
    Theme(
        "a cloud provider choosing data center sites",
        {
            "sites": CITIES,
            "customers": (
                "North region",
                "South region",
                "East region",
                "West region",
                "Central region",
                "Coastal region",
                "Mountain region",
                "Lake region",
            ),
        },
        {"site": "data center", "customer": "customer region", "unit": "server racks of load"},
    ),
)
FACILITY_KNOB = (
    "2 candidate sites x 3 customers: open (yes/no) with fixed cost; capacity only if open (big-M)",
    "3 x 4",
    "3 x 4, at most a given number of sites open",
    "4 x 5, each customer served by exactly one site (single sourcing, all binary)",
    "4 x 6, an open site must handle a minimum throughput",
)


def _facility(rng: random.Random, level: int, variant: Variant) -> tuple[str, Formulation]:
    theme = pick_theme(rng, FACILITY_THEMES)
    site, customer, unit = theme.word("site"), theme.word("customer"), theme.word("unit")
    sites = theme.names(rng, "sites", by_level(level, (2, 3, 3, 4, 4)))
    customers = theme.names(rng, "customers", by_level(level, (3, 4, 4, 5, 6)))
    demand = {c: step_value(rng, 10, 80, 5) for c in customers}
    open_count = max(1, len(sites) - 1)
    opened = rng.sample(sites, open_count)
    owner = {c: rng.choice(opened) for c in customers}
    load = {s: sum(demand[c] for c in customers if owner[c] == s) for s in sites}
    capacity = {s: round_up(max(load[s] * rng.uniform(1.1, 1.4), 40), 10) for s in sites}
    if variant == "infeasible":
        # Even with every site open the total capacity is below the total demand.
        total = sum(demand.values())
        capacity = {s: round_down(total * 0.85 / len(sites), 5) for s in sites}
    fixed = {s: step_value(rng, 200, 1000, 50) for s in sites}
    cost = {s: {c: step_value(rng, 1, 12, 0.5) for c in customers} for s in sites}
    single = level >= 4
    sets = [
        index_set("Sites", sites, f"candidate {site} locations"),
        index_set("Customers", customers, f"{customer}s to serve"),
    ]
    params = [
        table("fixed_cost", ["Sites"], fixed, f"cost of opening each {site} ($)"),
        table("capacity", ["Sites"], capacity, f"{unit} each {site} can handle if open"),
        table("demand", ["Customers"], demand, f"{unit} each {customer} needs"),
        table(
            "serve_cost",
            ["Sites", "Customers"],
            cost,
            f"cost per one of the {unit} served from each {site} ($)",
        ),
    ]
    variables = [variable("open", f"whether each {site} is opened", ["Sites"], "binary")]
    if single:
        variables.append(
            variable(
                "serve", f"whether each {customer} is served by each {site}", ["Sites", "Customers"], "binary"
            )
        )
        flow = "demand[c] * serve[s, c]"
        cons = [
            constraint(
                "one_site",
                "sum(serve[s, c] for s in Sites) == 1",
                f"each {customer} is served by exactly one {site}",
                [("c", "Customers")],
            )
        ]
    else:
        variables.append(
            variable("flow", f"{unit} sent from each {site} to each {customer}", ["Sites", "Customers"])
        )
        flow = "flow[s, c]"
        cons = [
            constraint(
                "meet_demand",
                "sum(flow[s, c] for s in Sites) >= demand[c]",
                f"each {customer}'s demand is met",
                [("c", "Customers")],
            )
        ]
    cons.append(
        constraint(
            "capacity_if_open",
            f"sum({flow} for c in Customers) <= capacity[s] * open[s]",
            f"only an open {site} serves, up to its capacity",
            [("s", "Sites")],
        )
    )
    if level >= 3:
        params.append(scalar("max_open", open_count, f"most {site}s that may be opened"))
        cons.append(
            constraint("open_limit", "sum(open[s] for s in Sites) <= max_open", f"limited number of {site}s")
        )
    if level >= 5:
        least = {s: max(5, round_down(min(load[s], capacity[s]) * rng.uniform(0.3, 0.7), 5)) for s in sites}
        params.append(table("min_load", ["Sites"], least, f"{unit} an open {site} must handle at least"))
        cons.append(
            constraint(
                "min_throughput",
                f"sum({flow} for c in Customers) >= min_load[s] * open[s]",
                f"an open {site} handles at least its minimum",
                [("s", "Sites")],
            )
        )
    objective = (
        "sum(fixed_cost[s] * open[s] for s in Sites)"
        f" + sum(serve_cost[s, c] * {flow} for s in Sites for c in Customers)"
    )
    f = formulation(
        "facility_location",
        f"Facility location for {theme.domain}",
        sets,
        params,
        variables,
        ("minimize", objective, "total opening and serving cost ($)"),
        cons,
    )
    return theme.domain, f


TRANSPORTATION = Family(
    "transportation", "Transportation", TRANSPORT_KNOB, frozenset({"feasible", "infeasible"}), _transportation
)
ASSIGNMENT = Family(
    "assignment", "Assignment", ASSIGN_KNOB, frozenset({"feasible", "infeasible"}), _assignment
)
FACILITY_LOCATION = Family(
    "facility_location", "Facility location", FACILITY_KNOB, frozenset({"feasible", "infeasible"}), _facility
)
