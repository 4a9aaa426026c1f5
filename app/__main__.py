"""``python -m app`` runs the CLI (the same as the ``sqal`` command)."""

from app.entry import main

main()
