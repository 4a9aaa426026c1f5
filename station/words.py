"""What the station says, in plain words: defect codes, decisions, alarms, and the pages' text.

Templates call ``t(key, **values)``; every string a page shows goes through it, so another
language (issue #20 item 6: French, chosen per user) is one more catalogue here. English is the
only catalogue yet, and the fallback for a key another catalogue lacks.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from sqal.wire import Decision, DefectCode

DEFECT_WORDS: Mapping[DefectCode, str] = {
    DefectCode.UNDERFILL: "too little product in the tray",
    DefectCode.OVERFILL: "too much product in the tray",
    DefectCode.SURFACE_IRREGULAR: "uneven surface",
    DefectCode.TILTED: "product tilted in the tray",
    DefectCode.ZONES_INVALID: "height sensor could not read most of the tray",
    DefectCode.OXIDATION: "browning (oxidised surface)",
    DefectCode.DISCOLORATION: "colour off",
    DefectCode.FAT_YELLOWING: "yellowing fat",
    DefectCode.SPECTRAL_SATURATED: "colour sensor overexposed",
    DefectCode.MISSING_TOF: "no height reading for this tray",
    DefectCode.MISSING_SPECTRAL: "no colour reading for this tray",
    DefectCode.MISSING_WEIGHT: "no checkweigher weight for this tray",
    DefectCode.LOW_CONFIDENCE: "the sensors are unsure",
    DefectCode.UNCALIBRATED: "colour sensor not calibrated",
}
"""Each defect code as an operator at the line would say it (docs/domain.md §2, §4, §5)."""

DECISION_WORDS: Mapping[Decision, str] = {
    Decision.PASS: "ship",
    Decision.HOLD: "re-check by hand",
    Decision.REJECT: "bin",
}

EN: Mapping[str, str] = {
    "app.title": "SQAL station",
    "nav.lines": "Lines",
    "nav.hold": "HOLD queue",
    "nav.quality": "Quality",
    "nav.logout": "Sign out",
    "login.title": "Sign in",
    "login.user": "User",
    "login.password": "Password",
    "login.submit": "Sign in",
    "login.failed": "Unknown user or wrong password.",
    "lines.title": "Lines",
    "lines.none": "No line has sent a result or a device status yet.",
    "line.title": "Line {line}",
    "line.trays": "Last trays",
    "line.devices": "Devices",
    "line.alarms": "Alarms",
    "line.no_alarms": "No alarm.",
    "line.selected": "Selected tray",
    "line.select_hint": "Click a tray to see its height map and colour.",
    "line.reject_rate": "Reject rate",
    "line.hold_rate": "HOLD rate",
    "line.limit": "limit {limit}",
    "line.window": "last {minutes} min, {n} trays",
    "live.live": "live",
    "live.stale": "stale",
    "live.broker_down": "no connection to the broker",
    "live.no_data": "no result for {seconds} s",
    "live.station_down": "no connection to the station",
    "live.db_down": "database unreachable: history and re-checks unavailable",
    "col.time": "Time",
    "col.device": "Device",
    "col.sample": "Tray",
    "col.grade": "Grade",
    "col.decision": "Decision",
    "col.reasons": "Reasons",
    "col.state": "State",
    "col.last_seen": "Last seen",
    "col.mass": "Mass",
    "col.line": "Line",
    "device.online": "online",
    "device.offline": "offline",
    "device.unknown": "no status",
    "alarm.device_offline": "Device {subject} offline",
    "alarm.reject_rate": "Reject rate above the line's limit",
    "alarm.dead_letters": "Unusable messages arriving",
    "alarm.ack": "Acknowledge",
    "alarm.acked": "acknowledged by {user}",
    "alarm.cleared": "cleared",
    "evidence.heights": "Height map (mm above the tray base)",
    "evidence.no_frame": "The tray's height frame is not stored (yet).",
    "evidence.colour": "Colour",
    "evidence.no_colour": "No colour reading.",
    "evidence.mass": "Mass estimate",
    "evidence.weighed": "weighed {mass} g",
    "evidence.p_defects": "Probabilities",
    "evidence.p_reject": "P(reject)",
    "hold.title": "HOLD queue",
    "hold.none": "No tray is waiting for a re-check.",
    "hold.answer": "Re-check",
    "hold.accept": "Accept (ship)",
    "hold.reject": "Reject (bin)",
    "hold.mass": "Measured mass, g (optional)",
    "hold.note": "Note (optional)",
    "hold.submit": "Record",
    "hold.recorded": "Re-check of {sample} recorded: {answer}.",
    "hold.recent": "Recent re-checks",
    "quality.title": "Quality",
    "quality.rechecks": "Verdicts against the operators' re-checks (last {days} days)",
    "quality.no_rechecks": "No re-check recorded yet.",
    "quality.report": "Shift report",
    "quality.report_make": "Open the report",
    "quality.since": "From",
    "quality.until": "To",
    "error.forbidden": "Your role ({role}) may not do this.",
    "error.csrf": "The form expired or did not come from this page; reload it and try again.",
    "error.db": "The database is unreachable; nothing was recorded. Try again shortly.",
    "error.not_found": "Not found.",
}

CATALOGUES: Mapping[str, Mapping[str, str]] = {"en": EN}
LANGUAGES = tuple(CATALOGUES)


def translator(language: str) -> Callable[..., str]:
    """``t(key, **values)`` in ``language`` (English for a key or language it lacks).

    An unknown key is shown as itself, so a missing string is visible on the page, not an error.
    """
    table = CATALOGUES.get(language, EN)

    def t(key: str, **values: object) -> str:
        text = table.get(key) or EN.get(key) or key
        return text.format(**values) if values else text

    return t


def defect_words(codes: list[str]) -> list[str]:
    """Plain words for defect codes (a code this build does not know is shown as is)."""
    out = []
    for code in codes:
        try:
            out.append(DEFECT_WORDS[DefectCode(code)])
        except ValueError:
            out.append(code.replace("_", " "))
    return out


def decision_words(decision: str | None) -> str:
    if decision is None:
        return "no decision (older analyzer)"
    try:
        return DECISION_WORDS[Decision(decision)]
    except ValueError:
        return decision
