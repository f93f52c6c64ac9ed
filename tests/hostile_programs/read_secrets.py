"""Hostile: read files it has no business reading (password hashes, the user's home, host tmp)."""

import pyomo.environ as pyo


def build_model(data):
    for path in data["paths"]:
        try:
            with open(path) as handle:
                print(f"READ {path}: {handle.read()}")
        except OSError as error:
            print(f"DENIED {path}: {error!r}")
    model = pyo.ConcreteModel()
    model.x = pyo.Var(bounds=(0, 1))
    model.obj = pyo.Objective(expr=model.x)
    return model
