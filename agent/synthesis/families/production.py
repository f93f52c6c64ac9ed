"""Production mix (maximize profit under resource limits) and diet / blending (minimum-cost mix)."""

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
    integer_domain,
    pick_theme,
    quoted,
    round_down,
    round_up,
    scalar,
    step_value,
    table,
    variable,
)
from solvers.ir import Formulation

PRODUCTION_THEMES = (
    Theme(
        "a furniture workshop",
        {
            "products": (
                "Chairs",
                "Tables",
                "Desks",
                "Bookcases",
                "Cabinets",
                "Stools",
                "Benches",
                "Shelves",
            ),
            "resources": ("carpentry hours", "finishing hours", "wood in board feet", "assembly hours"),
        },
        {"unit": "unit", "period": "week"},
    ),
    Theme(
        "a neighborhood bakery",
        {
            "products": (
                "Bread loaves",
                "Croissants",
                "Muffins",
                "Cakes",
                "Pies",
                "Bagels",
                "Scones",
                "Tarts",
            ),
            "resources": ("oven hours", "flour in kilograms", "labor hours", "sugar in kilograms"),
        },
        {"unit": "batch", "period": "day"},
    ),
    Theme(
        "an electronics assembly plant",
        {
            "products": (
                "Phones",
                "Tablets",
                "Laptops",
                "Monitors",
                "Speakers",
                "Routers",
                "Cameras",
                "Watches",
            ),
            "resources": ("assembly hours", "testing hours", "circuit boards", "packaging hours"),
        },
        {"unit": "unit", "period": "week"},
    ),
    Theme(
        "a paint factory",
        {
            "products": (
                "Interior paint",
                "Exterior paint",
                "Primer",
                "Varnish",
                "Stain",
                "Sealant",
                "Enamel",
            ),
            "resources": ("mixing hours", "pigment in kilograms", "base in liters", "canning hours"),
        },
        {"unit": "batch", "period": "week"},
    ),
)

PRODUCTION_KNOB = (
    "2 products, 2 resources, continuous amounts, resource limits only",
    "3 products, sales caps per product",
    "4 products, 3 resources, whole units, minimum contract amounts",
    "5 products: a yes/no decision per product line with a setup cost; caps and minimum batches "
    "become big-M links to it",
    "6 products, 4 resources, at most a given number of product lines",
)


def _production(rng: random.Random, level: int, variant: Variant) -> tuple[str, Formulation]:
    theme = pick_theme(rng, PRODUCTION_THEMES)
    unit, period = theme.word("unit"), theme.word("period")
    products = theme.names(rng, "products", by_level(level, (2, 3, 4, 5, 6)))
    resources = theme.names(rng, "resources", by_level(level, (2, 2, 3, 3, 4)))
    # The reference plan the data is built around: it satisfies every constraint below.
    plan = {p: rng.randint(5, 40) for p in products}
    usage = {r: {p: step_value(rng, 1, 6) for p in products} for r in resources}
    free = rng.choice(products) if variant == "unbounded" else None
    if free is not None:  # uses no limited resource and has no cap: profit grows without bound
        for r in resources:
            usage[r][free] = 0
    available = {
        r: round_up(sum(usage[r][p] * plan[p] for p in products) * rng.uniform(1.2, 1.8), 10)
        for r in resources
    }
    profit = {p: step_value(rng, 10, 90, 5) for p in products}
    domain = integer_domain(level)
    sets = [
        index_set("Products", products, f"products {theme.domain} can make"),
        index_set("Resources", resources, "limited resources"),
    ]
    params = [
        table("profit", ["Products"], profit, f"profit per {unit} ($)"),
        table(
            "usage",
            ["Resources", "Products"],
            usage,
            f"amount of each resource used per {unit} of each product",
        ),
        table("available", ["Resources"], available, f"amount of each resource available per {period}"),
    ]
    variables = [variable("make", f"{unit}s of each product to make per {period}", ["Products"], domain)]
    cons = [
        constraint(
            "resource_limit",
            "sum(usage[r, p] * make[p] for p in Products) <= available[r]",
            "resource use cannot exceed what is available",
            [("r", "Resources")],
        )
    ]
    objective = "sum(profit[p] * make[p] for p in Products)"
    uncapped = f"p != {quoted(free)}" if free is not None else None
    if level >= 2:
        cap = {p: plan[p] + rng.randint(5, 30) for p in products}
        params.append(
            table(
                "max_sales", ["Products"], cap, f"most {unit}s of each product that can be sold per {period}"
            )
        )
    if level in (2, 3):
        cons.append(
            constraint(
                "sales_cap",
                "make[p] <= max_sales[p]",
                "cannot make more than can be sold",
                [("p", "Products")],
                where=uncapped,
            )
        )
    if level == 3 or variant == "infeasible":
        minimum = {p: max(1, round(plan[p] * rng.uniform(0.2, 0.6))) for p in products}
        if variant == "infeasible":
            # Scale the contracts up until one resource cannot cover them: no plan meets them all.
            r = rng.choice(resources)
            need = sum(usage[r][p] * minimum[p] for p in products)
            factor = available[r] * 1.15 / need
            minimum = {p: math.ceil(minimum[p] * factor) for p in products}
        params.append(
            table(
                "min_contract",
                ["Products"],
                minimum,
                f"{unit}s of each product already promised to customers",
            )
        )
        cons.append(
            constraint(
                "contracts",
                "make[p] >= min_contract[p]",
                "promised amounts must be made",
                [("p", "Products")],
            )
        )
    if level >= 4:
        setup = {p: step_value(rng, 100, 600, 50) for p in products}
        batch = {p: max(1, round(plan[p] * rng.uniform(0.2, 0.5))) for p in products}
        params += [
            table(
                "setup_cost", ["Products"], setup, f"cost of running the line for a product in a {period} ($)"
            ),
            table("min_batch", ["Products"], batch, f"smallest run of a product worth making, in {unit}s"),
        ]
        variables.append(variable("run", "whether the line for each product runs", ["Products"], "binary"))
        objective += " - sum(setup_cost[p] * run[p] for p in Products)"
        cons += [
            constraint(
                "line_link",
                "make[p] <= max_sales[p] * run[p]",
                "a product is made only if its line runs, and no more than can be sold",
                [("p", "Products")],
                where=uncapped,
            ),
            constraint(
                "min_run",
                "make[p] >= min_batch[p] * run[p]",
                "a running line makes at least its minimum batch",
                [("p", "Products")],
            ),
        ]
    if level >= 5:
        lines = rng.randint(2, len(products) - 2)
        params.append(scalar("max_lines", lines, f"most product lines that can run in a {period}"))
        cons.append(
            constraint("line_limit", "sum(run[p] for p in Products) <= max_lines", "limited number of lines")
        )
    f = formulation(
        "production_mix",
        f"Product mix for {theme.domain}",
        sets,
        params,
        variables,
        ("maximize", objective, f"total profit per {period} ($)"),
        cons,
    )
    return theme.domain, f


DIET_THEMES = (
    Theme(
        "a hospital kitchen planning a daily meal",
        {
            "items": (
                "Oatmeal",
                "Milk",
                "Eggs",
                "Chicken",
                "Rice",
                "Beans",
                "Spinach",
                "Apples",
                "Yogurt",
                "Bread",
            ),
            "nutrients": (
                "protein in grams",
                "fiber in grams",
                "vitamin C in milligrams",
                "iron in milligrams",
                "calcium in tens of milligrams",
            ),
        },
        {"unit": "serving", "mix": "meal plan", "amount": "servings"},
    ),
    Theme(
        "a cattle farm mixing feed",
        {
            "items": ("Corn", "Soybean meal", "Oats", "Hay", "Barley", "Alfalfa", "Fish meal", "Wheat bran"),
            "nutrients": (
                "protein in kilograms",
                "fiber in kilograms",
                "energy in megacalories",
                "calcium in grams",
                "phosphorus in grams",
            ),
        },
        {"unit": "sack", "mix": "daily feed mix", "amount": "sacks"},
    ),
    Theme(
        "a garden supply company blending fertilizer",
        {
            "items": (
                "Compost",
                "Bone meal",
                "Blood meal",
                "Kelp",
                "Manure",
                "Rock phosphate",
                "Greensand",
                "Peat",
            ),
            "nutrients": (
                "nitrogen in kilograms",
                "phosphate in kilograms",
                "potash in kilograms",
                "sulfur in kilograms",
                "magnesium in kilograms",
            ),
        },
        {"unit": "bag", "mix": "fertilizer blend", "amount": "bags"},
    ),
)

DIET_KNOB = (
    "2 ingredients, 2 nutrient minimums, continuous amounts",
    "3 ingredients, nutrient maximums as well",
    "5 ingredients, 4 nutrients, whole units with per-ingredient limits",
    "5 ingredients: a yes/no use decision per ingredient, minimum amount if used (big-M), "
    "at most a given number of ingredients",
    "6 ingredients",
)


def _diet(rng: random.Random, level: int, variant: Variant) -> tuple[str, Formulation]:
    theme = pick_theme(rng, DIET_THEMES)
    unit, mix, amount = theme.word("unit"), theme.word("mix"), theme.word("amount")
    items = theme.names(rng, "items", by_level(level, (2, 3, 5, 5, 6)))
    nutrients = theme.names(rng, "nutrients", by_level(level, (2, 2, 4, 4, 4)))
    max_used = len(items) - 1 if level >= 4 else len(items)
    chosen = set(rng.sample(items, max_used))
    plan = {i: (rng.randint(1, 5) if i in chosen else 0) for i in items}
    content = {n: {i: step_value(rng, 1, 30) for i in items} for n in nutrients}
    supplied = {n: sum(content[n][i] * plan[i] for i in items) for n in nutrients}
    minimum = {n: max(1, round_down(supplied[n] * rng.uniform(0.6, 0.9), 1)) for n in nutrients}
    cost = {i: step_value(rng, 0.5, 4.0, 0.25) for i in items}
    domain = integer_domain(level)
    sets = [
        index_set("Ingredients", items, f"what can go into the {mix}"),
        index_set("Nutrients", nutrients, "nutrients with requirements"),
    ]
    params = [
        table("cost", ["Ingredients"], cost, f"cost per {unit} ($)"),
        table(
            "content",
            ["Nutrients", "Ingredients"],
            content,
            f"amount of each nutrient in one {unit} of each ingredient",
        ),
        table("min_amount", ["Nutrients"], minimum, f"least amount of each nutrient the {mix} must supply"),
    ]
    variables = [variable("amount", f"{amount} of each ingredient in the {mix}", ["Ingredients"], domain)]
    cons = [
        constraint(
            "meet_minimum",
            "sum(content[n, i] * amount[i] for i in Ingredients) >= min_amount[n]",
            "each nutrient minimum must be met",
            [("n", "Nutrients")],
        )
    ]
    if level >= 2:
        maximum = {n: round_up(supplied[n] * rng.uniform(1.2, 1.6), 1) for n in nutrients}
        params.append(
            table("max_amount", ["Nutrients"], maximum, f"most of each nutrient the {mix} may supply")
        )
        cons.append(
            constraint(
                "stay_below",
                "sum(content[n, i] * amount[i] for i in Ingredients) <= max_amount[n]",
                "each nutrient maximum must be respected",
                [("n", "Nutrients")],
            )
        )
    if level >= 3:
        most = {i: plan[i] + rng.randint(1, 4) for i in items}
        params.append(
            table("max_units", ["Ingredients"], most, f"most {amount} of each ingredient available")
        )
        limit = "amount[i] <= max_units[i] * use[i]" if level >= 4 else "amount[i] <= max_units[i]"
        cons.append(
            constraint("availability", limit, "limited supply of each ingredient", [("i", "Ingredients")])
        )
    if level >= 4:
        smallest = {
            i: max(1, min(plan[i], rng.randint(1, 2))) if i in chosen else rng.randint(1, 2) for i in items
        }
        params += [
            table(
                "min_units",
                ["Ingredients"],
                smallest,
                f"smallest amount of an ingredient worth adding, in {amount}",
            ),
            scalar("max_ingredients", max_used, f"most different ingredients the {mix} may contain"),
        ]
        variables.append(variable("use", "whether each ingredient is used", ["Ingredients"], "binary"))
        cons += [
            constraint(
                "min_if_used",
                "amount[i] >= min_units[i] * use[i]",
                "a used ingredient goes in at least its minimum",
                [("i", "Ingredients")],
            ),
            constraint(
                "ingredient_limit",
                "sum(use[i] for i in Ingredients) <= max_ingredients",
                "limited number of different ingredients",
            ),
        ]
    if variant == "infeasible":
        # Any feasible mix costs at least min_amount[n] * min_i(cost[i] / content[n, i]) for each n;
        # a budget below 70% of the largest such bound cannot be met.
        floor_cost = max(minimum[n] * min(cost[i] / content[n][i] for i in items) for n in nutrients)
        budget = max(1, round_down(floor_cost * 0.7, 1))
        params.append(scalar("budget", budget, f"money available for the {mix} ($)"))
        cons.append(
            constraint(
                "budget_limit",
                "sum(cost[i] * amount[i] for i in Ingredients) <= budget",
                "the mix must fit the budget",
            )
        )
    f = formulation(
        "diet_blend",
        f"Least-cost {mix} for {theme.domain}",
        sets,
        params,
        variables,
        ("minimize", "sum(cost[i] * amount[i] for i in Ingredients)", f"total cost of the {mix} ($)"),
        cons,
    )
    return theme.domain, f


PRODUCTION_MIX = Family(
    "production_mix",
    "Production mix",
    PRODUCTION_KNOB,
    frozenset({"feasible", "infeasible", "unbounded"}),
    _production,
)
DIET = Family("diet_blend", "Diet / blending", DIET_KNOB, frozenset({"feasible", "infeasible"}), _diet)
