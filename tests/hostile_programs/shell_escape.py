"""Hostile: run shell commands that create files on the host (os.system and subprocess)."""

import os
import subprocess

import pyomo.environ as pyo


def build_model(data):
    first, second = data["paths"]
    print("os.system exit status:", os.system(f"touch {first} 2>&1"))
    try:
        done = subprocess.run(["touch", second], capture_output=True, text=True, timeout=5)
        print("subprocess:", done.returncode, done.stderr.strip())
    except OSError as error:
        print("subprocess failed:", repr(error))
    model = pyo.ConcreteModel()
    model.x = pyo.Var(bounds=(0, 1))
    model.obj = pyo.Objective(expr=model.x)
    return model
