"""``sqal lot start|end|show|list|rules``: a line's lot, set by the operator, and its packers'
rules.

``start`` and ``end`` publish the line's lot retained (:mod:`sqal.lots`); the analyzer stamps
every result with the open lot and ingest stores it in ``lots``. ``list`` and ``rules`` read
the database: the stored lots, and the packers' rules of Directive 76/211/EEC per lot
(:mod:`views.packers`) over a lot's whole run or a shift.
"""

from __future__ import annotations

import asyncio
import json
from datetime import UTC, datetime
from typing import Annotated, Any

import typer

from sqal.errors import ConfigError, SqalError
from sqal.settings import load_settings

LineOption = Annotated[str, typer.Option("--line", help="Line id.")]
BrokerOption = Annotated[
    str | None, typer.Option("--broker", help="Broker URL [env SQAL_BROKER].", show_default=False)
]
DbOption = Annotated[
    str | None, typer.Option("--db", metavar="DSN", help="PostgreSQL DSN [env SQAL_DB].")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
NoteOption = Annotated[
    str | None, typer.Option("--note", help="Free text kept with the lot (≤ 256 characters).")
]


def _emit(obj: Any, as_json: bool, text: str) -> None:
    typer.echo(json.dumps(obj, default=str) if as_json else text)


def _lot_doc(line: str, lot: Any) -> dict[str, Any]:
    return {"line": line, **lot.model_dump(mode="json"), "open": lot.is_open}


def lot_start_command(
    line: LineOption,
    lot: Annotated[str, typer.Option("--lot", help="Lot id: 1-64 of A-Z a-z 0-9 _ . : -")],
    qn: Annotated[
        float | None,
        typer.Option(
            "--qn",
            metavar="G",
            help="Nominal quantity printed on the packs, g [the product profile's nominal mass].",
            show_default=False,
        ),
    ] = None,
    product: Annotated[
        str | None,
        typer.Option(
            "--product",
            help="Product profile (profiles/) [the profile of the line's devices].",
            show_default=False,
        ),
    ] = None,
    note: NoteOption = None,
    broker: BrokerOption = None,
    as_json: JsonOption = False,
) -> None:
    """Open a lot on a line (retained on sqal/v1/LINE/lot); ends the line's open lot first.

    Every result of the line carries the open lot's id from then on. TNE follows from Qn
    (Directive 76/211/EEC Annex I).
    """
    from sqal import lots

    settings = load_settings(broker=broker)
    lots.check_line(line)
    now = datetime.now(UTC)
    name = product or lots.line_profile(settings.broker, line)
    new = lots.new_lot(lot, name, now, qn, note)
    held = asyncio.run(lots.fetch_lots(settings.broker, line)).get(line)
    closed = None
    if not isinstance(held, str) and held is not None and held.is_open:
        if held.lot == lot:
            raise ConfigError(f"lot {lot} is already open on line {line} since "
                              f"{held.started.isoformat()}")  # fmt: skip
        closed = lots.ended(held, now)
        asyncio.run(lots.publish_lot(settings.broker, line, closed))
    asyncio.run(lots.publish_lot(settings.broker, line, new))
    doc = _lot_doc(line, new) | {"ended_lot": closed.lot if closed else None}
    text = (
        f"lot {new.lot} open on line {line}: {new.product}, Qn {new.qn_g:g} g, "
        f"TNE {new.tne_g:g} g, since {new.started.isoformat()}"
    )
    if closed is not None:
        text = f"lot {closed.lot} ended on line {line}\n{text}"
    _emit(doc, as_json, text)


def lot_end_command(
    line: LineOption,
    note: NoteOption = None,
    broker: BrokerOption = None,
    as_json: JsonOption = False,
) -> None:
    """End the line's open lot; results carry no lot until the next one starts."""
    from sqal import lots

    settings = load_settings(broker=broker)
    lots.check_line(line)
    held = asyncio.run(lots.fetch_lots(settings.broker, line)).get(line)
    if held is None or isinstance(held, str) or not held.is_open:
        why = f" (its retained lot does not decode: {held})" if isinstance(held, str) else ""
        raise SqalError(f"line {line} has no open lot{why}; sqal lot start opens one")
    closed = lots.ended(held, datetime.now(UTC), note)
    asyncio.run(lots.publish_lot(settings.broker, line, closed))
    assert closed.ended is not None
    _emit(
        _lot_doc(line, closed),
        as_json,
        f"lot {closed.lot} ended on line {line} at {closed.ended.isoformat()}",
    )


def lot_show_command(
    line: Annotated[
        str | None, typer.Option("--line", help="Line id [every line].", show_default=False)
    ] = None,
    broker: BrokerOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the lots the broker holds (retained): each line's open or last lot."""
    from sqal import lots

    settings = load_settings(broker=broker)
    if line is not None:
        lots.check_line(line)
    found = asyncio.run(lots.fetch_lots(settings.broker, line))
    if line is not None and line not in found:
        raise SqalError(f"no lot is retained for line {line} on {settings.broker}")
    doc = {ln: (_lot_doc(ln, x) if not isinstance(x, str) else {"error": x})
           for ln, x in sorted(found.items())}  # fmt: skip
    rows = []
    for ln, x in sorted(found.items()):
        if isinstance(x, str):
            rows.append(f"{ln:<16} INVALID {x}")
            continue
        state = "open" if x.is_open else f"ended {x.ended.isoformat() if x.ended else ''}"
        rows.append(
            f"{ln:<16} {x.lot:<20} {x.product:<22} Qn {x.qn_g:g} g TNE {x.tne_g:g} g "
            f"since {x.started.isoformat()} {state}"
        )
    _emit(doc, as_json, "\n".join(rows) or "no lot is retained")


def lot_list_command(
    line: Annotated[
        str | None, typer.Option("--line", help="Line id [every line].", show_default=False)
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Lots not ended before: an age (7d) or an ISO time [all].",
            show_default=False,
        ),
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the stored lots, newest first, with their production trays and those not counted."""
    from sqal import lots as mqtt_lots
    from storage.connection import connect
    from storage.queries import lots
    from views.report import parse_instant

    if line is not None:
        mqtt_lots.check_line(line)
    start = parse_instant(since, datetime.now(UTC), "--since") if since else None
    dsn = load_settings(db=db).db.get_secret_value()
    with connect(dsn, "sqal-lot") as conn:
        found = lots(conn, line=line, since=start)
    doc = {"lots": [
        {"line": x.line_id, "lot": x.lot_id, "product": x.product, "qn_g": x.qn_g,
         "tne_g": x.tne_g, "started": x.started.isoformat(),
         "ended": x.ended.isoformat() if x.ended else None, "note": x.note, "trays": x.trays,
         "not_counted": x.not_counted}
        for x in found
    ]}  # fmt: skip
    rows = []
    for x in found:
        end = x.ended.isoformat() if x.ended else "open"
        other = "".join(f", {m} {n} not counted" for m, n in sorted(x.not_counted.items()))
        rows.append(
            f"{x.line_id:<12} {x.lot_id:<20} {x.product:<22} Qn {x.qn_g:g} g  "
            f"{x.started.isoformat()} – {end}  {x.trays} trays{other}"
        )
    _emit(doc, as_json, "\n".join(rows) or "no lot is stored")


def lot_rules_command(
    lot: Annotated[
        str | None, typer.Option("--lot", help="One lot's packs, over its whole run.")
    ] = None,
    line: Annotated[
        str | None,
        typer.Option(
            "--line",
            help="Line id: with --lot, the lot's line; alone, each lot in the period.",
            show_default=False,
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Only packs since: an age (8h) or an ISO time [with --line: 8h].",
            show_default=False,
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until", help="Only packs before: an age or an ISO time [now].", show_default=False
        ),
    ] = None,
    db: DbOption = None,
    as_json: JsonOption = False,
) -> None:
    """The packers' rules (Directive 76/211/EEC Annex II) per lot, or per lot in a shift.

    From the checkweigher's mass where a tray has one, else the estimate m̂ with its σ: packs,
    mean and its 95 % interval against Qn, packs below T1 and T2 (measured and expected),
    giveaway, and the verdict (complies, at risk, fails) with the rule that decides it.
    Production trays only. Exit 1 when a lot fails.
    """
    from storage.connection import connect
    from storage.queries import not_counted, pack_groups
    from views.command import check_line, find_lot
    from views.packers import Verdict, format_rules, profile_targets, rules_of
    from views.report import parse_instant

    if lot is None and line is None:
        raise ConfigError("give --lot, --line, or both")
    now = datetime.now(UTC)
    end = parse_instant(until, now, "--until") if until else None
    start = parse_instant(since, end or now, "--since") if since else None
    if lot is None and start is None:
        start = parse_instant("8h", end or now, "--since")
    if line is not None:
        check_line(line)
    dsn = load_settings(db=db).db.get_secret_value()
    with connect(dsn, "sqal-lot") as conn:
        the_line = find_lot(conn, lot, line).line_id if lot is not None else line
        assert the_line is not None
        groups = rules_of(pack_groups(conn, the_line, profile_targets(), lot, start, end))
        others = not_counted(conn, the_line, lot, start, end)
    if not groups:
        what = f"lot {lot}" if lot else f"line {the_line}"
        raise SqalError(f"{what} has no production tray with a mass in the period")
    doc = {
        "line": the_line,
        "lot": lot,
        "since": start.isoformat() if start else None,
        "until": end.isoformat() if end else None,
        "groups": [g.as_dict() for g in groups],
        "not_counted": {m: {"trays": n, "devices": k} for m, (n, k) in others.items()},
    }
    extra = [f"{m}: {n} trays on {k} devices, not counted" for m, (n, k) in sorted(others.items())]
    _emit(doc, as_json, "\n".join([format_rules(groups), *extra]))
    if any(g.rules.verdict is Verdict.FAILS for g in groups):
        raise typer.Exit(1)
