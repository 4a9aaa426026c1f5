"""The station's read API, sign-in, roles, CSRF, /healthz and /metrics (no browser).

A station runs in this process against the session's broker and a database of this module.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from typer.testing import CliRunner

from app.cli import app as cli
from embedded import Mosquitto, Postgres
from sqal.wire import Decision, DefectCode, Grade, Kind
from station.auth import Role, hash_password, verify_password
from storage import station as db
from tests.fix_pg import new_database
from tests.station_kit import (
    Http,
    RunningStation,
    now_ts,
    result,
    running_station,
    station_db,
    store,
)

LINE = "api-L1"


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
        yield d


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
    assert "/api/v1/results" in body


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
    assert "--line nowhere: the database has no result" in body


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
    assert out.output == "added new-op (operator)\n"
    with db.session(dsn, "read") as conn:
        user = db.get_user(conn, "new-op")
    assert user is not None
    assert user.role == Role.OPERATOR
    assert user.password_hash.startswith("$argon2id$")
