"""Planning over time: lot sizing, staff scheduling (shift covering), multi-period inventory."""

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
    rename_set,
    round_down,
    round_up,
    scalar,
    step_value,
    table,
    variable,
)
from solvers.ir import Formulation

LOT_THEMES = (
    Theme("a brewery planning batches of a seasonal beer", {}, {"period": "week", "unit": "kegs"}),
    Theme("a factory making an engine component", {}, {"period": "month", "unit": "components"}),
    Theme("a print shop producing a yearly catalog", {}, {"period": "week", "unit": "boxes of catalogs"}),
    Theme("a bakery supplying holiday cakes to cafes", {}, {"period": "day", "unit": "cakes"}),
)
LOT_KNOB = (
    "3 periods: production cost per period, holding cost, capacity, inventory balance (LP)",
    "4 periods: a setup cost and a yes/no setup per period (capacity x setup as big-M)",
    "5 periods, whole units, starting stock",
    "6 periods, a storage limit",
    "8 periods, a minimum lot size when producing",
)


def _lot_sizing(rng: random.Random, level: int, variant: Variant) -> tuple[str, Formulation]:
    theme = pick_theme(rng, LOT_THEMES)
    period, unit = theme.word("period"), theme.word("unit")
    periods = list(range(1, by_level(level, (3, 4, 5, 6, 8)) + 1))
    demand = {t: step_value(rng, 20, 100, 5) for t in periods}
    # Capacity covers each period's own demand, so producing just in time is always feasible.
    capacity = {t: round_up(demand[t] * rng.uniform(1.2, 2.0), 5) for t in periods}
    if variant == "infeasible":
        # Every period's capacity is short of its demand, so cumulative demand can never be met.
        capacity = {t: round_down(demand[t] * 0.8, 5) for t in periods}
    cost = {t: step_value(rng, 5, 15, 0.5) for t in periods}
    domain = integer_domain(level)
    sets = [index_set("Periods", periods, f"the {period}s of the plan, in order")]
    params = [
        table("demand", ["Periods"], demand, f"{unit} needed in each {period}"),
        table("capacity", ["Periods"], capacity, f"most {unit} that can be made in each {period}"),
        table("unit_cost", ["Periods"], cost, f"cost to make one of the {unit} in each {period} ($)"),
        scalar(
            "holding_cost",
            step_value(rng, 0.5, 3.0, 0.5),
            f"cost of keeping one of the {unit} in stock to the next {period} ($)",
        ),
    ]
    variables = [
        variable("produce", f"{unit} made in each {period}", ["Periods"], domain),
        variable("stock", f"{unit} left in stock at the end of each {period}", ["Periods"], domain),
    ]
    start = "initial_stock + " if level >= 3 else ""
    if level >= 3:
        params.append(
            scalar("initial_stock", step_value(rng, 5, 20, 5), f"{unit} in stock before the first {period}")
        )
    cons = [
        constraint(
            "first_balance",
            f"stock[1] == {start}produce[1] - demand[1]",
            f"stock at the end of the first {period} = {start and 'starting stock + '}production - demand",
        ),
        constraint(
            "balance",
            "stock[t] == stock[t - 1] + produce[t] - demand[t]",
            f"stock at the end of each later {period} = previous stock + production - demand",
            [("t", "Periods")],
            where="t > 1",
        ),
    ]
    objective = "sum(unit_cost[t] * produce[t] + holding_cost * stock[t] for t in Periods)"
    if level >= 2:
        setup = {t: step_value(rng, 50, 300, 25) for t in periods}
        params.append(
            table("setup_cost", ["Periods"], setup, f"cost of setting up production in a {period} ($)")
        )
        variables.append(
            variable("setup", f"whether production is set up in each {period}", ["Periods"], "binary")
        )
        objective = (
            "sum(unit_cost[t] * produce[t] + holding_cost * stock[t] + setup_cost[t] * setup[t]"
            " for t in Periods)"
        )
        cons.append(
            constraint(
                "capacity_if_setup",
                "produce[t] <= capacity[t] * setup[t]",
                f"production only in a set-up {period}, up to capacity",
                [("t", "Periods")],
            )
        )
    else:
        cons.append(
            constraint(
                "capacity_limit",
                "produce[t] <= capacity[t]",
                f"capacity of each {period}",
                [("t", "Periods")],
            )
        )
    if level >= 4:
        params.append(
            scalar(
                "max_stock",
                round_up(max(demand.values()) * rng.uniform(0.8, 1.5), 5),
                f"most {unit} that can be stored",
            )
        )
        cons.append(
            constraint("storage_limit", "stock[t] <= max_stock", "limited storage", [("t", "Periods")])
        )
    if level >= 5:
        params.append(
            scalar(
                "min_lot",
                round_down(min(demand.values()) * rng.uniform(0.5, 1.0), 5),
                f"smallest production run worth setting up, in {unit}",
            )
        )
        cons.append(
            constraint(
                "min_lot_size",
                "produce[t] >= min_lot * setup[t]",
                "a set-up run makes at least the minimum",
                [("t", "Periods")],
            )
        )
    f = formulation(
        "lot_sizing",
        f"Lot sizing for {theme.domain}",
        sets,
        params,
        variables,
        # Only levels with set-ups may name them: the goal line is data a story must not invent.
        ("minimize", objective, f"total production{', setup' if level >= 2 else ''} and holding cost ($)"),
        cons,
    )
    return theme.domain, rename_set(f, "Periods", period.capitalize() + "s")


SHIFT_THEMES = (
    Theme("a hospital ward scheduling nurses", {}, {"staff": "nurses"}),
    Theme("a call center scheduling agents", {}, {"staff": "agents"}),
    Theme("a restaurant scheduling servers", {}, {"staff": "servers"}),
    Theme("a museum scheduling security guards", {}, {"staff": "guards"}),
)
BLOCKS = ("early morning", "late morning", "midday", "afternoon", "evening", "night")
SHIFT_NAMES = ("Dawn shift", "Day shift", "Split shift", "Swing shift", "Late shift", "Night shift")
SHIFT_KNOB = (
    "3 shifts over 4 time blocks, whole staff, cover each block's need",
    "4 shifts, limited staff per shift",
    "4 shifts over 5 blocks, a cap on total headcount",
    "5 shifts over 6 blocks: a fixed cost to run a shift (yes/no, staff limit x run as big-M)",
    "6 shifts over 6 blocks, a minimum crew for a running shift",
)


def _shifts(rng: random.Random, level: int, variant: Variant) -> tuple[str, Formulation]:
    theme = pick_theme(rng, SHIFT_THEMES)
    staff = theme.word("staff")
    blocks = list(BLOCKS[: by_level(level, (4, 4, 5, 6, 6))])
    n_shifts = by_level(level, (3, 4, 4, 5, 6))
    names = list(SHIFT_NAMES[:n_shifts])
    # Shifts are windows of 2-3 consecutive blocks; the first and last start at the ends, so every
    # block is covered by at least one shift.
    covers: dict[str, dict[str, int]] = {}
    starts = [0, len(blocks) - 2, *[rng.randrange(len(blocks) - 1) for _ in range(n_shifts - 2)]]
    for name, begin in zip(names, sorted(starts), strict=True):
        length = min(rng.choice((2, 3)), len(blocks) - begin)
        covers[name] = {blocks[k]: 1 for k in range(begin, begin + length)}
    for k, block in enumerate(blocks):  # any gap left by the random starts is closed by the nearest shift
        if not any(block in c for c in covers.values()):
            nearest = min(names, key=lambda n: min(abs(blocks.index(b) - k) for b in covers[n]))
            covers[nearest][block] = 1
    crew = {s: rng.randint(2, 8) for s in names}
    on_duty = {b: sum(crew[s] for s in names if b in covers[s]) for b in blocks}
    need = {b: max(1, round(on_duty[b] * rng.uniform(0.7, 1.0))) for b in blocks}
    wage = {s: step_value(rng, 80, 200, 10) for s in names}
    available = {s: crew[s] + rng.randint(0, 4) for s in names}
    if variant == "infeasible":
        # One block needs more than all the shifts covering it can ever supply.
        b = rng.choice(blocks)
        need[b] = sum(available[s] for s in names if b in covers[s]) + rng.randint(1, 4)
    sets = [
        index_set("Shifts", names, "shifts that can be staffed"),
        index_set("Blocks", blocks, "time blocks of the day"),
    ]
    params = [
        table(
            "covers",
            ["Shifts", "Blocks"],
            covers,
            "time blocks each shift works (listed blocks only)",
            default=0,
        ),
        table("need", ["Blocks"], need, f"{staff} needed on duty in each block"),
        table("wage", ["Shifts"], wage, f"pay for one of the {staff} working each shift ($)"),
    ]
    variables = [variable("staff", f"{staff} assigned to each shift", ["Shifts"], "integer")]
    cons = [
        constraint(
            "cover_need",
            "sum(covers[s, b] * staff[s] for s in Shifts) >= need[b]",
            f"enough {staff} on duty in every block",
            [("b", "Blocks")],
        )
    ]
    objective = "sum(wage[s] * staff[s] for s in Shifts)"
    if level >= 2 or variant == "infeasible":
        params.append(table("max_staff", ["Shifts"], available, f"most {staff} available for each shift"))
        link = "staff[s] <= max_staff[s] * run[s]" if level >= 4 else "staff[s] <= max_staff[s]"
        cons.append(constraint("availability", link, f"limited {staff} per shift", [("s", "Shifts")]))
    if level >= 3:
        params.append(
            scalar("max_total", sum(crew.values()) + rng.randint(2, 6), f"most {staff} on the payroll")
        )
        cons.append(
            constraint("headcount", "sum(staff[s] for s in Shifts) <= max_total", "limited total headcount")
        )
    if level >= 4:
        params.append(
            table(
                "run_cost",
                ["Shifts"],
                {s: step_value(rng, 100, 400, 50) for s in names},
                "fixed cost of running each shift at all, e.g. a supervisor ($)",
            )
        )
        variables.append(variable("run", "whether each shift runs", ["Shifts"], "binary"))
        objective += " + sum(run_cost[s] * run[s] for s in Shifts)"
    if level >= 5:
        params.append(scalar("min_crew", min(crew.values()), f"fewest {staff} a running shift may have"))
        cons.append(
            constraint(
                "minimum_crew",
                "staff[s] >= min_crew * run[s]",
                "a running shift has a minimum crew",
                [("s", "Shifts")],
            )
        )
    f = formulation(
        "staff_scheduling",
        f"Shift staffing for {theme.domain}",
        sets,
        params,
        variables,
        ("minimize", objective, "total daily staffing cost ($)"),
        cons,
    )
    return theme.domain, f


INVENTORY_THEMES = (
    Theme(
        "a toy maker planning production before the holidays",
        {"products": ("Puzzles", "Robots", "Dolls", "Kites")},
        {"period": "month"},
    ),
    Theme(
        "a bicycle company planning quarterly output",
        {"products": ("Road bikes", "Mountain bikes", "City bikes", "Kids bikes")},
        {"period": "quarter"},
    ),
    Theme(
        "an apparel maker planning seasonal lines",
        {"products": ("Jackets", "Sweaters", "Scarves", "Gloves")},
        {"period": "month"},
    ),
)
INVENTORY_KNOB = (
    "1 product x 3 periods: production and holding costs, machine-hour capacity, inventory balance",
    "2 products x 3 periods sharing the capacity",
    "2 x 4, whole units, a warehouse space limit",
    "3 x 4, overtime hours at extra cost up to a limit",
    "3 x 5, backorders allowed at a penalty, cleared by the last period",
)


def _inventory(rng: random.Random, level: int, variant: Variant) -> tuple[str, Formulation]:
    theme = pick_theme(rng, INVENTORY_THEMES)
    period = theme.word("period")
    products = theme.names(rng, "products", by_level(level, (1, 2, 2, 3, 3)))
    periods = list(range(1, by_level(level, (3, 3, 4, 4, 5)) + 1))
    last = periods[-1]
    demand = {p: {t: step_value(rng, 20, 150, 10) for t in periods} for p in products}
    hours = {p: step_value(rng, 0.5, 3.0, 0.5) for p in products}
    needed = {t: sum(hours[p] * demand[p][t] for p in products) for t in periods}
    # Regular hours cover each period's own needs: making just in time is feasible.
    capacity = {t: round_up(needed[t] * rng.uniform(1.05, 1.5), 10) for t in periods}
    overtime_limit = round_up(max(needed.values()) * 0.2, 10)
    if variant == "infeasible":
        # Every period is short even with overtime, so total hours cannot cover total demand.
        capacity = {t: round_down(needed[t] * 0.7, 10) for t in periods}
        overtime_limit = round_down(min(needed.values()) * 0.05, 5)
    backorders = level >= 5
    sets = [
        index_set("Products", products, "products made"),
        index_set("Periods", periods, f"{period}s of the plan, in order"),
    ]
    params = [
        table("demand", ["Products", "Periods"], demand, f"units of each product ordered in each {period}"),
        table(
            "make_cost",
            ["Products"],
            {p: step_value(rng, 5, 40) for p in products},
            "cost to make one unit ($)",
        ),
        table(
            "hold_cost",
            ["Products"],
            {p: step_value(rng, 0.5, 4, 0.5) for p in products},
            f"cost to keep one unit in stock for a {period} ($)",
        ),
        table("hours", ["Products"], hours, "machine hours to make one unit"),
        table("capacity", ["Periods"], capacity, f"regular machine hours in each {period}"),
    ]
    domain = integer_domain(level)
    variables = [
        variable("make", f"units of each product made in each {period}", ["Products", "Periods"], domain),
        variable(
            "stock",
            f"units of each product in stock at the end of each {period}",
            ["Products", "Periods"],
            domain,
        ),
    ]
    flow_in = "make[p, t] - demand[p, t]"
    if backorders:
        variables.append(
            variable(
                "backlog",
                f"units of each product owed to customers at the end of each {period}",
                ["Products", "Periods"],
                domain,
            )
        )
        cons = [
            constraint(
                "first_balance",
                f"stock[p, 1] - backlog[p, 1] == {flow_in.replace('t]', '1]')}",
                f"after the first {period}: stock - backlog = production - demand",
                [("p", "Products")],
            ),
            constraint(
                "balance",
                f"stock[p, t] - backlog[p, t] == stock[p, t - 1] - backlog[p, t - 1] + {flow_in}",
                f"after each later {period}: stock - backlog = previous stock - previous backlog"
                " + production "
                "- demand",
                [("p", "Products"), ("t", "Periods")],
                where="t > 1",
            ),
            constraint(
                "clear_backlog",
                f"backlog[p, {last}] == 0",
                f"everything owed is delivered by the last {period}",
                [("p", "Products")],
            ),
        ]
    else:
        cons = [
            constraint(
                "first_balance",
                f"stock[p, 1] == {flow_in.replace('t]', '1]')}",
                f"stock at the end of the first {period} = production - demand (no starting stock)",
                [("p", "Products")],
            ),
            constraint(
                "balance",
                f"stock[p, t] == stock[p, t - 1] + {flow_in}",
                f"stock at the end of each later {period} = previous stock + production - demand",
                [("p", "Products"), ("t", "Periods")],
                where="t > 1",
            ),
        ]
    objective = (
        "sum(make_cost[p] * make[p, t] + hold_cost[p] * stock[p, t] for p in Products for t in Periods)"
    )
    machine = "sum(hours[p] * make[p, t] for p in Products) <= capacity[t]"
    if level >= 4:
        params += [
            scalar("overtime_cost", step_value(rng, 10, 40, 5), "cost of one overtime machine hour ($)"),
            scalar("max_overtime", overtime_limit, f"most overtime hours in a {period}"),
        ]
        variables.append(variable("overtime", f"overtime machine hours in each {period}", ["Periods"]))
        machine = "sum(hours[p] * make[p, t] for p in Products) <= capacity[t] + overtime[t]"
        objective += " + sum(overtime_cost * overtime[t] for t in Periods)"
        cons.append(
            constraint(
                "overtime_limit", "overtime[t] <= max_overtime", "limited overtime", [("t", "Periods")]
            )
        )
    cons.append(
        constraint("machine_hours", machine, "machine hours used fit the hours available", [("t", "Periods")])
    )
    if level >= 3:
        space = {p: step_value(rng, 1, 4) for p in products}
        params += [
            table("space", ["Products"], space, "warehouse space one unit takes, in square meters"),
            scalar(
                "warehouse",
                round_up(sum(space[p] * max(demand[p].values()) for p in products) * 0.6, 10),
                "warehouse space available, in square meters",
            ),
        ]
        cons.append(
            constraint(
                "storage",
                "sum(space[p] * stock[p, t] for p in Products) <= warehouse",
                "stock fits in the warehouse",
                [("t", "Periods")],
            )
        )
    if backorders:
        params.append(
            table(
                "penalty",
                ["Products"],
                {p: step_value(rng, 2, 10) for p in products},
                f"penalty for each unit owed at the end of a {period} ($)",
            )
        )
        objective += " + sum(penalty[p] * backlog[p, t] for p in Products for t in Periods)"
    f = formulation(
        "multi_period_inventory",
        f"Production and inventory plan for {theme.domain}",
        sets,
        params,
        variables,
        ("minimize", objective, "total cost ($)"),
        cons,
    )
    return theme.domain, rename_set(f, "Periods", period.capitalize() + "s")


LOT_SIZING = Family("lot_sizing", "Lot sizing", LOT_KNOB, frozenset({"feasible", "infeasible"}), _lot_sizing)
STAFF_SCHEDULING = Family(
    "staff_scheduling",
    "Staff scheduling (shift covering)",
    SHIFT_KNOB,
    frozenset({"feasible", "infeasible"}),
    _shifts,
)
MULTI_PERIOD_INVENTORY = Family(
    "multi_period_inventory",
    "Multi-period inventory",
    INVENTORY_KNOB,
    frozenset({"feasible", "infeasible"}),
    _inventory,
)
