"""Hostile: SIGKILL the process that started it (the sandbox worker), then init."""

import os
import signal

import pyomo.environ as pyo


def build_model():
    os.kill(os.getppid(), signal.SIGKILL)
    os.kill(1, signal.SIGKILL)
    model = pyo.ConcreteModel()
    model.x = pyo.Var(bounds=(0, 1))
    model.obj = pyo.Objective(expr=model.x)
    return model
