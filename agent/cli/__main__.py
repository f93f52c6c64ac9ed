"""`python -m agent.cli` is `optitrace`."""

from agent.cli import main

main()
