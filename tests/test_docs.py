"""Docs that cannot drift: the generated CLI reference, and references that resolve.

- ``docs/cli.md`` is what ``app.cli_docs`` renders from the command tree, which is what each
  ``sqal … --help`` prints.
- Every ``docs/….md`` path named in the repository's code, configs and docs exists, every
  ``docs/domain.md §N`` names a section of that page, and every relative link in ``README.md``
  and ``docs/*.md`` reaches a file (and, with ``#anchor``, a heading of it).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest

from app import cli_docs
from app.cli import main

ROOT = Path(__file__).resolve().parent.parent
CLI_MD = ROOT / "docs" / "cli.md"
REGENERATE = f"run `{cli_docs.REGENERATE}` (python -m app.cli_docs > docs/cli.md)"

SOURCE_SUFFIXES = {".py", ".md", ".yaml", ".yml", ".conf", ".sql", ".sh", ".toml"}
SKIPPED_DIRS = {".git", ".venv", "node_modules", "build", "dist", "out", "__pycache__"}

DOC_PATH = re.compile(r"(?<![\w./-])docs/[\w./-]*?\.md\b")
DOMAIN_SECTION = re.compile(r"(?<![\w./-])docs/domain\.md §(\d+)")
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^\s*(```|~~~)")
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


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


# --- references that resolve ---------------------------------------------------------------


def source_files(root: Path) -> Iterator[Path]:
    """The repository's code, configs and docs (not virtualenvs, caches or build output)."""
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in SKIPPED_DIRS and not d.startswith("."))
        for name in sorted(names):
            path = Path(folder) / name
            if path.suffix in SOURCE_SUFFIXES or name == "acl":
                yield path


def outside_fences(text: str) -> Iterator[str]:
    """The lines of a Markdown text that are not inside fenced code blocks."""
    fenced = False
    for line in text.splitlines():
        if FENCE.match(line):
            fenced = not fenced
            continue
        if not fenced:
            yield line


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


def anchors(markdown: str) -> set[str]:
    """Every heading anchor of a Markdown page, duplicates numbered as GitHub does."""
    seen: dict[str, int] = {}
    found = set()
    for line in outside_fences(markdown):
        m = HEADING.match(line)
        if m is None:
            continue
        base = slug(m[2])
        n = seen.get(base, 0)
        seen[base] = n + 1
        found.add(base if n == 0 else f"{base}-{n}")
    return found


def domain_sections(markdown: str) -> set[str]:
    """Section numbers of docs/domain.md: its ``## N. Title`` headings."""
    return {m[1] for line in outside_fences(markdown) if (m := re.match(r"^## (\d+)\. ", line))}


def broken_references(root: Path, files: Iterable[Path]) -> list[str]:
    """Every reference in ``files`` that does not resolve under ``root``, as ``file: ref``."""
    broken = []
    domain = root / "docs" / "domain.md"
    numbers = domain_sections(domain.read_text()) if domain.is_file() else set()
    for path in files:
        text = path.read_text(encoding="utf-8", errors="replace")
        rel = path.relative_to(root)
        for cited in sorted(set(DOC_PATH.findall(text))):
            if not (root / cited).is_file():
                broken.append(f"{rel}: {cited}")
        for number in sorted(set(DOMAIN_SECTION.findall(text))):
            if number not in numbers:
                broken.append(f"{rel}: docs/domain.md §{number}")
        is_doc = rel == Path("README.md") or (rel.parts[0] == "docs" and path.suffix == ".md")
        if not is_doc:
            continue
        for line in outside_fences(text):
            for target in LINK.findall(line):
                if "://" in target or target.startswith("mailto:"):
                    continue
                file_part, _, anchor = target.partition("#")
                dest = (path.parent / file_part).resolve() if file_part else path
                if not dest.exists():
                    broken.append(f"{rel}: {target}")
                elif anchor and dest.suffix == ".md" and anchor not in anchors(dest.read_text()):
                    broken.append(f"{rel}: {target} (no such heading)")
    return broken


def test_every_cited_doc_and_link_resolves() -> None:
    broken = broken_references(ROOT, source_files(ROOT))
    assert not broken, "references that do not resolve:\n" + "\n".join(broken)


def test_the_reference_check_sees_what_is_broken(tmp_path: Path) -> None:
    d = "docs"  # spelled apart, so that this file's own scan does not see the broken examples
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "domain.md").write_text("# Domain\n\n## 1. Sensor\n\n## 2. Metrics\n")
    (tmp_path / "docs" / "ok.md").write_text(
        "# Ok\n\n## The part\n\n[fine](domain.md#2-metrics) [here](#the-part)\n"
        "[gone](missing.md) [wrong](domain.md#3-scores)\n"
        "```sh\n[not a link](inside-a-fence.md)\n```\n"
    )
    (tmp_path / "README.md").write_text(f"[docs]({d}/ok.md) [web](https://example.org/x.md)\n")
    (tmp_path / "code.py").write_text(
        f'"""See {d}/domain.md §2 and {d}/domain.md §9, {d}/ok.md and {d}/drafts/a.md."""\n'
    )
    files = [tmp_path / "README.md", tmp_path / "code.py", *sorted((tmp_path / "docs").iterdir())]
    assert broken_references(tmp_path, files) == [
        f"code.py: {d}/drafts/a.md",
        f"code.py: {d}/domain.md §9",
        f"{d}/ok.md: missing.md",
        f"{d}/ok.md: domain.md#3-scores (no such heading)",
    ]


def test_slugs_follow_github() -> None:
    assert slug("2. Height map → product metrics") == "2-height-map--product-metrics"
    assert slug("The CLI at a glance") == "the-cli-at-a-glance"
    assert slug("`sqal db migrate`") == "sqal-db-migrate"
    assert anchors("## A\n## A\n") == {"a", "a-1"}
