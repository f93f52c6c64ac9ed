"""A valid sandbox program: a bakery choosing how many batches of bread and cake to bake.

Maximize profit 3*bread + 5*cake subject to oven time bread + 2*cake <= 40 and at most 15 cake
batches. Cake earns 2.5 per oven hour and bread 3, so the optimum is all bread: 40 batches, profit
120 (the other corners give 105 and 75).

The sandbox contract: define build_model() (or build_model(data)) and return a ConcreteModel;
the harness solves it. Run it with:  optitrace run-code examples/bakery_model.py
"""

import pyomo.environ as pyo


def build_model(data=None):
    data = data or {}
    model = pyo.ConcreteModel(name="bakery")
    model.bread = pyo.Var(domain=pyo.NonNegativeReals, bounds=(0, data.get("max_bread")))
    model.cake = pyo.Var(domain=pyo.NonNegativeReals, bounds=(0, data.get("max_cake", 15)))
    model.oven_hours = pyo.Constraint(expr=model.bread + 2 * model.cake <= data.get("oven_hours", 40))
    model.profit = pyo.Objective(expr=3 * model.bread + 5 * model.cake, sense=pyo.maximize)
    return model
