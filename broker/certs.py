"""``sqal mosquitto certs``: a private CA and the broker's TLS certificate (and client ones).

Keys are written 0600; an existing CA under the output folder is kept, so renewing the server
certificate does not touch the devices, which trust the CA.
"""

from __future__ import annotations

import ipaddress
import json
import re
import socket
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Annotated

import typer
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from broker.admin import JsonOption, write_atomic
from sqal.errors import ConfigError

CA_DAYS = 3650
"""The CA outlives server certificates: devices keep trusting it across renewals."""

MAX_CN = 64
"""Longest common name X.509 allows (RFC 5280, ``ub-common-name``); a host or client names one."""
_CLIENT = re.compile(r"\A[A-Za-z0-9_-]+(/[A-Za-z0-9_-]+)?\Z")
"""A client certificate's name: a broker user, ``LINE/DEVICE`` or a service (its file name is
the name with ``/`` as ``_``, under ``clients/``)."""


def check_names(hosts: list[str], clients: list[str]) -> None:
    """Refuse names no certificate can carry, before anything is written.

    Raises:
        ConfigError: an empty or overlong host (the first is the common name) or a client name
            that is not ``NAME`` or ``LINE/DEVICE`` of ``A-Z a-z 0-9 _ -`` within 64 characters.
    """
    for i, host in enumerate(hosts):
        limit = MAX_CN if i == 0 else 253  # a DNS name is at most 253 characters (RFC 1035)
        if not host or len(host) > limit or not host.isascii() or not host.isprintable():
            raise ConfigError(
                f"--host {host!r}: give a DNS name or IP of 1-{limit} ASCII characters"
            )
    for name in clients:
        if len(name) > MAX_CN or not _CLIENT.match(name):
            raise ConfigError(
                f"--client {name!r}: give NAME or LINE/DEVICE of A-Z a-z 0-9 _ -, "
                f"at most {MAX_CN} characters"
            )


@dataclass(frozen=True, slots=True)
class CertFiles:
    """What :func:`make_certs` wrote; keys are mode 0600, certificates 0644."""

    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path
    clients: tuple[Path, ...]
    new_ca: bool


def _names(hosts: list[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for host in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            names.append(x509.DNSName(host))
    return names


def _key_pem(key: ec.EllipticCurvePrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _cert_pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(serialization.Encoding.PEM).decode()


def _load_ca(out: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None:
    cert_path, key_path = out / "ca.crt", out / "ca.key"
    if not (cert_path.exists() and key_path.exists()):
        return None
    key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"--out {out}: ca.key is not an EC key made by sqal mosquitto certs")
    return x509.load_pem_x509_certificate(cert_path.read_bytes()), key


def _key_usage(is_ca: bool) -> x509.KeyUsage:
    """A CA signs certificates; a leaf signs its TLS handshakes (ECDSA), nothing else."""
    flags = dict.fromkeys(
        ("content_commitment", "key_encipherment", "data_encipherment", "key_agreement",
         "encipher_only", "decipher_only"),
        False,
    )  # fmt: skip
    return x509.KeyUsage(digital_signature=not is_ca, key_cert_sign=is_ca, crl_sign=is_ca, **flags)


def _issue(
    subject: str,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    now: datetime,
    days: int,
    *,
    hosts: list[str] | None = None,
    usage: x509.ObjectIdentifier | None = None,
) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """A certificate for ``subject``: self-signed CA when ``issuer`` is None, else a leaf."""
    # P-256 ECDSA: supported by Mosquitto/OpenSSL and by the ESP32's mbedTLS.
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    is_ca = issuer is None
    issuer_name = name if issuer is None else issuer[0].subject
    signing_key = key if issuer is None else issuer[1]
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))  # tolerate a device clock slightly behind
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=0 if is_ca else None), True)
        .add_extension(_key_usage(is_ca), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), False)
    )
    if issuer is not None:
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer[1].public_key()), False
        )
    if hosts:
        builder = builder.add_extension(x509.SubjectAlternativeName(_names(hosts)), False)
    if usage is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage]), False)
    return builder.sign(signing_key, hashes.SHA256()), key


def make_certs(
    out: Path, hosts: list[str], days: int, clients: list[str], now: datetime
) -> CertFiles:
    """Write ``ca.crt``/``ca.key`` (kept if present), ``server.crt``/``server.key`` and
    ``clients/NAME.crt``/``.key`` under ``out``.

    Args:
        hosts: DNS names and IP addresses clients use to reach the broker (subjectAltName;
            the first is also the common name). Clients check the name they dialled.
        days: validity of the server and client certificates.
        now: the issue time (aware UTC).
    """
    ca = _load_ca(out)
    new_ca = ca is None
    if ca is None:
        ca = _issue("SQAL broker CA", None, now, CA_DAYS)
        write_atomic(out / "ca.key", _key_pem(ca[1]), 0o600)
        write_atomic(out / "ca.crt", _cert_pem(ca[0]), 0o644)
    cert, key = _issue(hosts[0], ca, now, days, hosts=hosts, usage=ExtendedKeyUsageOID.SERVER_AUTH)
    write_atomic(out / "server.key", _key_pem(key), 0o600)
    write_atomic(out / "server.crt", _cert_pem(cert), 0o644)
    written: list[Path] = []
    for client in clients:
        cert, key = _issue(client, ca, now, days, usage=ExtendedKeyUsageOID.CLIENT_AUTH)
        stem = out / "clients" / client.replace("/", "_")
        write_atomic(stem.with_suffix(".key"), _key_pem(key), 0o600)
        write_atomic(stem.with_suffix(".crt"), _cert_pem(cert), 0o644)
        written.append(stem.with_suffix(".crt"))
    return CertFiles(
        out / "ca.crt", out / "ca.key", out / "server.crt", out / "server.key",
        tuple(written), new_ca,
    )  # fmt: skip


def mosquitto_certs_command(
    out: Annotated[Path, typer.Option("--out", help="Folder for ca.*, server.*, clients/.")],
    host: Annotated[
        list[str] | None,
        typer.Option("--host", help="Broker DNS name or IP clients dial; repeatable."),
    ] = None,
    days: Annotated[
        int, typer.Option("--days", help="Validity of server and client certificates.")
    ] = 730,
    client: Annotated[
        list[str] | None,
        typer.Option("--client", help="Also issue a client certificate NAME; repeatable."),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Make a CA (kept if --out has one) and the broker's TLS certificate signed by it."""
    if not 1 <= days <= CA_DAYS:
        raise ConfigError(f"--days must be 1-{CA_DAYS}")
    hosts = host or [socket.getfqdn()[:MAX_CN], "localhost", "127.0.0.1"]
    check_names(hosts, client or [])
    try:
        files = make_certs(out, hosts, days, client or [], datetime.now(UTC))
    except OSError as exc:
        raise ConfigError(f"--out {out}: cannot write ({exc.strerror or exc})") from None
    doc = {
        "ca_cert": str(files.ca_cert),
        "ca_key": str(files.ca_key),
        "server_cert": str(files.server_cert),
        "server_key": str(files.server_key),
        "clients": [str(p) for p in files.clients],
        "hosts": hosts,
        "new_ca": files.new_ca,
    }
    if as_json:
        typer.echo(json.dumps(doc))
        return
    typer.echo(f"{'new CA' if files.new_ca else 'kept CA'} {files.ca_cert} (key {files.ca_key})")
    typer.echo(f"server {files.server_cert} for {', '.join(hosts)}, {days} days")
    for path in files.clients:
        typer.echo(f"client {path}")
    typer.echo("give devices ca.crt only; keep ca.key offline")
