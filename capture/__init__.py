"""Record live MQTT traffic to capture files, inspect them, and replay them with faithful timing."""

from capture.fileformat import (
    FORMAT_VERSION,
    CaptureReader,
    CaptureWriter,
    Record,
    read_records,
)

__all__ = ["FORMAT_VERSION", "CaptureReader", "CaptureWriter", "Record", "read_records"]
