"""Hostile: dump every environment it can reach: its own, its parent's, init's."""

import os

import pyomo.environ as pyo


def build_model():
    print("OWN", dict(os.environ))
    for pid in (os.getppid(), 1):
        try:
            with open(f"/proc/{pid}/environ", "rb") as handle:
                print(f"PROC {pid}", handle.read())
        except OSError as error:
            print(f"DENIED /proc/{pid}/environ: {error!r}")
    model = pyo.ConcreteModel()
    model.x = pyo.Var(bounds=(0, 1))
    model.obj = pyo.Objective(expr=model.x)
    return model
