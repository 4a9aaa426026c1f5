"""``sqal grafana build|push`` and ``sqal report``: typer-annotated functions the CLI registers."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, tzinfo
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import typer

from sqal.errors import ConfigError, SqalError
from sqal.settings import load_settings

if TYPE_CHECKING:
    from storage.queries import LotInfo

DbOption = Annotated[
    str | None, typer.Option("--db", metavar="DSN", help="PostgreSQL DSN [env SQAL_DB].")
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object on stdout.")]
FOLDER_UID = "sqal"
"""The Grafana folder ``sqal grafana push`` files the dashboards in (as the provider does)."""


class GrafanaPushError(SqalError):
    """Grafana refused or could not be reached while uploading dashboards."""


def grafana_build_command(
    out: Annotated[
        Path, typer.Option("--out", help="Folder to write one JSON file per dashboard into.")
    ] = Path("grafana/dashboards"),
    check: Annotated[
        bool,
        typer.Option("--check", help="Write nothing; exit 1 if a file differs from the build."),
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Generate the Grafana dashboards (Line overview, Quality, Fleet) from code."""
    from views.boards import build_boards
    from views.dashboards import write_dashboards

    boards = build_boards()
    if check:
        try:
            stale = [
                str(out / f"{b.uid}.json")
                for b in boards
                if not (out / f"{b.uid}.json").is_file()
                or (out / f"{b.uid}.json").read_text(encoding="utf-8") != b.to_json()
            ]
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigError(f"--out {out}: cannot read ({exc})") from None
        _emit({"stale": stale}, as_json, "\n".join(f"stale: {p}" for p in stale) or "up to date")
        if stale:
            raise typer.Exit(1)
        return
    try:
        paths = write_dashboards(boards, out)
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write ({exc.strerror})") from None
    panels = {b.uid: len(b.panels) for b in boards}
    _emit(
        {"written": [str(p) for p in paths], "panels": panels},
        as_json,
        "\n".join(f"wrote {p} ({panels[p.stem]} panels)" for p in paths),
    )


def grafana_push_command(
    url: Annotated[str, typer.Option("--url", help="Grafana base URL, e.g. http://grafana:3000.")],
    token: Annotated[
        str,
        typer.Option(
            "--token",
            help="Service-account token with dashboard write rights [env GRAFANA_TOKEN].",
            envvar="GRAFANA_TOKEN",
            show_envvar=False,
        ),
    ],
    as_json: JsonOption = False,
) -> None:
    """Upload the dashboards to a running Grafana (folder SQAL), replacing older versions."""
    from views.boards import build_boards

    try:
        host = urlsplit(url).hostname
    except ValueError:  # e.g. an unclosed IPv6 bracket
        host = None
    if not url.startswith(("http://", "https://")) or not host:
        raise ConfigError(f"--url {url!r}: give an http:// or https:// URL with a host")
    boards = build_boards()
    pushed, warning = push_dashboards(url, token, [b.to_dict() for b in boards])
    _emit(
        {"pushed": pushed, "warning": warning},
        as_json,
        "\n".join(
            [*(f"pushed {u}" for u in pushed), *([f"Warning: {warning}"] if warning else [])]
        ),
    )


def push_dashboards(url: str, token: str, docs: list[dict[str, Any]]) -> tuple[list[str], str]:
    """Create the folder if needed and upload ``docs``; the URLs pushed and a warning (or "").

    Raises:
        GrafanaPushError: unreachable, the token refused, or a dashboard rejected.
    """
    import niquests
    from grafana_client.api import GrafanaApi
    from grafana_client.client import GrafanaClientError, GrafanaException

    from views.dashboards import DATASOURCE_UID

    # An empty token lets credentials in the URL (http://user:pass@host) through.
    api = GrafanaApi.from_url(url, credential=token or None, timeout=10.0)
    try:
        try:
            api.folder.get_folder(FOLDER_UID)
        except GrafanaClientError as exc:
            if exc.status_code != 404:
                raise
            api.folder.create_folder("SQAL", uid=FOLDER_UID)
        warning = ""
        try:
            api.datasource.get_datasource_by_uid(DATASOURCE_UID)
        except GrafanaClientError as exc:
            if exc.status_code != 404:
                raise
            warning = (
                f"Grafana has no data source with uid {DATASOURCE_UID}; provision "
                "grafana/provisioning/datasources/sqal.yaml or the panels stay empty"
            )
        pushed = []
        for doc in docs:
            body = {
                "dashboard": {**doc, "id": None},
                "folderUid": FOLDER_UID,
                "overwrite": True,
                "message": "sqal grafana push",
            }
            answer = api.dashboard.update_dashboard(body)
            pushed.append(url.rstrip("/") + str(answer.get("url", f"/d/{doc['uid']}")))
    except GrafanaException as exc:
        hint = "; check --token" if exc.status_code in (401, 403) else ""
        raise GrafanaPushError(
            f"Grafana at {url} answered {exc.status_code}: {exc.message}{hint}"
        ) from None
    except niquests.RequestException as exc:
        raise GrafanaPushError(f"cannot reach Grafana at {url} ({type(exc).__name__})") from None
    return pushed, warning


def report_command(
    line: Annotated[
        str | None,
        typer.Option("--line", help="Line id to report on (with --lot: the lot's line)."),
    ] = None,
    lot: Annotated[
        str | None,
        typer.Option(
            "--lot", help="Report on one lot: its trays over its whole run, unless --since/--until."
        ),
    ] = None,
    db: DbOption = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            help="Start: an age before --until (8h, 90m) or an ISO time [8h; with --lot its "
            "start].",
            show_default=False,
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            help="End: an age before now or an ISO time [now; with --lot its end].",
            show_default=False,
        ),
    ] = None,
    out: Annotated[Path, typer.Option("--out", help="PDF file to write.")] = Path("shift.pdf"),
    out_dir: Annotated[
        Path | None,
        typer.Option(
            "--out-dir",
            help="Write into this folder instead, named LINE[-LOT]-YYYYMMDD-HHMM.pdf from the "
            "period's start in --tz (overrides --out).",
            show_default=False,
        ),
    ] = None,
    html: Annotated[
        bool, typer.Option("--html", help="Also write the report as HTML beside the PDF.")
    ] = False,
    csv_out: Annotated[
        bool,
        typer.Option(
            "--csv",
            help="Also export the trays (production, of the lot or period) as CSV beside the "
            "PDF: time, device, sample, lot, decision, grade, defects, the mass judged on and "
            "its source and σ.",
        ),
    ] = False,
    tz: Annotated[
        str | None,
        typer.Option(
            "--tz",
            metavar="ZONE",
            help="The plant's time zone for the report's times (IANA name, e.g. Europe/Paris) "
            "[default: this machine's].",
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Write a printable shift report: the packers' rules per lot, decisions and HOLD reasons,
    defects, SPC, devices, a signature block; the PDF and the HTML page come from one template.
    Production trays only; calibration runs are counted apart."""
    from storage.connection import connect
    from views.report import (
        load_record,
        load_shift,
        mass_groups,
        not_counted_lines,
        parse_instant,
        report_context,
        write_report,
        write_trays_csv,
    )

    if line is None and lot is None:
        raise ConfigError("give --line, --lot, or both")
    if line is not None:
        check_line(line)
    now = datetime.now(UTC)
    # Times are checked before the database is asked (a bad one is a usage error).
    end = parse_instant(until, now, "--until") if until else now
    start = parse_instant(since or "8h", end, "--since")
    zone = plant_zone(tz)
    dsn = load_settings(db=db).db.get_secret_value()
    with connect(dsn, "sqal-report") as conn:
        if lot is not None:
            info = find_lot(conn, lot, line)
            line = info.line_id
            end = end if until else (info.ended or now)
            start = parse_instant(since, end, "--since") if since else info.started
        assert line is not None
        data = load_shift(conn, line, start, end, lot)
        if lot is not None and not data.trays:
            # A known line's quiet shift still gets its (empty) report, on record; a lot without
            # a production tray in the period has nothing to report on.
            raise ConfigError(
                f"--lot {lot}: no production tray of line {line} between {start.isoformat()} "
                f"and {end.isoformat()}"
            )
        record = load_record(conn, line, start, end)
        if out_dir is not None:
            out = report_path(out_dir, line, lot, start, zone)
        paths = write_report(report_context(data, record, mass_groups(data), zone), out, html)
        if csv_out:
            paths.append(write_trays_csv(conn, out.with_suffix(".csv"), line, start, end, lot))
    summary = {
        "line": line,
        "lot": lot,
        "since": start.isoformat(),
        "until": end.isoformat(),
        "trays": data.trays,
        "grades": data.grades,
        "reject_rate": data.reject_rate,
        "decisions": data.decisions,
        "not_counted": {m: {"trays": n, "devices": k} for m, (n, k) in data.not_counted.items()},
        "packers_rules": [g.as_dict() for g in data.packers],
        "written": [str(p) for p in paths],
    }
    rate = "–" if data.reject_rate is None else f"{100 * data.reject_rate:.1f} %"
    lines = [
        f"line {line}{f' lot {lot}' if lot else ''}: {data.trays} trays, reject rate {rate}; "
        "wrote " + ", ".join(str(p) for p in paths),
        *not_counted_lines(data),
        *(f"packers' rules, lot {g.lot_id or '(none open)'}: {g.rules.verdict.value} "
          f"({g.rules.rule_text})" for g in data.packers),
    ]  # fmt: skip
    _emit(summary, as_json, "\n".join(lines))


def report_path(folder: Path, line: str, lot: str | None, start: datetime, zone: tzinfo) -> Path:
    """``--out-dir``: the report's path in ``folder`` (created if missing), named by
    :func:`views.schedule.report_name`.

    Raises:
        ConfigError: the folder cannot be created.
    """
    from views.schedule import report_name

    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"--out-dir {folder}: cannot create ({exc.strerror})") from None
    return folder / report_name(line, lot, start, zone)


def report_schedule_command(
    line: Annotated[str, typer.Option("--line", help="Line id to report on.")],
    out_dir: Annotated[
        Path,
        typer.Option("--out-dir", help="Folder for the reports, LINE-YYYYMMDD-HHMM.pdf each."),
    ],
    at: Annotated[
        str, typer.Option("--at", metavar="HH:MM", help="A shift start in the plant's time.")
    ] = "06:00",
    every: Annotated[
        str,
        typer.Option("--every", help="Shift length; divides a day (8h: 06:00, 14:00, 22:00)."),
    ] = "8h",
    grace: Annotated[
        str,
        typer.Option("--grace", help="Wait this long after a shift ends, for its last trays."),
    ] = "5m",
    once: Annotated[
        bool,
        typer.Option(
            "--once",
            help="Report the latest shift that ended (--grace ago) and exit: for a systemd timer "
            "or cron.",
        ),
    ] = False,
    before: Annotated[
        str | None,
        typer.Option(
            "--before",
            help="With --once: the latest shift that ended before this time (ISO, or an age "
            "like 8h) instead of now, to write a missed report later.",
            show_default=False,
        ),
    ] = None,
    tz: Annotated[
        str | None,
        typer.Option(
            "--tz",
            metavar="ZONE",
            help="The plant's time zone for the shift times and file names (IANA name) "
            "[default: this machine's].",
        ),
    ] = None,
    heartbeat: Annotated[
        Path | None,
        typer.Option(
            "--heartbeat",
            help="Touch this file at least every minute while waiting (for a health check).",
        ),
    ] = None,
    db: DbOption = None,
    html: Annotated[
        bool, typer.Option("--html", help="Also write each report as HTML beside the PDF.")
    ] = False,
    as_json: JsonOption = False,
) -> None:
    """Write each shift's report into a folder at the end of the shift (sqal report --out-dir for
    each period between shift starts, which follow the plant's clock across DST changes)."""
    import time as clock_time

    from storage.retention import parse_age
    from views.report import parse_instant
    from views.schedule import Shifts, run_once, run_schedule

    check_line(line)
    if before is not None and not once:
        raise ConfigError("--before goes with --once")
    zone = plant_zone(tz)
    shifts = Shifts.parse(at, parse_age(every, "--every"), zone)
    wait = parse_age(grace, "--grace") if grace not in ("0", "0s") else timedelta(0)

    def step(start: datetime, end: datetime) -> None:
        report_command(
            line=line, db=db, since=start.isoformat(), until=end.isoformat(), out_dir=out_dir,
            html=html, tz=tz, as_json=as_json,
        )  # fmt: skip

    if once:
        now = datetime.now(UTC)
        run_once(shifts, step, parse_instant(before, now, "--before") if before else now, wait)
        return
    run_schedule(shifts, step, wait, lambda: datetime.now(UTC), clock_time.sleep, heartbeat)


def check_line(line: str) -> str:
    """``line`` if it is a valid line id.

    Raises:
        ConfigError: it is not.
    """
    from sqal.wire import is_valid_id

    if not is_valid_id(line):
        raise ConfigError(f"--line {line!r}: a line id is 1-64 of A-Z a-z 0-9 _ -")
    return line


def find_lot(conn: Any, lot: str, line: str | None) -> LotInfo:
    """The stored lot ``lot`` (of ``line`` when given).

    Raises:
        ConfigError: no such lot, or the id names lots of several lines and no line was given.
    """
    from storage.queries import lots

    if line is not None:
        check_line(line)
    found = lots(conn, line=line, lot=lot)
    if not found:
        where = f" on line {line}" if line else ""
        raise ConfigError(
            f"--lot {lot}: no such lot{where} in the database; sqal lot list shows the lots"
        )
    if len(found) > 1:
        lines = ", ".join(sorted(x.line_id for x in found))
        raise ConfigError(f"--lot {lot} names a lot on each of lines {lines}; give --line")
    return found[0]


def plant_zone(name: str | None) -> tzinfo:
    """``--tz``: an IANA zone by name, else this machine's local zone.

    Raises:
        ConfigError: an unknown zone name.
    """
    if name is None:
        local = datetime.now().astimezone().tzinfo
        return local if local is not None else UTC
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(f"--tz {name!r}: not a time zone name (e.g. Europe/Paris, UTC)") from None


def _emit(obj: Any, as_json: bool, text: str) -> None:
    typer.echo(json.dumps(obj, default=str) if as_json else text)
