"""The station's read API, sign-in, roles, CSRF, /healthz and /metrics (no browser).

A station runs in this process against the session's broker and a database of this module.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from typer.testing import CliRunner

from app.cli import app as cli
from embedded import Mosquitto, Postgres
from sqal.wire import Decision, DefectCode, DeviceState, DeviceStatus, Grade, Kind, Mode
from station.auth import Role, hash_password, verify_password
from storage import station as db
from tests.fix_pg import new_database
from tests.frames import spectral_frame, weight
from tests.station_kit import (
    Http,
    RunningStation,
    now_ts,
    result,
    running_station,
    station_db,
    store,
    tof,
)

LINE = "api-L1"
LOT_LINE = "api-L2"


@pytest.fixture(scope="module")
def dsn(pg: Postgres) -> Iterator[str]:
    with new_database(pg) as d:
        station_db(d)
        t0 = now_ts(-600)
        store(d, LINE, [
            (Kind.RESULT, result("n1", "s-pass", t0, Decision.PASS)),
            (Kind.RESULT, result("n1", "s-hold", t0 + timedelta(seconds=1), Decision.HOLD,
                                 Grade.C, [DefectCode.OXIDATION])),
            (Kind.RESULT, result("n2", "s-rej", t0 + timedelta(seconds=2), Decision.REJECT,
                                 Grade.REJECT, [DefectCode.UNDERFILL])),
        ])  # fmt: skip
        _lot_and_more(d, now_ts(-300))
        yield d


LOT = "LOT-7"


def _lot_and_more(dsn: str, t0: datetime) -> None:
    """Line LOT_LINE: lot LOT-7 with three production trays (one with all its frames) and a
    calibration tray, a device's status, and two dead letters."""
    with db.session(dsn, "lot") as conn:
        conn.execute(
            "INSERT INTO lots (line_id, lot_id, product, qn_g, tne_g, started)"
            " VALUES (%s, %s, 'foie gras lobe', 400, 9, %s)",
            (LOT_LINE, LOT, t0 - timedelta(minutes=1)),
        )
        for i, reason in enumerate(("bad_json", "schema")):
            conn.execute(
                "INSERT INTO dead_letters (stage, topic, line_id, device_id, reason, detail,"
                " payload) VALUES ('ingest', %s, %s, 'm1', %s, 'broken', %s)",
                (f"sqal/v1/{LOT_LINE}/m1/tof", LOT_LINE, reason, b"\xff{" + bytes([i])),
            )
    trays = [
        result("m1", f"lot-s{i}", t0 + timedelta(seconds=i), mass_g=395.0 + 5 * i).model_copy(
            update={"lot": LOT}
        )
        for i in range(3)
    ]
    cal = result("m1", "cal-s", t0 + timedelta(seconds=5)).model_copy(
        update={"lot": LOT, "mode": Mode.CALIBRATION}
    )
    store(dsn, LOT_LINE, [
        *[(Kind.RESULT, r) for r in [*trays, cal]],
        (Kind.TOF, tof("m1", "lot-s0", t0)),
        (Kind.SPECTRAL, spectral_frame("m1", sample_id="lot-s0", ts=t0)),
        (Kind.WEIGHT, weight("m1", sample_id="lot-s0", ts=t0)),
        (Kind.STATUS, DeviceStatus(device_id="m1", state=DeviceState.ONLINE, ts=t0,
                                   firmware="1.4.2")),
    ])  # fmt: skip


@pytest.fixture(scope="module")
def station(broker: Mosquitto, dsn: str) -> Iterator[RunningStation]:
    with running_station(broker.url, dsn) as st:
        yield st


@pytest.fixture(scope="module")
def token(dsn: str) -> str:
    out = CliRunner().invoke(cli, ["station", "token", "add", "erp", "--db", dsn])
    assert out.exit_code == 0, out.output
    return out.output.strip()


def test_results_need_a_token_and_filter_by_line_device_and_decision(
    station: RunningStation, token: str
) -> None:
    http = Http(station.url)
    status, body = http.api(f"/api/v1/results?line={LINE}", None)
    assert status == 401
    assert body == {"error": "a read-API token is required: Authorization: Bearer TOKEN "
                             "(sqal station token add)"}  # fmt: skip
    assert http.api(f"/api/v1/results?line={LINE}", "not-a-token") == (
        401,
        {"error": "unknown or revoked token"},
    )
    status, rows = http.api(f"/api/v1/results?line={LINE}", token)
    assert status == 200
    assert [r["sample_id"] for r in rows] == ["s-rej", "s-hold", "s-pass"]  # newest first
    assert rows[1]["decision"] == "HOLD"
    assert rows[1]["defects"] == ["oxidation"]
    _, rows = http.api(f"/api/v1/results?line={LINE}&decision=HOLD", token)
    assert [r["sample_id"] for r in rows] == ["s-hold"]
    _, rows = http.api(f"/api/v1/results?line={LINE}&device=n2", token)
    assert [r["sample_id"] for r in rows] == ["s-rej"]
    since = (now_ts(-600) + timedelta(seconds=1)).isoformat().replace("+00:00", "Z")
    _, rows = http.api(f"/api/v1/results?line={LINE}&since={since}&limit=1", token)
    assert [r["sample_id"] for r in rows] == ["s-rej"]
    _, rows = http.api("/api/v1/results?line=nowhere", token)
    assert rows == []


@pytest.mark.parametrize(
    ("query", "message"),
    [
        ("since=2026-01-01T08:00", "since: Input should have timezone info"),
        ("since=yesterday", "since: Input should be a valid datetime"),
        ("decision=MAYBE", "decision: Input should be 'PASS', 'HOLD' or 'REJECT'"),
        ("limit=0", "limit: Input should be greater than or equal to 1"),
        ("limit=5000", "limit: Input should be less than or equal to 1000"),
        ("line=L1/x", "line: String should match pattern"),
        ("colour=red", "colour: Extra inputs are not permitted"),
        ("since=2026-01-02T00:00Z&until=2026-01-01T00:00Z", "since must be before until"),
    ],
)
def test_a_bad_parameter_is_one_clear_4xx_error(
    station: RunningStation, token: str, query: str, message: str
) -> None:
    status, body = Http(station.url).api(f"/api/v1/results?{query}", token)
    assert status == 422
    assert set(body) == {"error"}
    assert message in body["error"]
    assert "Traceback" not in body["error"]


def test_healthz_and_metrics(station: RunningStation) -> None:
    http = Http(station.url)
    status, body, _ = http.get("/healthz")
    assert (status, body) == (200, "broker up, database up\n")
    status, body, headers = http.get("/metrics")
    assert status == 200
    assert "sqal_station_broker_connected 1.0" in body
    assert "sqal_station_requests_total" in body
    assert headers["content-type"].startswith("text/plain")
    status, body, _ = http.get("/api/openapi.json")
    assert status == 200
    paths = json.loads(body)["paths"]
    assert {"/api/v1/results", "/api/v1/samples/{line}/{device}/{sample_id}", "/api/v1/devices",
            "/api/v1/dead-letters", "/api/v1/dead-letters/{dead_id}", "/api/v1/lots",
            "/api/v1/lots/{line}/{lot_id}", "/api/v1/lots/{line}/{lot_id}/rules",
            "/api/v1/report.pdf", "/api/v1/report.csv"} <= set(paths)  # fmt: skip
    assert "lot" in {p["name"] for p in paths["/api/v1/results"]["get"]["parameters"]}


def test_pages_need_a_signed_in_user_and_writes_an_operator(station: RunningStation) -> None:
    http = Http(station.url)
    status, _, headers = http.get("/hold")
    assert status == 303
    assert headers["location"] == "/login?next=/hold"
    assert http.sign_in("op", "wrong password!") == 401
    assert http.sign_in("nobody") == 401
    viewer = Http(station.url)
    assert viewer.sign_in("eye") == 303
    status, body, _ = viewer.get("/hold")
    assert status == 200
    assert "s-hold" in body
    assert "/hold/recheck" not in body
    csrf = viewer.csrf("/hold")
    status, body, _ = viewer.post("/alarms/1/ack", {"csrf_token": csrf})
    assert status == 403
    assert "Your role (viewer) may not do this." in body


def test_an_operator_cannot_open_the_quality_pages(station: RunningStation) -> None:
    op = Http(station.url)
    assert op.sign_in("op") == 303
    for path in ("/quality", f"/quality/report.pdf?line={LINE}"):
        status, body, _ = op.get(path)
        assert status == 403, path
        assert "Your role (operator) may not do this." in body
    qa = Http(station.url)
    assert qa.sign_in("qa") == 303
    status, body, _ = qa.get("/quality")
    assert status == 200
    assert "Verdicts against the operators" in body
    status, body, headers = qa.get(f"/quality/report.pdf?line={LINE}&since=1h")
    assert status == 200
    assert headers["content-type"] == "application/pdf"
    status, body, _ = qa.get("/quality/report.pdf?line=nowhere&since=1h")
    assert status == 404
    assert "line nowhere: the database has no result" in body


def test_a_form_without_the_csrf_token_is_refused(station: RunningStation, dsn: str) -> None:
    op = Http(station.url)
    assert op.sign_in("op") == 303
    form = {"line": LINE, "device": "n1", "sample_id": "s-hold", "answer": "accept",
            "result_ts": (now_ts(-599)).isoformat()}  # fmt: skip
    for token in (None, "forged"):
        sent = dict(form, csrf_token=token) if token else form
        status, body, _ = op.post("/hold/recheck", sent)
        assert status == 403
        assert "The form expired or did not come from this page" in body
    assert Http(station.url).post("/login", {"username": "op", "password": "x"})[0] == 403
    with db.session(dsn, "count") as conn:
        assert conn.execute("SELECT count(*) FROM rechecks").fetchone() == (0,)


def test_passwords_are_argon2id_and_user_add_refuses_a_short_one(dsn: str) -> None:
    encoded = hash_password("a long enough one")
    assert encoded.startswith("$argon2id$")
    assert verify_password(encoded, "a long enough one")[0]
    assert not verify_password(encoded, "another one")[0]
    runner = CliRunner()
    out = runner.invoke(cli, ["station", "user", "add", "x", "--role", "operator", "--db", dsn],
                        env={"SQAL_STATION_PASSWORD": "short"})  # fmt: skip
    assert out.exit_code == 1
    assert "a password needs at least 10 characters" in str(out.exception or out.output)
    out = runner.invoke(cli, ["station", "user", "add", "new-op", "--role", "operator", "--db",
                              dsn], env={"SQAL_STATION_PASSWORD": "long enough now"})  # fmt: skip
    assert out.exit_code == 0, out.output
    assert out.output == "added new-op (operator, en)\n"
    with db.session(dsn, "read") as conn:
        user = db.get_user(conn, "new-op")
    assert user is not None
    assert user.role == Role.OPERATOR
    assert user.password_hash.startswith("$argon2id$")


def test_results_are_production_unless_asked_and_filter_by_lot(
    station: RunningStation, token: str
) -> None:
    http = Http(station.url)
    _, rows = http.api(f"/api/v1/results?line={LOT_LINE}", token)
    assert [r["sample_id"] for r in rows] == ["lot-s2", "lot-s1", "lot-s0"]
    assert {(r["lot_id"], r["mode"]) for r in rows} == {(LOT, "production")}
    _, rows = http.api(f"/api/v1/results?line={LOT_LINE}&mode=calibration", token)
    assert [r["sample_id"] for r in rows] == ["cal-s"]
    _, rows = http.api(f"/api/v1/results?line={LOT_LINE}&mode=any&lot={LOT}", token)
    assert len(rows) == 4
    _, rows = http.api("/api/v1/results?lot=LOT-none", token)
    assert rows == []


def test_a_sample_comes_with_its_frames(station: RunningStation, token: str) -> None:
    http = Http(station.url)
    status, doc = http.api(f"/api/v1/samples/{LOT_LINE}/m1/lot-s0", token)
    assert status == 200
    assert doc["result"]["sample_id"] == "lot-s0"
    assert doc["result"]["lot_id"] == LOT
    assert doc["result"]["tof_mass_g"] == 395.0
    assert len(doc["tof"]["distance_mm"]) == 8
    assert doc["tof"]["distance_mm"][3][3] == 194
    assert doc["spectral"]["gain"] == 16
    assert doc["weight"]["mass_g"] == 402.7
    # A result without stored frames: the frames are null.
    status, doc = http.api(f"/api/v1/samples/{LOT_LINE}/m1/lot-s1", token)
    assert status == 200
    assert (doc["tof"], doc["spectral"], doc["weight"]) == (None, None, None)
    status, doc = http.api(f"/api/v1/samples/{LOT_LINE}/m1/nothing-here", token)
    assert (status, doc) == (404, {"error": f"no result or frame of sample {LOT_LINE}/m1/"
                                            "nothing-here"})  # fmt: skip


def test_devices_and_their_last_status(station: RunningStation, token: str) -> None:
    http = Http(station.url)
    status, rows = http.api(f"/api/v1/devices?line={LOT_LINE}", token)
    assert status == 200
    assert [(r["device_id"], r["state"], r["firmware"]) for r in rows] == [
        ("m1", "online", "1.4.2")
    ]
    assert http.api("/api/v1/devices?line=nowhere", token) == (200, [])


def test_dead_letters_list_and_one_with_its_payload(station: RunningStation, token: str) -> None:
    http = Http(station.url)
    _, rows = http.api(f"/api/v1/dead-letters?line={LOT_LINE}", token)
    assert [r["reason"] for r in rows] == ["schema", "bad_json"]  # newest first
    assert rows[0]["payload_base64"] is None
    assert rows[0]["payload_bytes"] == 3
    _, rows = http.api(f"/api/v1/dead-letters?line={LOT_LINE}&reason=bad_json", token)
    assert len(rows) == 1
    status, one = http.api(f"/api/v1/dead-letters/{rows[0]['id']}", token)
    assert status == 200
    assert one["payload_base64"] == "/3sA"  # b"\xff{\x00"
    assert http.api("/api/v1/dead-letters/999999", token) == (
        404,
        {"error": "no dead letter with id 999999"},
    )


def test_lots_and_the_packers_rules_of_one(station: RunningStation, token: str) -> None:
    http = Http(station.url)
    _, rows = http.api(f"/api/v1/lots?line={LOT_LINE}", token)
    assert [(r["lot_id"], r["trays"], r["not_counted"]) for r in rows] == [
        (LOT, 3, {"calibration": 1})
    ]
    status, lot = http.api(f"/api/v1/lots/{LOT_LINE}/{LOT}", token)
    assert (status, lot["qn_g"], lot["ended"]) == (200, 400.0, None)
    status, rules = http.api(f"/api/v1/lots/{LOT_LINE}/{LOT}/rules", token)
    assert status == 200
    assert (rules["lot"], rules["n"], rules["qn_g"], rules["tne_g"]) == (LOT, 3, 400.0, 9.0)
    assert rules["mean_g"] == pytest.approx(400.0)
    assert rules["verdict"] in {"complies", "at risk", "fails"}
    for path in (f"/api/v1/lots/{LOT_LINE}/LOT-8", f"/api/v1/lots/{LOT_LINE}/LOT-8/rules"):
        assert http.api(path, token) == (404, {"error": f"no lot LOT-8 on line {LOT_LINE}"})


def test_the_shift_report_as_pdf_and_csv(station: RunningStation, token: str) -> None:
    http = Http(station.url)
    auth = {"Authorization": f"Bearer {token}"}
    status, body, headers = http.get(f"/api/v1/report.csv?line={LOT_LINE}&since=1h", headers=auth)
    assert status == 200, body
    assert headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(body)))
    assert [r["sample_id"] for r in rows] == ["lot-s0", "lot-s1", "lot-s2"]  # production only
    assert rows[0]["mass_g"] == "395.0"
    assert rows[0]["weight_mass_g"] == ""  # the weight frame is not a result's weight
    status, body, headers = http.get(f"/api/v1/report.pdf?lot={LOT}&tz=Europe/Paris",
                                     headers=auth)  # fmt: skip
    assert status == 200
    assert headers["content-type"] == "application/pdf"
    assert f'filename="shift-{LOT_LINE}-{LOT}-' in headers["content-disposition"]
    assert http.get(f"/api/v1/report.pdf?line={LOT_LINE}")[0] == 401


def _error(http: Http, path: str, token: str) -> tuple[int, str]:
    status, body, headers = http.get(path, headers={"Authorization": f"Bearer {token}"})
    assert headers["content-type"] == "application/json"
    doc: dict[str, Any] = json.loads(body)
    assert set(doc) == {"error"}
    assert "Traceback" not in doc["error"]
    return status, doc["error"]


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        (
            "/api/v1/results?mode=test",
            422,
            "mode: Input should be 'production', 'calibration', 'maintenance' or 'any'",
        ),
        ("/api/v1/results?lot=a%20b", 422, "lot: String should match pattern"),
        ("/api/v1/samples/L1/d1/a%20b", 422, "sample_id: String should match pattern"),
        ("/api/v1/samples/L%2A/d1/s1", 422, "line: String should match pattern"),
        ("/api/v1/devices?line=", 422, "line: String should match pattern"),
        ("/api/v1/devices?state=online", 422, "state: Extra inputs are not permitted"),
        ("/api/v1/dead-letters?reason=boom", 422, "reason: Input should be 'bad_topic', "),
        ("/api/v1/dead-letters?limit=0", 422, "limit: Input should be greater than or equal to 1"),
        ("/api/v1/dead-letters/abc", 422, "dead_id: Input should be a valid integer"),
        ("/api/v1/dead-letters/0", 422, "dead_id: Input should be greater than or equal to 1"),
        ("/api/v1/lots?since=monday", 422, "since: Input should be a valid datetime"),
        ("/api/v1/lots/L1/LOT%2F1", 404, "Not Found"),
        (
            "/api/v1/lots/L1/LOT-7/rules?since=2026-01-02T00:00Z&until=2026-01-01T00:00Z",
            422,
            "since must be before until",
        ),
        ("/api/v1/report.pdf", 422, "give line, lot, or both"),
        (
            "/api/v1/report.csv?line=L1&tz=Mars/Olympus",
            422,
            "tz 'Mars/Olympus': not a time zone name",
        ),
        ("/api/v1/report.csv?line=L1&since=yesterday", 422, "since 'yesterday': expected"),
        (
            "/api/v1/report.csv?line=L1&since=2026-01-02T00:00Z&until=2026-01-01T00:00Z",
            422,
            "must be before until",
        ),
        ("/api/v1/report.csv?line=nowhere", 404, "line nowhere: the database has no result"),
        ("/api/v1/report.pdf?lot=LOT-8", 404, "lot LOT-8: no such lot"),
        ("/api/v1/report.csv?line=" + LINE + "&lot=" + LOT, 404, f"lot {LOT}: no such lot on line"),
    ],
)
def test_every_endpoint_answers_a_bad_parameter_with_one_clear_error(
    station: RunningStation, token: str, path: str, status: int, message: str
) -> None:
    got, error = _error(Http(station.url), path, token)
    assert got == status, error
    assert message in error
