"""Samples published as fast as paho lets them, from a process of their own (overload, backlog).

Unlike the fleet (device_sim, paced in real time), a burst sends pre-rendered golden frames:
the offered rate is the publisher's limit, several times what the pipeline processes.
"""

from __future__ import annotations

from datetime import datetime

from sqal.mqtt import client_id, paho_client
from sqal.wire import Kind, device_topic, encode
from tests.frames import spectral_frame, tof_frame


def publish_samples(url: str, line: str, device: str, count: int, ts: datetime) -> None:
    """Publish ``count`` samples of ``device`` on ``line`` (both frames each, QoS 1, all stamped
    ``ts``); return once the broker acknowledged every one. Run it in a spawned process."""
    payloads = []
    for seq in range(count):
        payloads.append((Kind.TOF, encode(tof_frame(device, seq=seq, ts=ts))))
        payloads.append((Kind.SPECTRAL, encode(spectral_frame(device, seq=seq, ts=ts))))
    client = paho_client(url, client_id("burst"), persistent=False, max_inflight=1000)
    try:
        infos = [client.publish(device_topic(line, device, k), p, qos=1) for k, p in payloads]
        for info in infos:
            info.wait_for_publish(120)
    finally:
        client.disconnect()
        client.loop_stop()
