"""A migrated database filled with a realistic two-hour shift, for the operator-view tests.

Rows are built here, not by the simulator or ingest, and written with COPY. What is in them:

- line ``L1``: devices ``dev-01``..``dev-03`` on ``foie_gras_lobe_400g``, a tray every 15 s each;
  line ``L2``: ``dev-21`` on ``pate_terrine_300g`` for the first 20 minutes.
- ``dev-01`` loses both frames of seqs 100 and 101 (a gap of 2, no result) and sends the ToF
  frame of seq 200 twice with different ``ts`` (a seq duplicate the unique key lets through).
- ``dev-02`` reboots at 60 min: a last-will ``offline``, a new boot id, ``seq`` from 0 again.
- ``dev-03`` goes offline (last will) at 100 min and sends nothing after.
- every 40th tray of ``dev-01`` has no spectral frame (result ``missing_spectral``); the one at
  seq 159 also reads ``zones_invalid`` (glare on the film), so two certain codes tie at 1.0.
- masses ~ N(1.02·Qn, 3 %) with injected underfills; grades follow docs/domain.md §5 thresholds.
- dead letters: 5 ``bad_json`` and 3 ``schema`` on ``L1``, 2 ``bad_topic`` without a line.
- decisions (issue #17) from 30 min on, as if the line's analyzer were upgraded then: earlier
  results (and all of ``L2``) have NULL ``decision``, ``p_reject``, ``p_defects``, as results of
  analyzers before 2026-12 do. ``p_defects`` holds ``underfill`` and ``oxidation`` probabilities
  from the mass and index (σ 1 % of Qn, 0.05), ``missing_spectral`` at 1.0; P(REJECT) joins a
  critical underfill and a score below 0.5; HOLD at P(REJECT) ≥ 0.02 or without a spectrum,
  REJECT at ≥ 0.5, as the profile's ``decision`` block (docs/domain.md §5).
- lots (issue #19): ``L1-A`` from the start to 60 min (ended), ``L1-B`` from 60 min, still
  open; ``L1`` trays carry the lot of their time, ``L2`` trays none. Each ToF mass has a σ of
  4 % (the profile's mass model).
- calibration (issue #19): ``dev-03`` captures an empty-tray calibration from 30 to 33 min, a
  tray every 15 s in ``calibration`` mode (REJECT, about 5 g, ``underfill``), within ``L1-A``.
  They are stored and must count nowhere but apart.
- per-minute roll-ups computed from exactly the production result rows written (as the writer),
  and each device's last status (``device_last_status``) from the status rows, as ingest keeps them.
"""

from __future__ import annotations

import collections
import math
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from sqal.profiles import tne_g
from storage.laststatus import LAST_STATUS_COLUMNS, track_last_status
from storage.migrate import migrate
from views.boards import ProfileTarget

START = datetime(2026, 3, 2, 6, 0, tzinfo=UTC)
END = START + timedelta(hours=2)
PITCH = timedelta(seconds=15)
D0_MM = 260
DECISIONS_FROM = START + timedelta(minutes=30)
"""Results before this instant come from an analyzer without decisions (NULL)."""
LOT_B_FROM = START + timedelta(minutes=60)
"""``L1-A`` ends and ``L1-B`` starts here."""
CALIBRATION = (START + timedelta(minutes=30), START + timedelta(minutes=33))
"""``dev-03``'s calibration run."""
MASS_SIGMA_FRAC = 0.04
P_HOLD, P_REJECT = 0.02, 0.5


@dataclass
class Shift:
    """What was written, for the tests to compare against."""

    results: list[dict[str, Any]] = field(default_factory=list)
    tof: list[dict[str, Any]] = field(default_factory=list)
    spectral: list[dict[str, Any]] = field(default_factory=list)
    status: list[dict[str, Any]] = field(default_factory=list)
    dead: list[dict[str, Any]] = field(default_factory=list)
    lots: list[dict[str, Any]] = field(default_factory=list)
    sample_with_map: str = ""

    def results_of(self, line: str) -> list[dict[str, Any]]:
        """The line's production trays: what every figure counts."""
        return [r for r in self.results if r["line_id"] == line and r["mode"] == "production"]

    def not_product(self, line: str) -> list[dict[str, Any]]:
        """The line's trays in calibration or maintenance mode."""
        return [r for r in self.results if r["line_id"] == line and r["mode"] != "production"]

    def hold_reasons(self, line: str) -> collections.Counter[str]:
        """Held trays per top ``p_defects`` code, ties under each, none as ``(score only)``."""
        reasons = collections.Counter[str]()
        for r in self.results_of(line):
            if r["decision"] != "HOLD":
                continue
            p = r["p_defects"]
            top = max(p.values(), default=None)
            reasons.update([k for k, v in p.items() if v == top] or ["(score only)"])
        return reasons


def _height_map(rng: np.random.Generator, mass_g: float) -> tuple[list[int], list[int]]:
    """8x8 distances (mm) of a dome-shaped lobe under a sensor d0 = 260 mm above the tray."""
    r, c = np.mgrid[0:8, 0:8]
    rho2 = ((c - 3.5) / 3.2) ** 2 + ((r - 3.5) / 2.4) ** 2
    h = 44.0 * (mass_g / 408.0) * np.clip(1 - rho2, 0, None) ** 0.35
    dist = np.rint(D0_MM - h + rng.normal(0, 1.5, h.shape)).astype(int)
    status = np.full(h.shape, 5)
    status[0, 0] = 255  # a corner zone sees no target
    status[7, 7] = 9
    return dist.ravel().tolist(), status.ravel().tolist()


def _phi(x: float) -> float:
    return 0.5 * math.erfc(-x / math.sqrt(2))


def _decision(
    qn: float,
    tne: float,
    mass: float,
    oxidation: float,
    has_spec: bool,
    score: float,
    certain: set[str],
) -> dict[str, Any]:
    """The decision columns of a tray, deterministic in its figures (no draw from the rng)."""
    sd_g = 0.01 * qn
    p = {"underfill": _phi((qn - tne - mass) / sd_g), **dict.fromkeys(certain, 1.0)}
    if has_spec:
        p["oxidation"] = _phi((oxidation - 0.35) / 0.05)
    else:
        p["missing_spectral"] = 1.0
    p_defects = {k: round(v, 3) for k, v in p.items() if v >= 0.01}
    p_crit = _phi((qn - 2 * tne - mass) / sd_g)
    p_reject = 1 - (1 - p_crit) * (1 - _phi((0.5 - score) / 0.05))
    decision = (
        "REJECT"
        if p_reject >= P_REJECT
        else "HOLD"
        if p_reject >= P_HOLD or not has_spec
        else "PASS"
    )
    return {
        "decision": decision,
        "p_reject": round(p_reject, 4),
        "p_defects": p_defects,
        "data_quality": 0.9 if has_spec else 0.5,
    }


def _grade(score: float, defects: set[str], critical: bool, missing: bool) -> str:
    grade = "A" if score >= 0.85 else "B" if score >= 0.70 else "C" if score >= 0.50 else "REJECT"
    if critical:
        return "REJECT"
    if (defects or missing) and grade == "A":
        return "B"
    return grade


def _trays(
    rng: np.random.Generator,
    shift: Shift,
    line: str,
    device: str,
    profile: str,
    qn: float,
    until: datetime,
    reboot_at: datetime | None,
) -> None:
    tne = tne_g(qn)
    boot = f"{rng.integers(0, 2**24):06x}"
    seq, t = 0, START + timedelta(seconds=float(rng.uniform(0, 10)))
    while t < until:
        if reboot_at is not None and t >= reboot_at:
            boot, seq, reboot_at = f"{rng.integers(0, 2**24):06x}", 0, None
            t += timedelta(seconds=30)
        sample = f"{device}-{boot}-{seq:08d}"
        lost = device == "dev-01" and seq in (100, 101)
        if not lost:
            mass = float(rng.normal(1.02 * qn, 0.03 * qn))
            if rng.random() < 0.04:
                mass *= 1 - float(rng.uniform(tne / qn, 0.12))
            _tray(rng, shift, line, device, profile, qn, tne, sample, seq, t, mass)
        seq += 1
        t += PITCH


def _tray(
    rng: np.random.Generator,
    shift: Shift,
    line: str,
    device: str,
    profile: str,
    qn: float,
    tne: float,
    sample: str,
    seq: int,
    ts: datetime,
    mass: float,
) -> None:
    lag = timedelta(milliseconds=float(rng.lognormal(np.log(20), 0.8)))
    dist, status = _height_map(rng, mass)
    tof = {
        "ts": ts,
        "line_id": line,
        "device_id": device,
        "sample_id": sample,
        "seq": seq,
        "distance_mm": dist,
        "target_status": status,
        "received_at": ts + lag,
    }
    shift.tof.append(tof)
    if device == "dev-01" and seq == 200:
        shift.tof.append({**tof, "ts": ts + timedelta(milliseconds=400)})
    has_spec = not (device == "dev-01" and seq % 40 == 39)
    if has_spec:
        st = ts + timedelta(milliseconds=float(rng.uniform(5, 60)))
        shift.spectral.append(
            {
                "ts": st,
                "line_id": line,
                "device_id": device,
                "sample_id": sample,
                "seq": seq,
                "received_at": st + lag,
            }
        )
    defects: set[str] = set()
    critical = mass < qn - 2 * tne
    if mass < qn - tne:
        defects.add("underfill")
    oxidation = float(np.clip(rng.normal(0.15, 0.08), 0, 1))
    if oxidation >= 0.35:
        defects.add("oxidation")
    if not has_spec:
        defects.add("missing_spectral")
    glare = device == "dev-01" and seq == 159
    if glare:
        defects.add("zones_invalid")
    fill = 1 - min(1.0, abs(mass / qn - 1) / 0.12)
    score = float(np.clip(0.55 * fill + 0.45 * (1 - oxidation) + rng.normal(0, 0.03), 0, 1))
    grade = _grade(score, defects - {"missing_spectral"}, critical, not has_spec)
    decided = (
        _decision(qn, tne, mass, oxidation, has_spec, score, {"zones_invalid"} if glare else set())
        if ts >= DECISIONS_FROM and line == "L1"
        else {"decision": None, "p_reject": None, "p_defects": None, "data_quality": None}
    )
    shift.results.append(
        {
            **decided,
            "ts": ts,
            "line_id": line,
            "device_id": device,
            "sample_id": sample,
            "profile": profile,
            "final_score": score,
            "final_grade": grade,
            "confidence": 0.9 if has_spec else 0.5,
            "defects": sorted(defects),
            "tof_mass_g": mass,
            "tof_sigma_mass_g": MASS_SIGMA_FRAC * mass,
            "mode": "production",
            "lot_id": (("L1-A" if ts < LOT_B_FROM else "L1-B") if line == "L1" else None),
            "tof_volume_mm3": ProfileTarget.load(profile).volume_cm3(mass) * 1000,
            "tof_avg_height_mm": 30.0,
            "spectral_present": has_spec,
            "spectral_oxidation_index": oxidation if has_spec else None,
            "spectral_freshness_index": float(rng.uniform(0.7, 1)) if has_spec else None,
            "processing_ms": float(rng.lognormal(np.log(3), 0.4)),
            "received_at": ts + lag + timedelta(milliseconds=80),
        }
    )


def _calibration(shift: Shift) -> None:
    """``dev-03``'s empty-tray calibration: REJECTs of a few grams, in calibration mode."""
    t, k = CALIBRATION[0], 0
    while t < CALIBRATION[1]:
        shift.results.append(
            {
                "ts": t, "line_id": "L1", "device_id": "dev-03", "sample_id": f"dev-03-cal-{k:04d}",
                "profile": "foie_gras_lobe_400g", "final_score": 0.0, "final_grade": "REJECT",
                "confidence": 0.9, "defects": ["underfill"], "tof_mass_g": 4.8 + 0.1 * k,
                "tof_sigma_mass_g": 2.0, "tof_volume_mm3": 5000.0, "tof_avg_height_mm": 0.5,
                "spectral_present": True, "spectral_oxidation_index": 0.1,
                "spectral_freshness_index": 0.9, "processing_ms": 3.0, "decision": "REJECT",
                "p_reject": 1.0, "p_defects": {"underfill": 1.0}, "data_quality": 0.9,
                "mode": "calibration", "lot_id": "L1-A", "received_at": t + timedelta(seconds=1),
            }
        )  # fmt: skip
        t += PITCH
        k += 1


def _status(shift: Shift, line: str, device: str, events: list[tuple[datetime, str]]) -> None:
    for t, state in events:
        row = {"ts": t, "line_id": line, "device_id": device, "state": state}
        if state == "online":
            row |= {"firmware": "1.4.2", "temperature_c": 31.5, "uptime_s": 60.0}
        shift.status.append(row)


def build_shift(seed: int = 7) -> Shift:
    """The rows of the shift described in the module docstring (deterministic for a seed)."""
    rng = np.random.default_rng(seed)
    shift = Shift()
    m = timedelta(minutes=1)
    plan = [
        ("L1", "dev-01", END, None),
        ("L1", "dev-02", END, START + 60 * m),
        ("L1", "dev-03", START + 100 * m, None),
        ("L2", "dev-21", START + 20 * m, None),
    ]
    for line, device, until, reboot in plan:
        profile, qn = (
            ("pate_terrine_300g", 300.0) if line == "L2" else ("foie_gras_lobe_400g", 400.0)
        )
        _trays(rng, shift, line, device, profile, qn, until, reboot)
        events = [(START - m, "online")] + [(START + k * 5 * m, "online") for k in range(1, 24)]
        if device == "dev-02":
            sec = timedelta(seconds=1)
            events += [(START + 60 * m + 2 * sec, "offline"), (START + 60 * m + 25 * sec, "online")]
        if device == "dev-03":
            events = [e for e in events if e[0] < START + 100 * m] + [(START + 100 * m, "offline")]
        _status(shift, line, device, sorted(events))
    _calibration(shift)
    shift.lots = [
        {"line_id": "L1", "lot_id": "L1-A", "product": "foie_gras_lobe_400g", "qn_g": 400.0,
         "tne_g": 12.0, "started": START, "ended": LOT_B_FROM, "note": "morning"},
        {"line_id": "L1", "lot_id": "L1-B", "product": "foie_gras_lobe_400g", "qn_g": 400.0,
         "tne_g": 12.0, "started": LOT_B_FROM, "ended": None, "note": None},
    ]  # fmt: skip
    dead: list[tuple[str, str, str | None]] = (
        [("bad_json", "ingest", "L1")] * 5
        + [("schema", "analyzer", "L1")] * 3
        + [("bad_topic", "ingest", None)] * 2
    )
    for k, (reason, stage, dead_line) in enumerate(dead):
        shift.dead.append(
            {
                "received_at": START + (7 + 11 * k) * m,
                "stage": stage,
                "reason": reason,
                "line_id": dead_line,
                "device_id": "dev-01" if dead_line else None,
                "topic": f"sqal/v1/{dead_line or 'x/y/z/w'}/dev-01/tof",
                "detail": f"{reason} at byte {k}",
                "payload": b"{oops",
            }
        )
    # the latest tray of dev-01, so it is among the 200 the sample variable offers
    shift.sample_with_map = [r for r in shift.results if r["device_id"] == "dev-01"][-1][
        "sample_id"
    ]
    return shift


def _copy(
    conn: psycopg.Connection, table: str, rows: list[dict[str, Any]], fixed: dict[str, Any]
) -> None:
    cols = sorted({k for r in rows for k in r} | set(fixed))
    with conn.cursor() as cur, cur.copy(f"COPY {table} ({', '.join(cols)}) FROM STDIN") as cp:
        for r in rows:
            values = (r.get(c, fixed.get(c)) for c in cols)
            cp.write_row([Jsonb(v) if isinstance(v, dict) else v for v in values])


def _rollups(results: list[dict[str, Any]]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    per: dict[tuple[Any, ...], collections.Counter[str]] = collections.defaultdict(
        collections.Counter
    )
    score: dict[tuple[Any, ...], float] = collections.defaultdict(float)
    defects: collections.Counter[tuple[Any, ...]] = collections.Counter()
    for r in results:
        if r["mode"] != "production":
            continue  # as storage.rollups: only product is rolled up
        key = (r["ts"].replace(second=0, microsecond=0), r["line_id"], r["device_id"])
        per[key][r["final_grade"]] += 1
        score[key] += r["final_score"]
        for d in r["defects"]:
            defects[(*key, d)] += 1
    yield (
        "results_1m",
        [
            {
                "bucket": k[0],
                "line_id": k[1],
                "device_id": k[2],
                "n_total": sum(c.values()),
                "n_a": c["A"],
                "n_b": c["B"],
                "n_c": c["C"],
                "n_reject": c["REJECT"],
                "score_sum": score[k],
                "score_count": sum(c.values()),
            }
            for k, c in per.items()
        ],
    )
    yield (
        "defects_1m",
        [
            {"bucket": k[0], "line_id": k[1], "device_id": k[2], "defect": k[3], "n": n}
            for k, n in defects.items()
        ],
    )


def _broker_stats(shift: Shift) -> list[dict[str, Any]]:
    """$SYS readings every 10 s over the shift: a few drops, a small stored backlog."""
    times = sorted(r["ts"] for r in shift.results)
    rows, t, dropped = [], times[0], 0.0
    while t <= times[-1]:
        dropped += 1.0 if t.minute % 17 == 0 and t.second == times[0].second else 0.0
        rows.append({"ts": t, "counter": "publish_dropped", "value": dropped})
        rows.append({"ts": t, "counter": "stored_messages", "value": float(t.second % 7)})
        t += timedelta(seconds=10)
    return rows


def fill(dsn: str, shift: Shift) -> None:
    """Migrate the database at ``dsn`` and write ``shift`` into it."""
    zeros = [0.0] * 64
    with psycopg.connect(dsn, autocommit=True) as conn:
        migrate(conn)
    with psycopg.connect(dsn) as conn:
        _copy(
            conn,
            "tof_frames",
            shift.tof,
            {
                "v": 1,
                "layout": 8,
                "signal_per_spad": zeros,
                "ambient_per_spad": zeros,
                "range_sigma_mm": [2.0] * 64,
                "reflectance_pct": [40.0] * 64,
            },
        )
        spec = {
            f"{c}": 1000
            for c in (
                "f1_415nm",
                "f2_445nm",
                "f3_480nm",
                "f4_515nm",
                "f5_555nm",
                "f6_590nm",
                "f7_630nm",
                "f8_680nm",
                "clear",
                "nir_910nm",
            )
        }
        _copy(
            conn,
            "spectral_frames",
            shift.spectral,
            {
                **spec,
                "v": 1,
                "flicker": 0,
                "gain": 16.0,
                "atime": 29,
                "astep": 199,
                "integration_ms": 16.7,
                "led_ma": 24,
                "saturated": [],
            },
        )
        _copy(
            conn,
            "results",
            shift.results,
            {"v": 1, "calibration_id": "cal-x", "tof_present": True, "analyzer_version": "0.1.0"},
        )
        _copy(conn, "device_status", shift.status, {"v": 1})
        with conn.cursor() as cur:  # as ingest does for the status rows it inserts
            track_last_status(
                cur, [tuple(r.get(c) for c in LAST_STATUS_COLUMNS) for r in shift.status]
            )
        _copy(conn, "lots", shift.lots, {})
        _copy(conn, "dead_letters", shift.dead, {})
        _copy(conn, "broker_stats", _broker_stats(shift), {})
        for table, rows in _rollups(shift.results):
            _copy(conn, table, rows, {})
        conn.commit()
