"""The production broker config with real Mosquitto: passwords, the ACL, TLS, rotation.

One broker per module, started from ``mosquitto/production.conf`` with only its paths and ports
rewritten into a temp folder, so what is tested is what the plant runs.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import quote

import paho.mqtt.client as paho
import pytest
import typer
from cryptography import x509
from paho.mqtt.enums import CallbackAPIVersion
from typer.testing import CliRunner

from analyzer.liveness import PROBE_FILTER
from broker.admin import (
    SQAL_COMMENT,
    Service,
    full_acl,
    hash_password,
    mosquitto_add_device_command,
    mosquitto_add_service_command,
    parse_acl,
    password_matches,
    set_password,
    set_passwords,
    update_acl,
)
from broker.certs import CertFiles, make_certs, mosquitto_certs_command
from embedded import free_port
from embedded.process import ServiceProcess
from sqal.errors import BrokerError, ConfigError
from sqal.mqtt import paho_client
from sqal.subscriber import Delivery, Subscriber
from tests.broker_conf import ACCEPTED, NOT_AUTHORIZED, Peer, connect, running

ROOT = Path(__file__).resolve().parent.parent
PASSWORDS = {
    "L1/devA": "password-of-device-a",
    "L1/devB": "password-of-device-b",
    "analyzer": "password-of-analyzer",
    "ingest": "password-of-ingest",
    "record": "password-of-recorder",
    "config": "password-of-config-cli",
}
T = "sqal/v1/L1"


@dataclass
class SecureBroker:
    folder: Path
    port: int
    tls_port: int
    certs: CertFiles
    process: ServiceProcess

    def url(self, user: str | None, password: str | None = None, tls: bool = False) -> str:
        cred = (
            f"{quote(user, safe='')}:{quote(password or PASSWORDS[user], safe='')}@" if user else ""
        )
        return f"{'mqtts' if tls else 'mqtt'}://{cred}{'localhost' if tls else '127.0.0.1'}:" + str(
            self.tls_port if tls else self.port
        )


@pytest.fixture(scope="module")
def secure(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SecureBroker]:
    folder = tmp_path_factory.mktemp("secure-mqtt")
    certs = make_certs(folder / "certs", ["localhost", "127.0.0.1"], 30, [], datetime.now(UTC))
    set_passwords(folder / "passwd", PASSWORDS)
    update_acl(folder / "acl", *Service)
    port, tls_port = free_port(), free_port()
    with running(ROOT / "mosquitto/production.conf", folder, port, tls_port) as proc:
        yield SecureBroker(folder, port, tls_port, certs, proc)


def settle(recorder: Peer, device: Peer) -> None:
    """Publish a marker from ``device`` and wait for it: everything sent before has arrived."""
    stamp = str(time.monotonic_ns()).encode()
    assert device.publish(f"{T}/devA/status", stamp) in ACCEPTED
    recorder.wait_for(f"{T}/devA/status", stamp)


def test_anonymous_and_wrong_password_are_refused(secure: SecureBroker) -> None:
    for url in (secure.url(None), secure.url("L1/devA", "not-the-password")):
        with pytest.raises(BrokerError) as info:
            paho_client(url, "intruder", persistent=False)
        assert info.value.reason_code == NOT_AUTHORIZED


def test_a_device_publishes_its_own_frames_but_nothing_as_another(
    secure: SecureBroker, peers: list[Peer]
) -> None:
    rec = connect(peers, secure.url("record"), "sqal/v1/#")
    time.sleep(0.2)  # SUBACK
    dev_a = connect(peers, secure.url("L1/devA"))
    for kind in ("tof", "spectral", "weight", "status"):
        assert dev_a.publish(f"{T}/devB/{kind}", b"spoofed") == NOT_AUTHORIZED
    for kind in ("result", "config"):
        assert dev_a.publish(f"{T}/devA/{kind}", b"not a device's") == NOT_AUTHORIZED
    assert dev_a.publish("sqal/v1/L2/devA/tof", b"another line") == NOT_AUTHORIZED
    assert dev_a.publish("sqal/v1/L2/devA/weight", b"another line") == NOT_AUTHORIZED
    for kind in ("tof", "spectral", "weight"):
        assert dev_a.publish(f"{T}/devA/{kind}", kind.encode()) in ACCEPTED
    settle(rec, dev_a)
    topics = {t for t, _ in rec.received}
    assert topics == {f"{T}/devA/{k}" for k in ("tof", "spectral", "weight", "status")}


def test_a_device_reads_its_own_config_and_never_another_one(
    secure: SecureBroker, peers: list[Peer]
) -> None:
    cfg = connect(peers, secure.url("config"))
    assert cfg.publish(f"{T}/devB/config", b"config-b", retain=True) in ACCEPTED
    assert cfg.publish(f"{T}/devA/config", b"config-a", retain=True) in ACCEPTED
    # B's filters first: its retained config, were it allowed, would arrive before A's.
    dev_a = connect(peers, secure.url("L1/devA"), f"{T}/devB/config", "sqal/v1/+/+/config")
    dev_a.client.subscribe(f"{T}/devA/config", qos=1)
    dev_a.wait_for(f"{T}/devA/config", b"config-a")
    assert cfg.publish(f"{T}/devB/config", b"config-b2") in ACCEPTED
    assert cfg.publish(f"{T}/devA/config", b"config-a2") in ACCEPTED
    dev_a.wait_for(f"{T}/devA/config", b"config-a2")
    assert {t for t, _ in dev_a.received} == {f"{T}/devA/config"}


def test_a_last_will_on_another_device_status_is_not_published(
    secure: SecureBroker, peers: list[Peer]
) -> None:
    rec = connect(peers, secure.url("record"), f"{T}/+/status")
    time.sleep(0.2)
    for owner in ("devB", "devA"):  # A's own will last: once it is in, B's would be too
        c = paho.Client(CallbackAPIVersion.VERSION2, protocol=paho.MQTTv5)
        c.username_pw_set("L1/devA", PASSWORDS["L1/devA"])
        c.will_set(f"{T}/{owner}/status", f"offline-{owner}".encode(), qos=1, retain=True)
        c.connect("127.0.0.1", secure.port)
        c.loop(1.0)
        sock = c.socket()
        assert sock is not None
        sock.close()  # no DISCONNECT: the broker publishes the will
        time.sleep(0.1)
    rec.wait_for(f"{T}/devA/status", b"offline-devA")
    assert (f"{T}/devB/status", b"offline-devB") not in rec.received


def test_the_analyzer_reads_frames_and_writes_results_but_not_configs(
    secure: SecureBroker, peers: list[Peer]
) -> None:
    rec = connect(peers, secure.url("record"), f"{T}/+/result", f"{T}/+/config")
    ana = connect(peers, secure.url("analyzer"), "sqal/v1/+/+/tof")
    time.sleep(0.2)
    dev_a = connect(peers, secure.url("L1/devA"))
    assert dev_a.publish(f"{T}/devA/tof", b"frame-for-analyzer") in ACCEPTED
    ana.wait_for(f"{T}/devA/tof", b"frame-for-analyzer")
    assert ana.publish(f"{T}/devA/config", b"analyzer-config") == NOT_AUTHORIZED
    assert ana.publish(f"{T}/devA/tof", b"analyzer-frame") == NOT_AUTHORIZED
    assert ana.publish("sqal/v1/_dead/ingest", b"not its stage") == NOT_AUTHORIZED
    assert ana.publish("sqal/v1/_dead/analyzer", b"its dead letter") in ACCEPTED
    assert ana.publish(f"{T}/devA/result", b"result-a") in ACCEPTED
    rec.wait_for(f"{T}/devA/result", b"result-a")
    assert (f"{T}/devA/config", b"analyzer-config") not in rec.received


def test_ingest_and_the_analyzer_read_a_device_s_weights_and_neither_writes_one(
    secure: SecureBroker, peers: list[Peer]
) -> None:
    ing = connect(peers, secure.url("ingest"), "sqal/v1/+/+/weight")
    ana = connect(peers, secure.url("analyzer"), "sqal/v1/+/+/weight")
    time.sleep(0.2)
    dev_a = connect(peers, secure.url("L1/devA"))
    assert dev_a.publish(f"{T}/devA/weight", b"weight-a") in ACCEPTED
    ing.wait_for(f"{T}/devA/weight", b"weight-a")
    ana.wait_for(f"{T}/devA/weight", b"weight-a")  # the analyzer decides fill on it
    assert ing.publish(f"{T}/devA/weight", b"ingest-weight") == NOT_AUTHORIZED
    assert ana.publish(f"{T}/devA/weight", b"analyzer-weight") == NOT_AUTHORIZED


def test_tls_verifies_the_broker_against_the_generated_ca_only(
    secure: SecureBroker, peers: list[Peer], monkeypatch: pytest.MonkeyPatch
) -> None:
    def handshake(ctx: ssl.SSLContext, name: str) -> None:
        with (
            socket.create_connection(("127.0.0.1", secure.tls_port), timeout=5) as raw,
            ctx.wrap_socket(raw, server_hostname=name),
        ):
            pass

    system_store = ssl.create_default_context()
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    system_store.load_default_certs()
    with pytest.raises(ssl.SSLCertVerificationError, match="CERTIFICATE_VERIFY_FAILED"):
        handshake(system_store, "localhost")
    ours = ssl.create_default_context(cafile=str(secure.certs.ca_cert))
    with pytest.raises(ssl.SSLCertVerificationError, match="Hostname mismatch"):
        handshake(ours, "broker.elsewhere")
    handshake(ours, "localhost")
    # sqal.mqtt trusts OpenSSL's default store, which SSL_CERT_FILE points at our CA.
    monkeypatch.setenv("SSL_CERT_FILE", str(secure.certs.ca_cert))
    dev_a = connect(peers, secure.url("L1/devA", tls=True))
    assert dev_a.publish(f"{T}/devA/tof", b"over tls") in ACCEPTED
    sock = dev_a.client.socket()
    assert isinstance(sock, ssl.SSLSocket)
    assert sock.version() in ("TLSv1.2", "TLSv1.3")
    with pytest.raises(BrokerError) as info:  # TLS does not replace the password
        paho_client(secure.url("L1/devA", "wrong-password", tls=True), "x", persistent=False)
    assert info.value.reason_code == NOT_AUTHORIZED


def test_a_service_subscribes_and_acks_over_tls(
    secure: SecureBroker, peers: list[Peer], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The services' own MQTT client (sqal.link) over TLS: verified broker, queued frames
    received and acknowledged; a wrong password is refused with the broker's reason."""
    monkeypatch.setenv("SSL_CERT_FILE", str(secure.certs.ca_cert))
    got: list[Delivery] = []

    def take(d: Delivery) -> bool:
        got.append(d)
        return True

    url = secure.url("ingest", tls=True)
    sub = Subscriber(url, "sqal-ingest", [f"{T}/+/tof"], take)
    sub.start()
    try:
        assert sub.listening
        dev_a = connect(peers, secure.url("L1/devA", tls=True))
        for n in range(3):
            assert dev_a.publish(f"{T}/devA/tof", b"frame %d" % n) in ACCEPTED
        deadline = time.monotonic() + 5
        while len(got) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        assert [d.payload for d in got] == [b"frame 0", b"frame 1", b"frame 2"]
        assert sub.done(got) == 3
        assert isinstance(sub._link.socket(), ssl.SSLSocket)
    finally:
        sub.stop()
    wrong = Subscriber(secure.url("ingest", "wrong-password", tls=True), "x", ["a/b"], take)
    with pytest.raises(BrokerError, match="Not authorized"):
        wrong.start(timeout_s=5)


def test_a_rotated_password_takes_effect_on_sighup(secure: SecureBroker) -> None:
    user = "L1/rotated"
    set_password(secure.folder / "passwd", user, "first-password-1")
    os.kill(secure.process.pid, signal.SIGHUP)
    deadline = time.monotonic() + 5
    while True:  # the reload is asynchronous: poll until the new user is known
        try:
            paho_client(secure.url(user, "first-password-1"), "r1", persistent=False).disconnect()
            break
        except BrokerError:
            assert time.monotonic() < deadline, "SIGHUP did not reload the password file"
            time.sleep(0.1)
    set_password(secure.folder / "passwd", user, "second-password-2")
    os.kill(secure.process.pid, signal.SIGHUP)
    deadline = time.monotonic() + 5
    while True:
        try:
            paho_client(secure.url(user, "first-password-1"), "r2", persistent=False).disconnect()
        except BrokerError as exc:
            refused = exc.reason_code
            break
        assert time.monotonic() < deadline, "old password still accepted after SIGHUP"
        time.sleep(0.1)
    assert refused == NOT_AUTHORIZED
    paho_client(secure.url(user, "second-password-2"), "r3", persistent=False).disconnect()


def _cli() -> typer.Typer:
    app = typer.Typer(pretty_exceptions_enable=False, rich_markup_mode=None)
    app.command("add-device")(mosquitto_add_device_command)
    app.command("add-service")(mosquitto_add_service_command)
    app.command("certs")(mosquitto_certs_command)
    return app


def test_add_device_generates_a_password_shown_once_and_keeps_the_acl_exact(
    tmp_path: Path,
) -> None:
    passwd, acl = tmp_path / "passwd", tmp_path / "acl"
    acl.write_text(
        "# plant: our own monitoring user\nuser nagios\ntopic read $SYS/#\n"
        "pattern readwrite sqal/v1/+/%u/#\n"
    )
    args = ["--password-file", str(passwd), "--acl-file", str(acl)]
    runner = CliRunner()
    first = runner.invoke(_cli(), ["add-device", "L1/dev-01", *args])
    assert first.exit_code == 0, first.output
    shown = re.findall(r"password \(shown once, store it now\): (\S+)", first.output)
    assert len(shown) == 1
    assert len(shown[0]) >= 32
    assert "removed foreign pattern" in first.output
    assert passwd.stat().st_mode & 0o777 == 0o600
    assert passwd.read_text().startswith("L1/dev-01:$7$")  # Mosquitto 2.0's PBKDF2 hash
    assert shown[0] not in passwd.read_text()
    again = runner.invoke(_cli(), ["add-device", "L1/dev-01", *args, "--password", "p" * 12])
    assert again.exit_code == 0, again.output
    assert "shown once" not in again.output
    assert "p" * 12 not in again.output
    assert len(passwd.read_text().splitlines()) == 1  # replaced, not added
    parsed = parse_acl(acl.read_text())
    assert parsed.users == {"nagios": ["# plant: our own monitoring user", "topic read $SYS/#"]}
    assert parsed.patterns == parse_acl(full_acl()).patterns
    assert acl.read_text().count(SQAL_COMMENT) == full_acl().count(SQAL_COMMENT)
    bad = runner.invoke(_cli(), ["add-device", "L1/dev-01", *args, "--password", "short"])
    assert bad.exit_code != 0
    assert "--password" in str(bad.exception)
    assert runner.invoke(_cli(), ["add-device", "L1", *args]).exit_code != 0


def test_the_repository_acl_is_what_the_commands_write(tmp_path: Path) -> None:
    acl = tmp_path / "acl"
    for service in Service:
        result = CliRunner().invoke(
            _cli(),
            ["add-service", service.value, "--password-file", str(tmp_path / "pw"),
             "--acl-file", str(acl), "--json"],
        )  # fmt: skip
        assert result.exit_code == 0, result.output
    assert acl.read_text() == full_acl() == (ROOT / "mosquitto/acl").read_text()


def test_certs_keeps_keys_private_and_the_ca_across_renewals(tmp_path: Path) -> None:
    out = tmp_path / "certs"
    args = ["certs", "--out", str(out), "--host", "broker.plant", "--host", "10.0.0.5"]
    first = CliRunner().invoke(_cli(), [*args, "--client", "L1/dev-01"])
    assert first.exit_code == 0, first.output
    ca_pem = (out / "ca.crt").read_bytes()
    assert CliRunner().invoke(_cli(), args).exit_code == 0
    assert (out / "ca.crt").read_bytes() == ca_pem  # devices keep trusting the same CA
    for key in ("ca.key", "server.key", "clients/L1_dev-01.key"):
        assert (out / key).stat().st_mode & 0o777 == 0o600
    ca = x509.load_pem_x509_certificate(ca_pem)
    server = x509.load_pem_x509_certificate((out / "server.crt").read_bytes())
    client = x509.load_pem_x509_certificate((out / "clients/L1_dev-01.crt").read_bytes())
    server.verify_directly_issued_by(ca)
    client.verify_directly_issued_by(ca)
    san = server.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["broker.plant"]
    assert [str(ip) for ip in san.get_values_for_type(x509.IPAddress)] == ["10.0.0.5"]
    bad = CliRunner().invoke(_cli(), [*args, "--days", "0"])
    assert bad.exit_code != 0
    assert "--days" in str(bad.exception)


def test_our_password_hash_is_mosquitto_passwd_s(tmp_path: Path) -> None:
    """Both ways: we verify what mosquitto_passwd wrote, and the broker (above) accepts ours."""
    binary = shutil.which("mosquitto_passwd") or "/usr/bin/mosquitto_passwd"
    theirs = tmp_path / "theirs"
    theirs.touch()
    subprocess.run([binary, "-b", str(theirs), "u1", "secret-password-1"], check=True)
    line = theirs.read_text().strip()
    assert password_matches(line.split(":", 1)[1], "secret-password-1")
    assert not password_matches(line.split(":", 1)[1], "secret-password-2")
    ours = hash_password("secret-password-1", salt=bytes(12))
    assert ours.startswith("$7$1000$AAAAAAAAAAAAAAAA$")
    assert password_matches(ours, "secret-password-1")
    assert not password_matches("$6$garbage", "secret-password-1")


def test_set_password_keeps_other_users_and_refuses_a_colon(tmp_path: Path) -> None:
    passwd = tmp_path / "passwd"
    set_password(passwd, "analyzer", "first-password-1")
    set_password(passwd, "L1/dev-01", "device-password-1")
    set_password(passwd, "analyzer", "second-password-2")
    users = dict(line.split(":", 1) for line in passwd.read_text().splitlines())
    assert list(users) == ["L1/dev-01", "analyzer"]
    assert password_matches(users["analyzer"], "second-password-2")
    assert password_matches(users["L1/dev-01"], "device-password-1")
    with pytest.raises(ConfigError, match="must not hold"):
        set_password(passwd, "a:b", "first-password-1")


def test_the_analyzer_s_liveness_probe_is_answered_under_the_acl(
    secure: SecureBroker, peers: list[Peer]
) -> None:
    """analyzer.liveness: an UNSUBSCRIBE needs no ACL rule, and its UNSUBACK always comes."""
    answered = threading.Event()
    analyzer = connect(peers, secure.url("analyzer"))
    analyzer.client.on_unsubscribe = lambda *args: answered.set()
    rc, _ = analyzer.client.unsubscribe(PROBE_FILTER)
    assert rc == paho.MQTT_ERR_SUCCESS
    assert answered.wait(5)


def test_rewriting_a_broker_file_keeps_its_owner_and_leaves_no_temp_file(tmp_path: Path) -> None:
    """As root, `add-device` must not hand the broker's password file to root (review)."""
    passwd = tmp_path / "passwd"
    set_password(passwd, "analyzer", "first-password-1")
    if os.geteuid() == 0:
        os.chown(passwd, 1883, 1883)
    owner = (passwd.stat().st_uid, passwd.stat().st_gid)
    set_password(passwd, "L1/dev-01", "device-password-1")
    assert (passwd.stat().st_uid, passwd.stat().st_gid) == owner
    assert passwd.stat().st_mode & 0o777 == 0o600
    assert sorted(p.name for p in tmp_path.iterdir()) == ["passwd"]


@pytest.mark.parametrize("tls", [False, True], ids=["loopback", "tls"])
def test_a_device_login_cannot_take_over_a_service_s_session(
    secure: SecureBroker, tls: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """#15: with its own password and the analyzer's client id, a device connected with a clean
    start and the broker handed it the analyzer's session (5 queued frames lost). The broker
    now replaces every client id with the user name, on both listeners."""
    monkeypatch.setenv("SSL_CERT_FILE", str(secure.certs.ca_cert))
    queued: list[bytes] = []
    received = threading.Event()

    def on_message(c: paho.Client, u: object, msg: paho.MQTTMessage) -> None:
        queued.append(bytes(msg.payload))
        if len(queued) == 5:
            received.set()

    url = secure.url("analyzer", tls=tls)
    service = paho_client(url, "sqal-analyzer", on_message=on_message)
    service.subscribe(f"{T}/devA/tof", qos=1)
    time.sleep(0.2)  # SUBACK
    service.disconnect()
    service.loop_stop()
    device = paho_client(secure.url("L1/devA", tls=tls), "devA", persistent=False)
    for n in range(5):  # queued for the absent analyzer
        device.publish(f"{T}/devA/tof", b"frame %d" % n, qos=1).wait_for_publish(5)
    device.disconnect()
    device.loop_stop()
    thief = paho_client(secure.url("L1/devA", tls=tls), "sqal-analyzer", persistent=False)
    thief.disconnect()
    thief.loop_stop()
    service = paho_client(url, "sqal-analyzer", on_message=on_message)
    try:
        assert received.wait(5), f"the analyzer's session lost its queue: got {queued}"
    finally:
        service.disconnect()
        service.loop_stop()
