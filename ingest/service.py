"""The ingest service loop: take a batch, decode, write in one transaction, ack in order.

```text
link thread ── on_message ──▶ Inbox (bounded) ──take()──▶ worker: decode → BatchWriter.write
                                                                   │ commit
                                   ack in arrival order ◀──────────┘ (+ dead letters published)
```
Database down: the worker keeps its batch and retries it with capped backoff, logging at most
once per interval; it takes nothing new meanwhile, so the inbox fills up to the Receive
Maximum and the broker stops sending (docs/reliability.md). Nothing is acked before its
transaction committed. Bad input becomes a ``dead_letters`` row in the same transaction, a
message on ``sqal/v1/_dead/ingest``, and is then acked like the rest.
"""

from __future__ import annotations

import base64
import binascii
import logging
import socket
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from ingest.batching import Backoff, check_batch_fits, log_due
from ingest.inbox import Inbox
from ingest.metrics import IngestMetrics
from ingest.seqgaps import SeqTracker
from sqal import __version__
from sqal.errors import BrokerError, PayloadError, StorageError
from sqal.metrics import DEFAULT_METRICS_HOST, MetricsServer
from sqal.mqtt import INFLIGHT_WINDOW
from sqal.settings import redact_dsn
from sqal.subscriber import Delivery, Subscriber
from sqal.wire import (
    DEAD_LETTERS,
    DEFAULT_TS_WINDOW,
    DeadLetter,
    DeadReason,
    DeviceState,
    DeviceStatus,
    Kind,
    TofFrame,
    TsWindow,
    dead_letter,
    dead_letter_topic,
    decode,
    decode_as,
    decode_lot,
    encode,
    is_config_deleted,
    is_dead_letter_topic,
    is_lot_topic,
    line_and_device,
    lot_subscription,
    parse_topic,
    shared,
    subscription,
)
from storage.rows import DeadRow, LotRow, PendingRow, pending_row
from storage.writer import BatchWriter, BrokerStat, WriteReport, retry_fixes

log = logging.getLogger(__name__)

STAGE = "ingest"
WRITE_STALL_S = 30.0
"""A batch write running longer than this makes ``/healthz`` fail (the database is frozen or
overloaded); a dead database host errors out by then (storage.connection.DEAD_PEER)."""
SPLIT_AFTER = 3
"""Failures of one batch, each for a reason a retry does not fix, before it is written row by
row and its refused rows dead-lettered (a batch that can never be stored must not block)."""
STORED_KINDS = (
    Kind.TOF, Kind.SPECTRAL, Kind.WEIGHT, Kind.RESULT, Kind.STATUS, Kind.CONFIG, Kind.RECHECK,
)  # fmt: skip

BROKER_COUNTERS = {
    "$SYS/broker/publish/messages/dropped": "publish_dropped",
    "$SYS/broker/publish/messages/received": "publish_received",
    "$SYS/broker/publish/messages/sent": "publish_sent",
    "$SYS/broker/store/messages/count": "stored_messages",
}
"""Mosquitto 2.0's ``$SYS`` counters ingest stores in ``broker_stats`` (every ``sys_interval``,
10 s by default). ``publish/messages/dropped`` counts QoS 1/2 messages the broker threw away
because a client's queue was full (``max_queued_messages``): loss no subscriber can see
otherwise. Subscribed without ``$share`` (each worker reads them; rows are keyed by time)."""

LOG_EVERY_S = 10.0
"""A repeating condition (database down, dead letters of one reason) is logged this often."""


@dataclass(frozen=True, slots=True)
class IngestConfig:
    """What ``sqal ingest`` was told.

    Attributes:
        shared_group: ``--shared``: subscribe as ``$share/GROUP/…`` (MQTT 5 §4.8.2).
        dead_topics: also store other stages' dead letters (``sqal/v1/_dead/+``).
    """

    broker: str
    dsn: str
    batch_rows: int
    flush_s: float
    client_id: str
    shared_group: str | None = None
    dead_topics: bool = True
    metrics_port: int | None = None
    metrics_host: str = DEFAULT_METRICS_HOST
    ts_window: TsWindow = DEFAULT_TS_WINDOW
    """How far a message's ``ts`` may be from its arrival (``ts_out_of_range`` beyond)."""


def default_client_id(shared_group: str | None) -> str:
    """A client id stable across restarts of this host's worker (the session is found by it)."""
    host = "".join(c if c.isalnum() or c in "-_" else "-" for c in socket.gethostname())[:32]
    return f"sqal-ingest-{shared_group}-{host}" if shared_group else f"sqal-ingest-{host}"


def subscription_filters(shared_group: str | None, dead_topics: bool) -> list[str]:
    """The filters ingest subscribes to, shared when ``shared_group`` is given."""
    filters = [subscription(k) for k in STORED_KINDS]
    filters.append(lot_subscription())  # the lines' lots (retained), stored in `lots`
    if dead_topics:
        filters.append(DEAD_LETTERS)
    if shared_group is None:
        return filters
    return [shared(f, shared_group) for f in filters]


@dataclass(slots=True)
class _Prepared:
    rows: list[PendingRow]
    dead: list[DeadRow]
    published: list[DeadLetter]
    stats: list[BrokerStat]
    lots: list[LotRow]


class IngestService:
    """One ingest worker."""

    def __init__(self, cfg: IngestConfig) -> None:
        check_batch_fits(cfg.batch_rows, INFLIGHT_WINDOW)
        self.cfg = cfg
        self.inbox = Inbox(INFLIGHT_WINDOW, "ingest inbox")
        self.link = Subscriber(
            cfg.broker,
            cfg.client_id,
            subscription_filters(cfg.shared_group, cfg.dead_topics),
            self.inbox.put,
            # Broker statistics are optional: an ACL without `$SYS` read costs only them.
            optional_filters=list(BROKER_COUNTERS),
        )
        self.writer = BatchWriter(cfg.dsn, stage=STAGE)
        self._write_since: float | None = None
        self.metrics = IngestMetrics(
            queue_depth=lambda: float(self.inbox.depth()),
            connected=lambda: 1.0 if self.link.connected else 0.0,
            write_age=self._write_age,
            waited=lambda: self.inbox.waited_s,
        )
        self.metrics.registry.healthy = self._health
        self.backoff = Backoff()
        self.seq = SeqTracker()
        self._last_db_log: float | None = None
        self._last_dead_log: dict[str, float] = {}
        self._dead_topic = dead_letter_topic(STAGE)

    def _write_age(self) -> float:
        since = self._write_since
        return 0.0 if since is None else time.monotonic() - since

    def _health(self) -> tuple[bool, str]:
        if not self.link.connected:
            return False, "broker disconnected"
        if self.metrics.db_ok.value() < 1.0:
            return False, "database unavailable"
        age = self._write_age()
        if age > WRITE_STALL_S:
            # A frozen or overloaded server: nothing is lost (unacked messages wait at the
            # broker), but the backlog grows toward the broker's queue limit.
            return False, f"database write stalled for {age:.0f} s"
        return True, "ok"

    def run(self, stop: threading.Event) -> None:
        """Serve until ``stop`` is set; the batch in hand is finished first.

        Raises:
            BrokerError: the broker is unreachable or refused at start, or another connection
                took our client id.
            ConfigError: ``--batch-rows`` does not fit the broker's limit.
            ServiceError: the ``--metrics-port`` is taken.
        """
        # Bind /metrics before connecting: a taken port fails at once, not after the broker.
        server = None
        if self.cfg.metrics_port is not None:
            server = MetricsServer(
                self.metrics.registry, self.cfg.metrics_port, self.cfg.metrics_host
            )
        log.info(
            "ingest %s starting: broker %s, client id %s, db %s, metrics %s",
            __version__,
            self.link.broker,
            self.cfg.client_id,
            redact_dsn(self.cfg.dsn),
            server.url if server is not None else "off",
            extra={"client_id": self.cfg.client_id, "version": __version__},
        )
        try:
            self.link.start()
        except BaseException:
            if server is not None:
                server.stop()
            raise
        try:
            check_batch_fits(self.cfg.batch_rows, INFLIGHT_WINDOW, self.link.broker_receive_maximum)
            if server is not None:
                server.start()
            log.info(
                "ingest running: batch %d rows / %.0f ms",
                self.cfg.batch_rows,
                self.cfg.flush_s * 1000,
            )
            while not stop.is_set():
                batch = self.inbox.take(self.cfg.batch_rows, self.cfg.flush_s)
                if batch:
                    self.process(batch, stop)
                if self.link.failure is not None and not stop.is_set():
                    raise BrokerError(self.link.failure)  # not when stopping anyway
        finally:
            if server is not None:
                server.stop()
            self.inbox.close()  # the link's thread may wait for room: let it go, then join it
            self.link.stop()
            self.writer.close()

    def process(self, batch: Sequence[Delivery], stop: threading.Event) -> WriteReport | None:
        """Store one batch and ack it; ``None`` when stopped before it committed (no ack)."""
        cut = time.monotonic()
        prepared = self._prepare(batch, datetime.now(UTC))
        attempt = 0
        refused_alike = 0  # failures in a row that a retry does not fix (storage.writer)
        last: StorageError | None = None
        while True:
            self._write_since = time.monotonic()
            try:
                split = refused_alike >= SPLIT_AFTER
                if split:
                    log.warning(
                        "batch of %d refused %d times (%s); writing it row by row, refused rows "
                        "become dead letters",
                        len(batch),
                        refused_alike,
                        last,
                    )
                report = self.writer.write(
                    prepared.rows, prepared.dead, prepared.stats, split=split, lots=prepared.lots
                )
                break
            except StorageError as exc:
                last = exc
                refused_alike = 0 if retry_fixes(exc.sqlstate) else refused_alike + 1
                self.metrics.db_retries.inc()
                self.metrics.db_ok.set(0.0)
                now = time.monotonic()
                delay = self.backoff.delay_s(attempt)
                if log_due(self._last_db_log, now, LOG_EVERY_S):
                    self._last_db_log = now
                    log.warning(
                        "batch of %d not stored, retrying (attempt %d, next in %.1f s): %s",
                        len(batch),
                        attempt + 1,
                        delay,
                        exc,
                    )
            finally:
                self._write_since = None
            if stop.wait(delay):
                return None
            attempt += 1
        if attempt:
            log.info("database back after %d retries; batch stored", attempt)
            self._last_db_log = None
        self.metrics.db_ok.set(1.0)
        for r in report.refused:  # already stored as dead letters by the writer
            item = batch[r.tag]
            err = PayloadError(r.reason, r.dead_detail, item.topic)
            self._note_dead(item, err, datetime.now(UTC), prepared)
        for dl in prepared.published:
            self.link.publish(self._dead_topic, encode(dl))
        self.metrics.acked.inc(self.link.done(batch))
        self._count(batch, report, time.monotonic() - cut)
        return report

    def _prepare(self, batch: Sequence[Delivery], now: datetime) -> _Prepared:
        out = _Prepared([], [], [], [], [])
        received: Counter[str] = Counter()
        gaps = 0
        for i, item in enumerate(batch):
            counter = BROKER_COUNTERS.get(item.topic)
            if counter is not None:
                self._broker_stat(counter, item.payload, now, out)
                continue
            if item.topic == self._dead_topic:
                # Our own dead letters, already stored: the sqal/v1/_dead/+ subscription sees
                # them too. Never decode them, or a too-large one would feed itself.
                continue
            if is_dead_letter_topic(item.topic):
                self._foreign_dead(item, now, out)
                continue
            if is_lot_topic(item.topic):
                received["lot"] += 1
                try:
                    line, lot = decode_lot(item.topic, item.payload)
                except PayloadError as err:
                    out.dead.append(self._dead(item, err, out))
                    continue
                out.lots.append(LotRow(line, lot, item.topic, item.payload, i))
                continue
            try:
                topic = parse_topic(item.topic)
            except PayloadError as err:
                received["unknown"] += 1
                out.dead.append(self._dead(item, err, out))
                continue
            received[topic.kind.value] += 1
            if is_config_deleted(topic, item.payload):
                # `sqal config delete`: nothing to store (the config history keeps the last one).
                log.info("config of %s/%s deleted", topic.line, topic.device)
                continue
            try:
                frame = decode(topic, item.payload)
                self.cfg.ts_window.check(frame, now, item.topic, item.retained)
            except PayloadError as err:
                out.dead.append(self._dead(item, err, out))
                continue
            if isinstance(frame, TofFrame):
                gaps += self.seq.observe(frame.device_id, frame.seq)
            elif isinstance(frame, DeviceStatus):
                online = 1.0 if frame.state is DeviceState.ONLINE else 0.0
                self.metrics.device_online.set(online, (topic.line, topic.device))
            row = pending_row(topic, frame, now, item.payload, i)
            if row is not None:
                out.rows.append(row)
        for label, n in received.items():
            self.metrics.received.inc(n, label=label)
        if gaps:
            self.metrics.seq_gaps.inc(gaps)
        return out

    def _broker_stat(self, counter: str, payload: bytes, now: datetime, out: _Prepared) -> None:
        """A ``$SYS`` reading: a number in ASCII (Mosquitto's format); anything else is skipped."""
        try:
            value = float(payload.decode("ascii").split()[0])
        except (UnicodeDecodeError, ValueError, IndexError):
            return
        if counter == "publish_dropped":
            self.metrics.broker_dropped.set(value)
        elif counter == "stored_messages":
            self.metrics.broker_stored.set(value)
        self.metrics.broker_stats.inc(label=counter)
        out.stats.append(BrokerStat(now, counter, value))

    def _dead(self, item: Delivery, err: PayloadError, out: _Prepared) -> DeadRow:
        """A dead letter of ingest's own: its row, counted and queued for publishing."""
        now = datetime.now(UTC)
        self._note_dead(item, err, now, out)
        return self._dead_row(item, err, now)

    @staticmethod
    def _dead_row(item: Delivery, err: PayloadError, now: datetime) -> DeadRow:
        line, device = line_and_device(item.topic) or (None, None)
        return DeadRow(
            now,
            STAGE,
            item.topic,
            line,
            device,
            err.reason.value,
            err.detail,
            item.payload,
        )

    def _note_dead(self, item: Delivery, err: PayloadError, now: datetime, out: _Prepared) -> None:
        """Count, log (once per reason per interval) and queue the message for ``_dead``."""
        reason = err.reason.value
        self.metrics.dead_letters.inc(label=reason)
        mono = time.monotonic()
        if log_due(self._last_dead_log.get(reason), mono, LOG_EVERY_S):
            self._last_dead_log[reason] = mono
            log.warning("dead letter (%s) on %s: %s", reason, item.topic, err.detail)
        # The published copy may be cut (sqal.wire.codec.MAX_DEAD_PAYLOAD_BYTES); the row
        # stored in dead_letters keeps the whole payload.
        out.published.append(dead_letter(STAGE, item.topic, item.payload, err, now))

    def _foreign_dead(self, item: Delivery, now: datetime, out: _Prepared) -> None:
        """Store another stage's dead letter; ingest's own are already stored."""
        self.metrics.received.inc(label="dead")
        try:
            dl = decode_as(DeadLetter, item.payload, item.topic)
            payload = base64.b64decode(dl.payload_b64, validate=True)
        except PayloadError as err:
            out.dead.append(self._dead(item, err, out))
            return
        except (binascii.Error, ValueError) as exc:
            bad = PayloadError(DeadReason.SCHEMA, f"payload_b64: {exc}", item.topic)
            out.dead.append(self._dead(item, bad, out))
            return
        line, device = line_and_device(dl.topic) or (None, None)
        out.dead.append(
            DeadRow(
                dl.received_at,
                dl.stage,
                dl.topic,
                line,
                device,
                dl.reason.value,
                dl.detail,
                payload,
            )
        )

    def _count(self, batch: Sequence[Delivery], report: WriteReport, latency_s: float) -> None:
        m = self.metrics
        m.batches.inc()
        m.batch_latency.observe(latency_s)
        m.batch_size.observe(len(batch))
        for table, n in report.inserted.items():
            m.rows_written.inc(n, label=table)
            m.duplicates.inc(report.offered.get(table, 0) - n, label=table)
