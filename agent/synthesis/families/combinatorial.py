"""Selection and packing: knapsack, set cover, bin packing."""

from __future__ import annotations

import math
import random

from agent.synthesis.families.base import (
    Family,
    Theme,
    Variant,
    by_level,
    constraint,
    formulation,
    index_set,
    pick_theme,
    rename_set,
    scalar,
    step_value,
    table,
    variable,
)
from agent.synthesis.families.names import NEIGHBORHOODS, SITES
from solvers.ir import Formulation

KNAPSACK_THEMES = (
    Theme(
        "a hiker packing a backpack",
        {
            "items": (
                "Tent",
                "Stove",
                "Water filter",
                "Camera",
                "First aid kit",
                "Rope",
                "Lantern",
                "Sleeping bag",
                "Binoculars",
                "Hammock",
                "Rain jacket",
                "Fishing rod",
            )
        },
        {
            "value": "usefulness points",
            "weight": "weight in pounds",
            "volume": "volume in liters",
            "group": "kind of gear",
        },
    ),
    Theme(
        "a city council choosing projects for its budget",
        {
            "items": (
                "Bike lanes",
                "Library wing",
                "Park upgrade",
                "Street lights",
                "Bus shelters",
                "Pool repair",
                "Sports field",
                "Community garden",
                "Skate park",
                "Playground",
                "Town hall roof",
                "Wifi kiosks",
            )
        },
        {
            "value": "benefit score",
            "weight": "cost in thousands of dollars",
            "volume": "staff weeks",
            "group": "program area",
        },
    ),
    Theme(
        "an airline loading cargo onto a plane",
        {
            "items": (
                "Medicine crate",
                "Auto parts",
                "Textiles",
                "Electronics",
                "Mail bags",
                "Flowers",
                "Seafood",
                "Machinery",
                "Books",
                "Wine cases",
                "Furniture",
                "Toys",
            )
        },
        {
            "value": "revenue in hundreds of dollars",
            "weight": "weight in hundreds of kilograms",
            "volume": "volume in cubic meters",
            "group": "cargo class",
        },
    ),
)
KNAPSACK_KNOB = (
    "5 items, one capacity, take or leave (binary)",
    "6 items, a second capacity (volume)",
    "8 items, several copies of an item allowed up to a limit (integer)",
    "9 items, pairs of items that exclude each other: a yes/no choice per item linked to its copies (big-M)",
    "10 items, at least one item from each group",
)
GROUP_NAMES = ("essentials", "comfort", "extras")


def _knapsack(rng: random.Random, level: int, variant: Variant) -> tuple[str, Formulation]:
    theme = pick_theme(rng, KNAPSACK_THEMES)
    items = theme.names(rng, "items", by_level(level, (5, 6, 8, 9, 10)))
    weight = {i: step_value(rng, 2, 30) for i in items}
    volume = {i: step_value(rng, 1, 20) for i in items}
    value = {i: step_value(rng, 10, 100, 5) for i in items}
    copies = level >= 3
    chosen_link = level >= 4  # copies need a yes/no "chosen" per item once pairs exclude each other
    member: dict[str, dict[str, int]] = {g: {} for g in GROUP_NAMES}
    for k, i in enumerate(rng.sample(items, len(items))):
        member[GROUP_NAMES[k % len(GROUP_NAMES)]][i] = 1
    # With groups (level 5), one copy of the lightest item of each group is the reference choice:
    # it must fit both capacities and those items must not exclude each other.
    protected = [min(member[g], key=lambda i: weight[i]) for g in GROUP_NAMES] if level >= 5 else []
    capacity = max(
        math.floor(sum(weight.values()) * rng.uniform(0.4, 0.6)), sum(weight[i] for i in protected)
    )
    space = max(math.floor(sum(volume.values()) * rng.uniform(0.4, 0.6)), sum(volume[i] for i in protected))
    sets = [index_set("Items", items, "candidates to take")]
    params = [
        table("value", ["Items"], value, f"{theme.word('value')} of each item"),
        table("weight", ["Items"], weight, f"{theme.word('weight')} of each item"),
        scalar("capacity", capacity, f"total {theme.word('weight')} allowed"),
    ]
    variables = [
        variable(
            "take",
            "copies of each item to take" if copies else "whether to take each item",
            ["Items"],
            "integer" if copies else "binary",
        )
    ]
    cons = [
        constraint(
            "weight_limit", "sum(weight[i] * take[i] for i in Items) <= capacity", "total weight limit"
        )
    ]
    if level >= 2:
        params += [
            table("volume", ["Items"], volume, f"{theme.word('volume')} of each item"),
            scalar("space", space, f"total {theme.word('volume')} available"),
        ]
        cons.append(
            constraint(
                "volume_limit", "sum(volume[i] * take[i] for i in Items) <= space", "total volume limit"
            )
        )
    if copies:
        params.append(
            table("max_copies", ["Items"], {i: rng.randint(2, 3) for i in items}, "most copies of each item")
        )
        limit = "take[i] <= max_copies[i] * chosen[i]" if chosen_link else "take[i] <= max_copies[i]"
        cons.append(constraint("copy_limit", limit, "limited copies", [("i", "Items")]))
    if chosen_link:
        variables.append(variable("chosen", "whether each item is taken at all", ["Items"], "binary"))
        conflicts: dict[str, dict[str, int]] = {}
        pairs = [(a, b) for a in items for b in items if a < b and not (a in protected and b in protected)]
        for a, b in rng.sample(pairs, 3):
            conflicts.setdefault(a, {})[b] = 1
        params.append(
            table(
                "excludes",
                ["Items", "Items"],
                conflicts,
                "pairs of items that cannot both be taken (listed pairs only)",
                default=0,
            )
        )
        cons.append(
            constraint(
                "exclusion",
                "chosen[i] + chosen[j] <= 1",
                "excluded pairs",
                [("i", "Items"), ("j", "Items")],
                where="excludes[i, j] > 0",
            )
        )
    if level >= 5:
        sets.append(index_set("Groups", list(GROUP_NAMES), theme.word("group") + "s"))
        params.append(
            table(
                "in_group",
                ["Groups", "Items"],
                member,
                "which items belong to each group (listed only)",
                default=0,
            )
        )
        cons.append(
            constraint(
                "one_per_group",
                "sum(in_group[g, i] * chosen[i] for i in Items) >= 1",
                "at least one item from every group",
                [("g", "Groups")],
            )
        )
    if variant == "infeasible":
        # The heaviest items, which must all be taken, weigh more than the capacity together.
        heavy = sorted(items, key=lambda i: -weight[i])
        must: list[str] = []
        while sum(weight[i] for i in must) <= capacity:
            must.append(heavy[len(must)])
        params.append(
            table(
                "required",
                ["Items"],
                dict.fromkeys(must, 1),
                "items that must be taken (listed only)",
                default=0,
            )
        )
        cons.append(
            constraint(
                "must_take",
                "take[i] >= 1",
                "required items are taken",
                [("i", "Items")],
                where="required[i] > 0",
            )
        )
    f = formulation(
        "knapsack",
        f"Selection for {theme.domain}",
        sets,
        params,
        variables,
        ("maximize", "sum(value[i] * take[i] for i in Items)", f"total {theme.word('value')}"),
        cons,
    )
    return theme.domain, f


COVER_THEMES = (
    Theme(
        "a city placing fire stations",
        {"sites": SITES, "areas": NEIGHBORHOODS},
        {"site": "fire station", "area": "neighborhood"},
    ),
    Theme(
        "a telecom company placing cell towers",
        {"sites": SITES, "areas": NEIGHBORHOODS},
        {"site": "cell tower", "area": "district"},
    ),
    Theme(
        "a county placing ambulance bases",
        {"sites": SITES, "areas": NEIGHBORHOODS},
        {"site": "ambulance base", "area": "town"},
    ),
)
COVER_KNOB = (
    "4 candidate sites, 5 areas, every area covered at least once (binary)",
    "5 sites, 7 areas",
    "6 sites, 8 areas, some areas need two covering sites",
    "7 sites, 9 areas, pairs of sites that cannot both be built",
    "9 sites, 12 areas, at most a given number of sites; an area may be left short of coverage at a "
    "penalty (binary sites linked with a continuous shortfall)",
)


def _set_cover(rng: random.Random, level: int, variant: Variant) -> tuple[str, Formulation]:
    theme = pick_theme(rng, COVER_THEMES)
    site, area = theme.word("site"), theme.word("area")
    sites = theme.names(rng, "sites", by_level(level, (4, 5, 6, 7, 9)))
    areas = theme.names(rng, "areas", by_level(level, (5, 7, 8, 9, 12)))
    multi = level >= 3 or variant == "infeasible"
    need = {a: (rng.choice((1, 2)) if level >= 3 else 1) for a in areas}
    chosen = rng.sample(sites, max(2, len(sites) // 2))
    covers: dict[str, dict[str, int]] = {s: {} for s in sites}
    for a in areas:  # the chosen sites cover every area as often as it needs
        for s in rng.sample(chosen, need[a]):
            covers[s][a] = 1
    for s in sites:  # plus random extra coverage, so other choices compete
        for a in rng.sample(areas, rng.randint(1, 3)):
            covers[s][a] = 1
    if variant == "infeasible":
        # One area needs more covering sites than there are sites that reach it.
        a = rng.choice(areas)
        need[a] = sum(1 for s in sites if covers[s].get(a)) + 1
    sets = [
        index_set("Sites", sites, f"candidate {site} locations"),
        index_set("Areas", areas, f"{area}s to cover"),
    ]
    params = [
        table(
            "build_cost",
            ["Sites"],
            {s: step_value(rng, 100, 900, 50) for s in sites},
            f"cost of each {site} ($ thousands)",
        ),
        table(
            "covers", ["Sites", "Areas"], covers, f"{area}s each {site} would cover (listed only)", default=0
        ),
    ]
    cons = []
    shortfall = level >= 5 and variant == "feasible"
    variables = [variable("build", f"whether to build each {site}", ["Sites"], "binary")]
    objective = "sum(build_cost[s] * build[s] for s in Sites)"
    if shortfall:
        params += [
            table("need", ["Areas"], need, f"how many {site}s should cover each {area}"),
            table(
                "penalty",
                ["Areas"],
                {a: step_value(rng, 50, 400, 25) for a in areas},
                f"penalty for each missing cover of an {area} ($ thousands)",
            ),
        ]
        variables.append(variable("short", f"covers each {area} is missing", ["Areas"]))
        objective += " + sum(penalty[a] * short[a] for a in Areas)"
        cons.append(
            constraint(
                "coverage",
                "sum(covers[s, a] * build[s] for s in Sites) + short[a] >= need[a]",
                f"each {area} covered as often as it needs, or the shortfall is paid for",
                [("a", "Areas")],
            )
        )
    elif multi:
        params.append(table("need", ["Areas"], need, f"how many {site}s must cover each {area}"))
        cons.append(
            constraint(
                "coverage",
                "sum(covers[s, a] * build[s] for s in Sites) >= need[a]",
                f"each {area} covered as often as it needs",
                [("a", "Areas")],
            )
        )
    else:
        cons.append(
            constraint(
                "coverage",
                "sum(covers[s, a] * build[s] for s in Sites) >= 1",
                f"each {area} covered",
                [("a", "Areas")],
            )
        )
    if level >= 4:
        outside = [s for s in sites if s not in chosen]
        pairs = [(a, b) for a in sites for b in sites if a < b and (a in outside or b in outside)]
        clashes: dict[str, dict[str, int]] = {}
        for a, b in rng.sample(pairs, min(2, len(pairs))):
            clashes.setdefault(a, {})[b] = 1
        params.append(
            table(
                "too_close",
                ["Sites", "Sites"],
                clashes,
                f"pairs of {site}s too close to both be built (listed only)",
                default=0,
            )
        )
        cons.append(
            constraint(
                "spacing",
                "build[s] + build[t] <= 1",
                f"not both {site}s of a close pair",
                [("s", "Sites"), ("t", "Sites")],
                where="too_close[s, t] > 0",
            )
        )
    if level >= 5:
        params.append(scalar("max_sites", len(chosen), f"most {site}s that may be built"))
        cons.append(
            constraint(
                "site_limit", "sum(build[s] for s in Sites) <= max_sites", f"limited number of {site}s"
            )
        )
    f = formulation(
        "set_cover",
        f"Coverage plan for {theme.domain}",
        sets,
        params,
        variables,
        ("minimize", objective, "total cost ($ thousands)"),
        cons,
    )
    return theme.domain, f


PACKING_THEMES = (
    Theme(
        "a moving company loading furniture into vans",
        {
            "items": (
                "Sofa",
                "Fridge",
                "Wardrobe",
                "Piano",
                "Dresser",
                "Bed frame",
                "Desk",
                "Bookcase",
                "Armchair",
                "Washer",
                "Dryer",
                "Table",
            )
        },
        {"bin": "van", "size": "volume in cubic feet"},
    ),
    Theme(
        "an IT team placing virtual machines on servers",
        {
            "items": (
                "Web",
                "Database",
                "Cache",
                "Mail",
                "Search",
                "Backup",
                "Analytics",
                "Billing",
                "Auth",
                "Queue",
                "Logging",
                "Reports",
            )
        },
        {"bin": "server", "size": "memory in gigabytes"},
    ),
    Theme(
        "a warehouse packing orders into shipping containers",
        {
            "items": (
                "Order Alpha",
                "Order Bravo",
                "Order Charlie",
                "Order Delta",
                "Order Echo",
                "Order Foxtrot",
                "Order Golf",
                "Order Hotel",
                "Order India",
                "Order Juliet",
                "Order Kilo",
                "Order Lima",
            )
        },
        {"bin": "container", "size": "weight in hundreds of kilograms"},
    ),
)
PACKING_KNOB = (
    "5 items into up to 3 identical bins, minimize bins used (capacity x used as big-M)",
    "6 items, 4 bins",
    "7 items, 5 bins, at most a given number of items per bin",
    "8 items, pairs of items that cannot share a bin",
    "10 items, 6 bins with their own capacities and costs",
)


def _first_fit(sizes: dict[str, int], capacity: dict[int, int]) -> dict[str, int] | None:
    """First-fit decreasing; None when some item fits in no bin."""
    load = dict.fromkeys(capacity, 0)
    placed: dict[str, int] = {}
    for item in sorted(sizes, key=lambda i: -sizes[i]):
        target = next((b for b in capacity if load[b] + sizes[item] <= capacity[b]), None)
        if target is None:
            return None
        load[target] += sizes[item]
        placed[item] = target
    return placed


def _bin_packing(rng: random.Random, level: int, variant: Variant) -> tuple[str, Formulation]:
    theme = pick_theme(rng, PACKING_THEMES)
    bin_word = theme.word("bin")
    items = theme.names(rng, "items", by_level(level, (5, 6, 7, 8, 10)))
    n_bins = by_level(level, (3, 4, 5, 5, 6))
    bins = list(range(1, n_bins + 1))
    size = {i: step_value(rng, 10, 60) for i in items}
    uniform = level < 5
    base = max(max(size.values()), math.ceil(sum(size.values()) / (n_bins - 1)))
    if uniform:
        cap_value = round(base * rng.uniform(1.0, 1.2))
        capacity = dict.fromkeys(bins, cap_value)
    else:
        capacity = {b: round(base * rng.uniform(1.0, 1.4)) for b in bins}
    if variant == "infeasible":
        # Total size exceeds the capacity of all bins together.
        cap_value = math.floor(sum(size.values()) / n_bins * 0.9)
        capacity = dict.fromkeys(bins, cap_value)
        uniform = True
    placed: dict[str, int] = {}
    if variant != "infeasible":
        # Capacities grow until first-fit packs everything: the packing it finds is the reference.
        while (found := _first_fit(size, capacity)) is None:
            capacity = {b: math.ceil(c * 1.1) for b, c in capacity.items()}
            cap_value = capacity[bins[0]]
        placed = found
    sets = [
        index_set("Items", items, "things to pack"),
        index_set("Bins", bins, f"{bin_word}s available, by number"),
    ]
    params = [table("size", ["Items"], size, f"{theme.word('size')} of each item")]
    if uniform:
        params.append(scalar("capacity", cap_value, f"{theme.word('size')} one {bin_word} holds"))
        cap_ref = "capacity"
    else:
        params.append(table("capacity", ["Bins"], capacity, f"{theme.word('size')} each {bin_word} holds"))
        cap_ref = "capacity[b]"
    cons = [
        constraint(
            "pack_once",
            "sum(put[i, b] for b in Bins) == 1",
            f"every item goes in exactly one {bin_word}",
            [("i", "Items")],
        ),
        constraint(
            "fits",
            f"sum(size[i] * put[i, b] for i in Items) <= {cap_ref} * used[b]",
            f"only a used {bin_word} holds items, up to its capacity",
            [("b", "Bins")],
        ),
    ]
    objective = "sum(used[b] for b in Bins)"
    what = f"number of {bin_word}s used"
    if level >= 3:
        per_bin = max(2, max(sum(1 for i in placed if placed[i] == b) for b in bins) if placed else 2)
        params.append(scalar("max_items", per_bin, f"most items in one {bin_word}"))
        cons.append(
            constraint(
                "item_limit",
                "sum(put[i, b] for i in Items) <= max_items",
                f"limited items per {bin_word}",
                [("b", "Bins")],
            )
        )
    if level >= 4:
        pairs = [(a, b) for a in items for b in items if a < b and placed.get(a) != placed.get(b)]
        apart: dict[str, dict[str, int]] = {}
        for a, b in rng.sample(pairs, min(2, len(pairs))):
            apart.setdefault(a, {})[b] = 1
        params.append(
            table(
                "apart",
                ["Items", "Items"],
                apart,
                f"pairs of items that cannot share a {bin_word} (listed only)",
                default=0,
            )
        )
        cons.append(
            constraint(
                "separate",
                "put[i, b] + put[j, b] <= 1",
                "separated pairs",
                [("i", "Items"), ("j", "Items"), ("b", "Bins")],
                where="apart[i, j] > 0",
            )
        )
    if level >= 5:
        params.append(
            table(
                "bin_cost",
                ["Bins"],
                {b: step_value(rng, 50, 200, 10) for b in bins},
                f"cost of using each {bin_word} ($)",
            )
        )
        objective = "sum(bin_cost[b] * used[b] for b in Bins)"
        what = f"total cost of the {bin_word}s used ($)"
    variables = [
        variable("put", f"whether each item goes in each {bin_word}", ["Items", "Bins"], "binary"),
        variable("used", f"whether each {bin_word} is used", ["Bins"], "binary"),
    ]
    f = formulation(
        "bin_packing",
        f"Packing for {theme.domain}",
        sets,
        params,
        variables,
        ("minimize", objective, what),
        cons,
    )
    return theme.domain, rename_set(f, "Bins", bin_word.capitalize() + "s")


KNAPSACK = Family("knapsack", "Knapsack", KNAPSACK_KNOB, frozenset({"feasible", "infeasible"}), _knapsack)
SET_COVER = Family("set_cover", "Set cover", COVER_KNOB, frozenset({"feasible", "infeasible"}), _set_cover)
BIN_PACKING = Family(
    "bin_packing", "Bin packing", PACKING_KNOB, frozenset({"feasible", "infeasible"}), _bin_packing
)
