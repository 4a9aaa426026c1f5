"""``python -m sqal`` runs the CLI."""

from sqal.cli import main

main()
