"""Errors raised by SQAL.

```text
SqalError
├── ConfigError      bad flag, env value or profile
├── PayloadError     .reason, .topic; dead-lettered, never escapes a service loop
├── BrokerError      connect/subscribe refused (keeps paho's reason code)
│   └── PublishError a PUBACK's failure code, too large to send, connection lost
├── StorageError     database unreachable, COPY failed (keeps sqlstate)
│   └── MigrationError
├── ServiceError     an embedded broker or database would not start or stop
├── CalibrationError a calibration capture cannot give a trustworthy reference
└── CaptureError
```

Every message says what failed, the value, and what to do next. The CLI prints ``str(exc)`` as
one line and exits 1; a traceback from ``sqal`` is a bug.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from sqal.wire.enums import DeadReason


class SqalError(Exception):
    """Base of every error SQAL raises on purpose."""


class ConfigError(SqalError):
    """A flag, an environment value or a profile is invalid."""


class PayloadError(SqalError):
    """A message on a SQAL topic cannot be used.

    Attributes:
        reason: why, from one enum; the dead-letter table and metrics group by it.
        detail: a short human explanation (never the payload itself).
        topic: the topic the payload came on, when known.
    """

    def __init__(self, reason: DeadReason, detail: str, topic: str | None = None) -> None:
        self.reason = reason
        self.detail = detail
        self.topic = topic
        where = f" on {topic}" if topic else ""
        super().__init__(f"{reason.value}{where}: {detail}")


class BrokerError(SqalError):
    """The MQTT broker refused or could not be reached.

    Attributes:
        reason_code: paho's reason code when the broker answered, else ``None``.
    """

    def __init__(self, message: str, reason_code: int | None = None) -> None:
        self.reason_code = reason_code
        super().__init__(f"[code:{reason_code}] {message}" if reason_code is not None else message)


class PublishError(BrokerError):
    """The broker refused a publish (its PUBACK's reason code), the message is over the broker's
    maximum packet size (not sent), or the connection was lost before the acknowledgement.

    Attributes:
        topic: the refused message's topic ("" when the connection was lost with none pending).
        reason_code: the PUBACK's reason code (0x87 not authorised, ...), or ``None``.
    """

    def __init__(self, message: str, topic: str, reason_code: int | None = None) -> None:
        self.topic = topic
        super().__init__(message, reason_code)


class StorageError(SqalError):
    """The database could not be reached or refused a statement.

    Attributes:
        sqlstate: PostgreSQL's SQLSTATE when the server answered, else ``None``.
    """

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        self.sqlstate = sqlstate
        super().__init__(message)


class MigrationError(StorageError):
    """A schema migration failed; its transaction was rolled back."""


class ServiceError(SqalError):
    """An embedded service (Mosquitto, PostgreSQL) would not start, answer or stop."""


class CalibrationError(SqalError):
    """A calibration capture was refused (saturated, too dark, moving, mostly invalid)."""


class CaptureError(SqalError):
    """A capture file cannot be read or written."""
