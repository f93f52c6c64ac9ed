"""Hostile: write 100 MB to stdout."""

import sys

import pyomo.environ as pyo


def build_model():
    line = "spam " * 200 + "\n"  # 1 kB
    for _ in range(100 * 1024):
        sys.stdout.write(line)
    model = pyo.ConcreteModel()
    model.x = pyo.Var(bounds=(0, 1))
    model.obj = pyo.Objective(expr=model.x)
    return model
