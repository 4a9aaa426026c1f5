"""Opening connections and turning psycopg's errors into :class:`~sqal.errors.StorageError`."""

from __future__ import annotations

import psycopg

from sqal.errors import StorageError

CONNECT_TIMEOUT_S = 5
"""How long a connection attempt waits; ingest retries on its own schedule after that."""


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
        StorageError: the server is unreachable or refused the login.
    """
    try:
        return psycopg.connect(
            dsn,
            autocommit=autocommit,
            connect_timeout=CONNECT_TIMEOUT_S,
            application_name=application_name,
        )
    except psycopg.Error as exc:
        raise storage_error(exc, "cannot connect to the database") from None
