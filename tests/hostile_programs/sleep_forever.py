"""Hostile: sleep forever (uses no CPU, so only the wall clock can stop it)."""

import threading


def build_model():
    threading.Event().wait()
