"""Hostile: open TCP connections to a public address and to a port on the host's loopback."""

import socket

import pyomo.environ as pyo


def attempt(host, port):
    try:
        with socket.create_connection((host, port), timeout=1) as conn:
            conn.sendall(b"exfiltrated\n")
        return f"CONNECTED {host}:{port}"
    except OSError as error:
        return f"BLOCKED {host}:{port} {error!r}"


def build_model(data):
    for host, port in data["targets"]:
        print(attempt(host, port))
    model = pyo.ConcreteModel()
    model.x = pyo.Var(bounds=(0, 1))
    model.obj = pyo.Objective(expr=model.x)
    return model
