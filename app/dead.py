"""``sqal dead list|show|redrive``: the dead letters ingest stored, read and sent again."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from sqal.errors import ConfigError
from sqal.settings import load_settings
from sqal.wire import DeadReason

Db = Annotated[
    str | None, typer.Option("--db", metavar="DSN", help="PostgreSQL DSN [env SQAL_DB].")
]
Broker = Annotated[
    str | None, typer.Option("--broker", help="Broker URL [env SQAL_BROKER].", show_default=False)
]
JsonFlag = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
Line = Annotated[str | None, typer.Option("--line", help="Only dead letters of this line.")]
Reason = Annotated[
    str | None,
    typer.Option("--reason", help="Only this reason (bad_json, schema, unknown_profile, ...)."),
]
Since = Annotated[
    str | None,
    typer.Option("--since", help="Only dead letters stored since an age (8h, 7d) or ISO time."),
]

SHOW_BYTES = 4096
"""What ``dead show`` prints of a payload unless ``--full``."""


def safe_text(text: str) -> str:
    """``text`` with every unprintable character but newline and tab escaped (``\\x1b``).

    A payload, topic or detail came from outside: a terminal escape sequence in it must be
    shown, not obeyed.
    """
    out = []
    for ch in text:
        if ch.isprintable() or ch in "\n\t":
            out.append(ch)
        elif ord(ch) < 0x100:
            out.append(f"\\x{ord(ch):02x}")
        else:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) < 0x10000 else f"\\U{ord(ch):08x}")
    return "".join(out)


def shown_payload(payload: bytes, full: bool) -> dict[str, Any]:
    """The payload as text if UTF-8, else as hex; cut at :data:`SHOW_BYTES` unless ``full``."""
    cut = payload if full else payload[:SHOW_BYTES]
    try:
        text = payload.decode("utf-8")
        encoding = "utf-8"
        shown = text if full else cut.decode("utf-8", "ignore")  # a cut may split a character
    except UnicodeDecodeError:
        encoding, shown = "hex", cut.hex()
    return {
        "encoding": encoding,
        "payload": shown,
        "truncated": len(cut) < len(payload),
        "payload_bytes": len(payload),
    }


def _filter(line: str | None, reason: str | None, since: str | None) -> dict[str, Any]:
    from views.report import parse_instant

    if reason is not None and reason not in {r.value for r in DeadReason}:
        raise ConfigError(
            f"--reason {reason!r}: choose from {', '.join(r.value for r in DeadReason)}"
        )
    return {
        "line": line,
        "reason": reason,
        "since": parse_instant(since, datetime.now(UTC), "--since") if since else None,
    }


def _dsn(db: str | None) -> str:
    return load_settings(db=db).db.get_secret_value()


def _doc(row: Any) -> dict[str, Any]:
    return {
        "id": row.id,
        "received_at": row.received_at.isoformat(),
        "stage": row.stage,
        "topic": row.topic,
        "line": row.line_id,
        "device": row.device_id,
        "reason": row.reason,
        "detail": row.detail,
        "payload_bytes": row.payload_bytes,
        "redriven_at": row.redriven_at.isoformat() if row.redriven_at else None,
        "redrive_count": row.redrive_count,
    }


def dead_list_command(
    line: Line = None,
    reason: Reason = None,
    since: Since = None,
    limit: Annotated[
        int, typer.Option("--limit", min=1, max=100_000, help="At most this many, newest first.")
    ] = 50,
    db: Db = None,
    as_json: JsonFlag = False,
) -> None:
    """List stored dead letters, newest first: id, time, stage, reason, topic, size, redriven."""
    from storage.connection import connect
    from storage.deadletters import DeadFilter, find_dead

    f = DeadFilter(**_filter(line, reason, since))
    with connect(_dsn(db), "sqal-dead") as conn:
        rows = find_dead(conn, f, limit)
    if as_json:
        typer.echo(json.dumps({"dead_letters": [_doc(r) for r in rows]}))
        return
    if not rows:
        typer.echo("no dead letters match")
        return
    for r in rows:
        mark = f"redriven x{r.redrive_count}" if r.redriven_at else ""
        typer.echo(
            f"{r.id:>8}  {r.received_at:%Y-%m-%d %H:%M:%S}  {r.stage:<8} {r.reason:<20} "
            f"{r.payload_bytes:>7} B  {safe_text(r.topic)}  {mark}".rstrip()
        )


def dead_show_command(
    dead_id: Annotated[int, typer.Argument(metavar="ID", min=1, help="The dead letter's id.")],
    full: Annotated[
        bool, typer.Option("--full", help=f"The whole payload (else its first {SHOW_BYTES} bytes).")
    ] = False,
    db: Db = None,
    as_json: JsonFlag = False,
) -> None:
    """Show one dead letter: reason, detail, topic and its payload (text if UTF-8, else hex)."""
    from storage.connection import connect
    from storage.deadletters import get_dead

    with connect(_dsn(db), "sqal-dead") as conn:
        row = get_dead(conn, dead_id)
    if row is None:
        raise ConfigError(f"no dead letter with id {dead_id}")
    assert row.payload is not None
    payload = shown_payload(row.payload, full)
    if as_json:
        typer.echo(json.dumps({**_doc(row), **payload}))
        return
    redriven = (
        f"{row.redriven_at.isoformat()} ({row.redrive_count} times)" if row.redriven_at else "no"
    )
    lines = [
        f"id          {row.id}",
        f"received    {row.received_at.isoformat()}",
        f"stage       {row.stage}",
        f"topic       {safe_text(row.topic)}",
        f"reason      {row.reason}",
        f"detail      {safe_text(row.detail)}",
        f"redriven    {redriven}",
        f"payload     {row.payload_bytes} bytes, shown as {payload['encoding']}"
        + (f" (first {SHOW_BYTES} bytes; --full for all)" if payload["truncated"] else ""),
        safe_text(payload["payload"]),
    ]
    typer.echo("\n".join(lines))


def dead_redrive_command(
    dead_ids: Annotated[
        list[int] | None, typer.Argument(metavar="ID", help="Dead letters to send again.")
    ] = None,
    line: Line = None,
    reason: Reason = None,
    since: Since = None,
    limit: Annotated[
        int | None, typer.Option("--limit", min=1, help="At most this many, oldest first.")
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Also send rows already redriven.")
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would be sent; send nothing.")
    ] = False,
    db: Db = None,
    broker: Broker = None,
    as_json: JsonFlag = False,
) -> None:
    """Republish dead letters' payloads on their original topics (QoS 1) after a fix; mark them.

    Give IDs, or a filter (--line, --reason, --since). Rows are sent oldest first, each after
    the previous one's PUBACK, never retained; a row already redriven is skipped unless --force.
    Ingest stores a redriven message once however often it is sent.
    """
    from ingest.redrive import plan, redrive
    from storage.connection import connect
    from storage.deadletters import DeadFilter, find_dead, mark_redriven

    given = _filter(line, reason, since)
    if not dead_ids and not any(given.values()):
        raise ConfigError("give dead letter IDs or a filter: --line, --reason or --since")
    settings = load_settings(db=db, broker=broker)
    ids = tuple(dead_ids) if dead_ids else None
    f = DeadFilter(**given, ids=ids, not_redriven=not force and ids is None)
    # Autocommit: each row's mark commits as soon as its PUBACK came.
    with connect(settings.db.get_secret_value(), "sqal-dead", autocommit=True) as conn:
        rows = find_dead(conn, f, limit, payloads=True)
        missing = sorted(set(ids or ()) - {r.id for r in rows})
        if missing:
            raise ConfigError(f"no dead letter with id {', '.join(map(str, missing))}")
        if dry_run:
            todo, report = plan(rows, force=force)
            report.redriven = [r.id for r in todo]
        else:
            report = redrive(rows, settings.broker, lambda i: mark_redriven(conn, i), force=force)
    done = "would redrive" if dry_run else "redrove"
    if as_json:
        typer.echo(
            json.dumps(
                {
                    "dry_run": dry_run,
                    "redriven": report.redriven,
                    "skipped": [{"id": i, "why": why} for i, why in report.skipped],
                }
            )
        )
        return
    for i, why in report.skipped:
        typer.echo(f"skipped {i}: {why}")
    typer.echo(
        f"{done} {len(report.redriven)} dead letter(s)"
        + (f": {', '.join(map(str, report.redriven))}" if report.redriven else "")
    )
