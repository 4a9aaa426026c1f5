"""``docs/cli.md``: the help of every ``sqal`` command, generated from the command tree.

Regenerate with ``make docs`` (``python -m app.cli_docs > docs/cli.md``); ``tests/test_docs.py``
fails while the committed file differs from what this module renders.

The text is the one ``sqal … --help`` prints on a terminal of 80 columns or more: click wraps
help at ``min(columns, 80) − 2``, and the page fixes that width (:data:`WIDTH`) instead of
asking the terminal, so the output does not depend on where it is generated. ``app.cli``
switches rich's help boxes off (``rich_markup_mode=None``), so the help is plain text.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import TextIO

import typer
import typer.main
from typer.core import TyperGroup

from app.cli import app

WIDTH = 78
"""Columns of the rendered help: what click uses on any terminal at least 80 wide."""

REGENERATE = "make docs"

_HEADER = f"""\
# `sqal` command reference

Generated from the commands' `--help` by `app/cli_docs.py`; do not edit by hand. Regenerate
with `{REGENERATE}` (`python -m app.cli_docs > docs/cli.md`); `tests/test_docs.py` fails
while this page is stale. Settings, exit codes and the command groups are described in the
[README](../README.md#the-cli-at-a-glance).
"""


def commands(
    typer_app: typer.Typer = app, prog: str = "sqal"
) -> Iterator[tuple[list[str], typer.Context]]:
    """Every command of a typer app with its help context, each group before its commands.

    Args:
        typer_app: the app to walk (``sqal``'s by default).
        prog: the program name the usage lines show.

    Yields:
        (path, ctx): the command's path below the program (``[]`` for the program itself) and
        a context whose ``command`` is the command and whose width is :data:`WIDTH`; commands
        come in the order ``--help`` lists them.
    """
    root = typer.main.get_command(typer_app)

    def walk(ctx: typer.Context, path: list[str]) -> Iterator[tuple[list[str], typer.Context]]:
        yield path, ctx
        group = ctx.command
        if not isinstance(group, TyperGroup):
            return
        for name in group.list_commands(ctx):
            sub = group.get_command(ctx, name)
            if sub is None or sub.hidden:
                continue
            yield from walk(typer.Context(sub, parent=ctx, info_name=name), [*path, name])

    yield from walk(typer.Context(root, info_name=prog, terminal_width=WIDTH), [])


def render() -> str:
    """The whole of ``docs/cli.md``."""
    parts = [_HEADER]
    for path, ctx in commands():
        title = " ".join(["sqal", *path])
        help_text = ctx.command.get_help(ctx).rstrip()
        parts.append(f"## `{title}`\n\n```text\n{help_text}\n```\n")
    return "\n".join(parts)


def main(out: TextIO | None = None) -> None:
    """Write the page to ``out`` (stdout by default)."""
    (out or sys.stdout).write(render())


if __name__ == "__main__":
    main()
