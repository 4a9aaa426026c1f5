"""A refused publish is an error (#18 item 1): every publishing command, on the production ACL.

One broker per module from ``mosquitto/production.conf`` (paths and ports rewritten), users made
as the plant makes them. The calibration runs a real simulated node presenting the fixture.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import pytest

from broker.admin import Service, set_passwords, update_acl
from broker.certs import make_certs
from capture.fileformat import CaptureWriter, Record
from embedded import Mosquitto, free_port
from sqal.devices import Target, fetch_configs
from sqal.errors import PublishError
from sqal.publisher import Publisher, packet_bytes
from sqal.wire import DeviceConfig
from sqal.wire.codec import MAX_MESSAGE_BYTES, MAX_PACKET_BYTES
from tests.broker_conf import running

ROOT = Path(__file__).resolve().parent.parent
SQAL = [sys.executable, "-m", "app"]
DEVICE = Target("line1", "line1-node01")
TARGET = f"{DEVICE.line}/{DEVICE.device}"
PROFILE = "pate_terrine_300g"
USERS = ("record", "config", "calibrate", "simulator")


@dataclass
class Plant:
    port: int

    def url(self, user: str) -> str:
        return f"mqtt://{user}:{quote(password(user))}@127.0.0.1:{self.port}"


def password(user: str) -> str:
    return f"password-of-{user}"


@pytest.fixture(scope="module")
def plant(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plant]:
    folder = tmp_path_factory.mktemp("plant-mqtt")
    make_certs(folder / "certs", ["localhost"], 30, [], datetime.now(UTC))
    set_passwords(folder / "passwd", {u: password(u) for u in USERS})
    update_acl(folder / "acl", *Service)
    port = free_port()
    with running(ROOT / "mosquitto/production.conf", folder, port, free_port()):
        yield Plant(port)


def sqal(*args: str, timeout_s: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*SQAL, *args], capture_output=True, text=True, timeout=timeout_s,
                          check=False)  # fmt: skip


def error_line(done: subprocess.CompletedProcess[str]) -> str:
    """The one ``Error:`` line a failed command printed (and nothing traceback-like)."""
    assert done.returncode == 1, done
    assert "Traceback" not in done.stderr, done.stderr
    errors = [ln for ln in done.stderr.splitlines() if ln.startswith("Error: ")]
    assert len(errors) == 1, done.stderr
    return errors[0]


def held(plant: Plant) -> DeviceConfig | str | None:
    return asyncio.run(fetch_configs(plant.url("config"), DEVICE.topic)).get(DEVICE.topic)


def calibrate_dark(plant: Plant, user: str) -> subprocess.CompletedProcess[str]:
    """``sqal calibrate --step dark`` as ``user`` while a simulated node presents the lid."""
    cmd = [*SQAL, "calibrate", TARGET, "--step", "dark", "--yes", "--timeout", "60",
           "--broker", plant.url(user)]  # fmt: skip
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) as proc:
        time.sleep(1.5)  # subscribed before the node's first frame
        node = sqal("sim", "--broker", plant.url("simulator"), "--profile", PROFILE,
                    "--keep-config", "--seed", "5", "--fixture", "dark", "--rate", "1500",
                    "--count", "100")  # fmt: skip
        assert node.returncode == 0, node.stderr
        out, err = proc.communicate(timeout=90)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def test_config_set_as_record_fails_naming_not_authorised(plant: Plant) -> None:
    done = sqal("config", "set", TARGET, "--profile", PROFILE, "--broker", plant.url("record"))
    line = error_line(done)
    assert "refused the publish on sqal/v1/line1/line1-node01/config" in line
    assert "not authorised (0x87)" in line
    assert "user record may not publish there" in line
    assert "published" not in done.stdout
    assert held(plant) is None  # nothing retained


def test_config_delete_as_record_fails_and_as_config_clears_it(plant: Plant) -> None:
    setup = sqal("config", "set", TARGET, "--profile", PROFILE, "--broker", plant.url("config"))
    assert setup.returncode == 0, setup.stderr
    kept = held(plant)
    assert isinstance(kept, DeviceConfig)
    # `record` reads the config (so it gets as far as publishing) and may not clear it
    refused = sqal("config", "delete", TARGET, "--broker", plant.url("record"))
    line = error_line(refused)
    assert "refused the publish on sqal/v1/line1/line1-node01/config" in line
    assert "not authorised (0x87)" in line
    assert "deleted" not in refused.stdout
    assert held(plant) == kept
    done = sqal("config", "delete", TARGET, "--broker", plant.url("config"))
    assert done.returncode == 0, done.stderr
    assert f"deleted {DEVICE.topic}" in done.stdout
    assert held(plant) is None


def test_calibrate_as_record_fails_and_as_calibrate_publishes(plant: Plant) -> None:
    setup = sqal("config", "set", TARGET, "--profile", PROFILE, "--broker", plant.url("config"))
    assert setup.returncode == 0, setup.stderr
    before = held(plant)
    assert isinstance(before, DeviceConfig)
    assert before.calibration is None

    refused = calibrate_dark(plant, "record")  # reads the frames, may not publish the result
    line = error_line(refused)
    assert "not authorised (0x87)" in line
    assert "sqal/v1/line1/line1-node01/config" in line
    assert "published" not in refused.stdout
    assert held(plant) == before

    done = calibrate_dark(plant, "calibrate")
    assert done.returncode == 0, done.stderr
    after = held(plant)
    assert isinstance(after, DeviceConfig)
    assert after.calibration is not None
    assert after.calibration.dark_bc is not None
    assert f"calibration {after.calibration.id} published for {TARGET} (dark)" in done.stdout


def test_calibrate_without_read_rights_names_the_user_not_only_the_device(plant: Plant) -> None:
    # `config` may publish the result but not read frames: Mosquitto grants the subscription
    # and delivers nothing, so the timeout must say the user may be the cause.
    setup = sqal("config", "set", TARGET, "--profile", PROFILE, "--broker", plant.url("config"))
    assert setup.returncode == 0, setup.stderr
    done = sqal("calibrate", TARGET, "--step", "dark", "--yes", "--timeout", "2",
                "--broker", plant.url("config"))  # fmt: skip
    line = error_line(done)
    assert "is line1/line1-node01 publishing, and may broker user config read its frames" in line


def write_capture(path: Path, records: list[tuple[str, bytes]]) -> None:
    w = CaptureWriter(path, {"broker": "test"}, time.time())
    try:
        for i, (topic, payload) in enumerate(records):
            w.write(Record(i * 0.01, i * 0.01, topic, payload, qos=1))
    finally:
        w.close()


def test_replay_of_an_oversized_record_fails_fast_with_one_line(
    plant: Plant, tmp_path: Path
) -> None:
    topic = "sqal/v1/line9/node9/tof"
    cap = tmp_path / "big.sqalcap"
    write_capture(cap, [(topic, b"{}"), (topic, b"x" * (1 << 20)), (topic, b"{}")])
    started = time.monotonic()
    done = sqal("replay", str(cap), "--max-rate", "--broker", plant.url("simulator"))
    assert time.monotonic() - started < 20  # no reconnect loop (it took 30 s and more)
    line = error_line(done)
    assert f"the message on {topic} is a 1,048,6" in line
    assert f"over the broker's maximum packet size of {MAX_PACKET_BYTES:,} bytes" in line


def test_replay_as_a_user_without_write_rights_fails(plant: Plant, tmp_path: Path) -> None:
    cap = tmp_path / "frames.sqalcap"
    write_capture(cap, [("sqal/v1/line9/node9/tof", b"{}")])
    line = error_line(sqal("replay", str(cap), "--broker", plant.url("record")))
    assert "refused the publish on sqal/v1/line9/node9/tof: not authorised (0x87)" in line


def test_the_packet_limit_is_checked_to_the_byte(broker: Mosquitto) -> None:
    topic = f"sqal/v1/pub-{time.monotonic_ns()}/d/tof"
    overhead = packet_bytes(topic, b"", 1, None)
    with Publisher(broker.url, "t-pub") as pub:
        assert pub.max_packet_bytes == MAX_PACKET_BYTES  # announced in CONNACK
        with pytest.raises(PublishError, match="over the broker's maximum packet size") as info:
            pub.publish(topic, b"x" * (MAX_PACKET_BYTES - overhead + 1))
        assert info.value.reason_code == 0x95
        pub.publish(topic, b"x" * MAX_MESSAGE_BYTES)
        pub.wait(10)
        assert pub.acked == 1


def test_a_refusal_that_drops_the_connection_fails_at_once(broker: Mosquitto) -> None:
    # Over message_size_limit but under max_packet_size: Mosquitto's PUBACK 0x95 is no PUBACK
    # code paho knows, so it drops the connection, reconnects and sends again, forever.
    topic = f"sqal/v1/pub-{time.monotonic_ns()}/d/tof"
    started = time.monotonic()
    with Publisher(broker.url, "t-pub") as pub:
        pub.publish(topic, b"x" * (MAX_MESSAGE_BYTES + 1))
        with pytest.raises(PublishError, match=r"closed the connection .* on " + topic):
            pub.wait(20)
    assert time.monotonic() - started < 10


def test_sim_as_a_user_that_may_not_publish_frames_fails_naming_the_refusal(plant: Plant) -> None:
    # `config` may publish the node's retained config but no status and no frame: the run stops
    # at the first refused PUBACK (it used to count every frame as published).
    started = time.monotonic()
    done = sqal("sim", "--broker", plant.url("config"), "--profile", PROFILE, "--seed", "3",
                "--rate", "600", "--count", "20")  # fmt: skip
    assert time.monotonic() - started < 60
    line = error_line(done)
    assert "refused the publish on sqal/v1/line1/line1-node01/" in line
    assert "not authorised (0x87); user config may not publish there" in line
    assert "messages published" not in done.stdout
    # as `simulator` the same run goes through
    ok = sqal("sim", "--broker", plant.url("simulator"), "--profile", PROFILE, "--seed", "3",
              "--rate", "600", "--count", "20")  # fmt: skip
    assert ok.returncode == 0, ok.stderr
