"""Opening connections and turning psycopg's errors into :class:`~sqal.errors.StorageError`."""

from __future__ import annotations

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from sqal.errors import StorageError

CONNECT_TIMEOUT_S = 5
"""How long a connection attempt waits; ingest retries on its own schedule after that."""

DEAD_PEER = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 3,
    "tcp_user_timeout": 30_000,
}
"""libpq settings that turn a database host gone silent (power loss, a network partition, a
failed-over primary) into an error within ~30 s instead of the kernel's ~15 min of
retransmissions: TCP keep-alives probe an idle or waiting connection, and ``tcp_user_timeout``
(ms) bounds how long sent data may stay unacknowledged. A server that is alive but slow or
frozen (its kernel still acknowledges) is waited for, and ingest's health check reports a write
that takes too long; should its receive window stay closed, Linux applies the same timeout to
the zero-window probes, so after ~30 s the batch is retried on a new connection. No data is
lost either way. Settings in the DSN itself take precedence."""


def storage_error(exc: psycopg.Error, what: str) -> StorageError:
    """A :class:`StorageError` saying ``what`` failed, keeping the server's SQLSTATE.

    The message is the first line of the server's (or libpq's) text, so the CLI prints one line.
    """
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return StorageError(f"{what}: {text}", getattr(exc, "sqlstate", None))


def connect(
    dsn: str, application_name: str = "sqal", autocommit: bool = False
) -> psycopg.Connection:
    """Connect to PostgreSQL.

    Raises:
        StorageError: the DSN is malformed, or the server is unreachable or refused the login.
    """
    try:
        given = conninfo_to_dict(dsn)  # the DSN's own settings win
    except psycopg.ProgrammingError:
        # libpq's message quotes the whole DSN, password included: say less.
        raise StorageError("malformed database DSN (a libpq URI or key=value string)") from None
    try:
        return psycopg.connect(
            make_conninfo(dsn, **{k: v for k, v in DEAD_PEER.items() if k not in given}),
            autocommit=autocommit,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name=application_name,
        )
    except psycopg.Error as exc:
        raise storage_error(exc, "cannot connect to the database") from None
