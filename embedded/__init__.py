"""The embedded default: a private Mosquitto and PostgreSQL+TimescaleDB under a data directory.

``sqal services``, ``sqal demo`` and the test harness all start their servers through this
package, on loopback only, and stop them by PID.
"""

from embedded.mosquitto import Mosquitto, mosquitto_version, start_mosquitto
from embedded.ports import free_port, port_is_free, wait_for_port
from embedded.postgres import Postgres, postgres_versions, start_postgres
from embedded.process import ServiceProcess

__all__ = [
    "Mosquitto",
    "Postgres",
    "ServiceProcess",
    "free_port",
    "mosquitto_version",
    "port_is_free",
    "postgres_versions",
    "start_mosquitto",
    "start_postgres",
    "wait_for_port",
]
