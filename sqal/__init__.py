"""SQAL: sensor-based quality control for food production lines.

The ``sqal`` package owns what every part shares: the MQTT wire contract (:mod:`sqal.wire`),
settings, errors, product profiles, the embedded broker and database, and the ``sqal`` CLI.
"""

__version__ = "0.1.0"
