"""Docs that cannot drift: ``docs/cli.md`` is what ``app.cli_docs`` renders from the command
tree, which is what each ``sqal … --help`` prints.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from app import cli_docs
from app.cli import main

ROOT = Path(__file__).resolve().parent.parent
CLI_MD = ROOT / "docs" / "cli.md"
REGENERATE = f"run `{cli_docs.REGENERATE}` (python -m app.cli_docs > docs/cli.md)"


# --- docs/cli.md ---------------------------------------------------------------------------


def sections(page: str) -> dict[str, str]:
    """``## `sqal …` `` sections of the CLI reference, by command."""
    parts = re.split(r"^## `(sqal[^`]*)`\n", page, flags=re.MULTILINE)
    return dict(zip(parts[1::2], parts[2::2], strict=True))


def test_cli_reference_is_current() -> None:
    committed = CLI_MD.read_text() if CLI_MD.is_file() else ""
    expected = cli_docs.render()
    old, new = sections(committed), sections(expected)
    stale = sorted(name for name in old.keys() | new.keys() if old.get(name) != new.get(name))
    assert committed == expected, f"docs/cli.md is stale ({', '.join(stale) or 'header'}): " + (
        REGENERATE
    )


def test_cli_reference_shows_what_help_prints(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("COLUMNS", "100")  # click wraps at min(columns, 80) - 2 = WIDTH
    for path, ctx in cli_docs.commands():
        with pytest.raises(SystemExit):
            main([*path, "--help"])
        printed = capsys.readouterr().out
        assert printed.rstrip() == ctx.command.get_help(ctx).rstrip(), " ".join(["sqal", *path])


@pytest.mark.parametrize("columns", ["40", "80", "200"])
def test_cli_reference_does_not_depend_on_the_terminal(
    columns: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", columns)
    monkeypatch.setenv("SQAL_BROKER", "mqtt://elsewhere:1884")
    assert cli_docs.render() == CLI_MD.read_text()


def test_cli_reference_covers_every_command() -> None:
    documented = set(sections(CLI_MD.read_text()))
    commands = {" ".join(["sqal", *p]) for p, _ in cli_docs.commands()}
    assert documented == commands, REGENERATE
