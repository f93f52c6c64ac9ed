"""Hostile: spin forever on the CPU inside build_model."""


def build_model():
    n = 0
    while True:
        n += 1
