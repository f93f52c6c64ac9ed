"""Hostile: create files outside the scratch directory (the repository, /usr, /etc, host tmp)."""

import pyomo.environ as pyo


def build_model(data):
    for path in data["paths"]:
        try:
            with open(path, "w") as handle:
                handle.write("pwned\n")
            print(f"WROTE {path}")
        except OSError as error:
            print(f"DENIED {path}: {error!r}")
    model = pyo.ConcreteModel()
    model.x = pyo.Var(bounds=(0, 1))
    model.obj = pyo.Objective(expr=model.x)
    return model
