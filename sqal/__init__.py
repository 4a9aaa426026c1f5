"""SQAL: sensor-based quality control for food production lines.

The ``sqal`` package is the core every other part shares and the only one they share: the MQTT
wire contract (:mod:`sqal.wire`), errors, settings, product profiles, the MQTT client factory
and the one subscriber (:mod:`sqal.mqtt`), metrics and logging. It imports no other package of
the repository; the ``sqal`` command itself lives in :mod:`app.cli`.
"""

__version__ = "0.1.0"
