"""Logs of ``sqal analyzer`` and ``sqal ingest`` run as compose runs them: through the CLI.

#18 item 2: the CLI never set logging up, so the services said nothing at start and
``SQAL_LOG_FORMAT`` did nothing; a second ingest on the same client id looped "lost broker"
once a second for good.
"""

from __future__ import annotations

import json
import logging
import os
import queue
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import pytest

from app.cli import main
from embedded import Mosquitto
from sqal.logs import setup_logging
from sqal.settings import redact_dsn
from sqal.subscriber import Handoff
from tests.test_ingest_frames import drop_session, migrated, wait_until

ROOT = Path(__file__).resolve().parent.parent
SQAL = [sys.executable, "-m", "app"]
LINE_WAIT_S = 30.0
"""Longest a test waits for a service's next log line (a guard against a hang, not a timing)."""


class Service:
    """``sqal …`` in a subprocess whose stderr is read line by line."""

    def __init__(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [*SQAL, *argv],
            cwd=ROOT,
            env={**os.environ, **(env or {})},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.SimpleQueue[str | None] = queue.SimpleQueue()
        assert self.proc.stderr is not None
        self._reader = threading.Thread(target=self._read, args=(self.proc.stderr,), daemon=True)
        self._reader.start()

    def _read(self, stream: IO[str]) -> None:
        for line in stream:
            self.lines.put(line.rstrip("\n"))
        self.lines.put(None)

    def next_line(self) -> str:
        line = self.lines.get(timeout=LINE_WAIT_S)
        assert line is not None, f"exited {self.proc.wait(10)} before the line awaited"
        return line

    def line_with(self, text: str) -> str:
        while True:
            line = self.next_line()
            if text in line:
                return line

    def rest(self) -> list[str]:
        """The lines left once the process ended."""
        out = []
        while (line := self.lines.get(timeout=LINE_WAIT_S)) is not None:
            out.append(line)
        return out

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(15)
        self._reader.join(15)  # it has read to the end: the pipe can close
        assert self.proc.stderr is not None
        self.proc.stderr.close()
        return code


@pytest.fixture
def client_id(broker: Mosquitto) -> Iterator[str]:
    cid = f"logs-{uuid.uuid4().hex[:8]}"
    yield cid
    drop_session(broker.url, cid)


def ingest_argv(broker: Mosquitto, dsn: str, cid: str) -> list[str]:
    return [
        "ingest",
        "--broker",
        broker.url,
        "--db",
        dsn,
        "--client-id",
        cid,
        "--metrics-port",
        "0",
    ]


def test_sqal_ingest_says_what_it_runs_on_its_first_line_and_finds_its_session_again(
    broker: Mosquitto, fresh_db: str, client_id: str
) -> None:
    dsn = migrated(fresh_db)
    first = Service(ingest_argv(broker, dsn, client_id))
    try:
        line = first.next_line()
        assert "INFO ingest.service: ingest " in line
        assert "starting" in line
        for part in (f"broker {broker.url}", f"client id {client_id}", f"db {redact_dsn(dsn)}"):
            assert part in line
        assert "no session at the broker" in first.line_with(f"connected to {broker.url}")
    finally:
        assert first.stop() == 0
    again = Service(ingest_argv(broker, dsn, client_id))
    try:
        assert "session found (session present)" in again.line_with(f"as {client_id}")
    finally:
        assert again.stop() == 0


def test_sqal_log_format_json_gives_one_json_object_per_line(
    broker: Mosquitto, fresh_db: str, client_id: str
) -> None:
    argv = ["analyzer", "--broker", broker.url, "--client-id", client_id, "--metrics-port", "0"]
    svc = Service(argv, env={"SQAL_LOG_FORMAT": "json", "SQAL_LOG_LEVEL": "info"})
    try:
        start = json.loads(svc.next_line())
        assert start["level"] == "info"
        assert start["logger"] == "analyzer.command"
        assert start["client_id"] == client_id
        assert f"broker {broker.url}" in start["msg"]
        connected = json.loads(svc.next_line())
        assert connected["msg"].startswith(f"connected to {broker.url} as {client_id}")
        assert connected["session_present"] is False
    finally:
        assert svc.stop() == 0
    assert all(json.loads(line)["level"] for line in svc.rest())


def test_a_second_ingest_on_the_same_client_id_ends_the_fight_with_one_line(
    broker: Mosquitto, fresh_db: str, client_id: str
) -> None:
    """Two processes on one client id throw each other out on every reconnect. One of them
    says why in one line and exits 1; the other keeps the session and runs on.

    Mosquitto ≥ 2.0.15 tells the older connection 0x8E (session taken over), which then stops;
    older brokers only close its socket, and the first to count three connections dropped right
    after their CONNACK stops (sqal.subscriber.TAKEOVER_DROPS)."""
    dsn = migrated(fresh_db)
    older = Service(ingest_argv(broker, dsn, client_id))
    newer: Service | None = None
    try:
        older.line_with(f"connected to {broker.url} as {client_id}")
        newer = Service(ingest_argv(broker, dsn, client_id))
        pair = (older, newer)
        assert wait_until(lambda: any(s.proc.poll() is not None for s in pair), LINE_WAIT_S)
        (gone,) = [s for s in pair if s.proc.poll() is not None]
        (kept,) = [s for s in pair if s is not gone]
        assert gone.proc.returncode == 1
        last = gone.rest()[-1]
        assert last.startswith(f"Error: client id {client_id} is in use by another connection (")
        assert last.endswith("stopping. Give each process its own --client-id")
        assert kept.proc.poll() is None  # and it stops cleanly (exit 0) below
    finally:
        older.stop()
        if newer is not None:
            assert newer.stop() == 0


def test_a_bad_log_setting_is_one_error_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        main(["--log-format", "xml", "version"])
    assert info.value.code == 1
    assert capsys.readouterr().err == (
        "Error: setting log_format: Input should be 'text' or 'json'\n"
    )


@pytest.mark.parametrize(
    ("dsn", "shown"),
    [
        ("postgresql://sqal:s3cret@db:5432/sqal", "postgresql://sqal@db:5432/sqal"),
        (
            "postgresql://u@h/d?sslmode=require&password=s3cret",
            "postgresql://u@h/d?sslmode=require",
        ),
        ("host=h user=u password=s3cret dbname=d", "host=h user=u dbname=d"),
        ("host=h password='s3 cret' user=u", "host=h user=u"),
    ],
)
def test_a_logged_dsn_never_shows_the_password(dsn: str, shown: str) -> None:
    assert redact_dsn(dsn) == shown


def test_logging_set_up_twice_keeps_one_handler_and_others_handlers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    root = logging.getLogger()
    before = list(root.handlers)
    setup_logging("json", "DEBUG")
    setup_logging("text", "INFO")
    try:
        added = [h for h in root.handlers if h not in before]
        assert len(added) == 1
        assert caplog.handler in root.handlers
    finally:
        for h in added:
            root.removeHandler(h)


def test_a_full_inbox_is_logged_once_and_its_recovery_too(
    caplog: pytest.LogCaptureFixture,
) -> None:
    box: Handoff[int] = Handoff(4, "test inbox")
    for i in range(4):
        assert box.put(i)
    with caplog.at_level(logging.INFO, logger="sqal.subscriber"):
        waiting = threading.Thread(target=box.put, args=(4,))
        waiting.start()
        assert wait_until(lambda: any("backlog" in r.message for r in caplog.records), 10)
        taken = [box.get(1.0) for _ in range(5)]
        waiting.join(10)
    assert taken == [0, 1, 2, 3, 4]
    messages = [r.getMessage() for r in caplog.records if r.name == "sqal.subscriber"]
    assert messages[0] == (
        "backlog: test inbox full (4 messages); holding the broker back until the worker catches up"
    )
    assert len(messages) == 2
    assert messages[1].startswith("backlog cleared: test inbox down to 0 messages after ")
