"""The station: a web app at the line (issue #20).

Live line views pushed from MQTT, the HOLD queue where operators record re-checks, users and
roles, a read API with tokens, ``/healthz`` and ``/metrics``. It imports the core, storage and
views, never the analyzer or ingest (docs/architecture.md).
"""

from station.app import create_app
from station.auth import Role
from station.base import StationConfig

__all__ = ["Role", "StationConfig", "create_app"]
