"""Hostile: allocate 8 GB and touch it."""

import pyomo.environ as pyo


def build_model():
    hog = bytearray(8 * 1024**3)
    hog[::4096] = b"x" * len(hog[::4096])
    model = pyo.ConcreteModel()
    model.x = pyo.Var(bounds=(0, len(hog)))
    model.obj = pyo.Objective(expr=model.x)
    return model
