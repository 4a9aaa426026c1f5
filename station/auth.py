"""Who may do what at the station: users, roles, sessions, CSRF tokens and read-API tokens.

- **Passwords** are hashed with argon2id (argon2-cffi's defaults, RFC 9106's second
  recommended option); a hash made with older parameters is re-hashed at the next sign-in.
- **Sessions** are Starlette's signed cookie (itsdangerous HMAC-SHA1 over the JSON session):
  ``HttpOnly``, ``SameSite=Lax``, ``Secure`` unless the station serves plain HTTP on loopback
  (``--insecure-cookies``), 12 hours. The session holds the user's name, role and language, so
  the pages work while the database restarts; a changed role applies at the next sign-in.
- **CSRF**: every form carries the session's random token, compared in constant time; a POST
  without it, or with another, is refused with 403. ``SameSite=Lax`` already keeps other sites'
  POSTs cookie-less; the token also covers same-site pages of other applications.
- **Roles** are ordered: a viewer reads, an operator also acknowledges alarms and records
  re-checks, quality also opens the quality pages (re-check accuracy, shift reports; lots later).
- **Read-API tokens** are 256 random bits; the database keeps their SHA-256 only.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from enum import StrEnum

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from sqal.errors import ConfigError

NAME_PATTERN = r"[A-Za-z0-9_.@-]{1,64}"
_NAME = re.compile(rf"\A{NAME_PATTERN}\Z")
MIN_PASSWORD_CHARS = 10
TOKEN_BYTES = 32
CSRF_FIELD = "csrf_token"

_hasher = PasswordHasher()


class Role(StrEnum):
    """A user's role; each may do what the ones before it may."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    QUALITY = "quality"

    @property
    def rank(self) -> int:
        return list(Role).index(self)

    def may(self, needed: Role) -> bool:
        return self.rank >= needed.rank


def check_name(name: str, what: str = "user name") -> str:
    """``name`` if it is a valid user or token name.

    Raises:
        ConfigError: it is not 1-64 of ``A-Z a-z 0-9 _ . @ -``.
    """
    if not _NAME.match(name):
        raise ConfigError(f"{what} {name!r}: use 1-64 of A-Z a-z 0-9 _ . @ -")
    return name


def check_password(password: str) -> str:
    """``password`` if long enough.

    Raises:
        ConfigError: shorter than :data:`MIN_PASSWORD_CHARS`.
    """
    if len(password) < MIN_PASSWORD_CHARS:
        raise ConfigError(f"a password needs at least {MIN_PASSWORD_CHARS} characters")
    return password


def hash_password(password: str) -> str:
    """The argon2id hash of ``password`` in its encoded form (``$argon2id$v=19$…``)."""
    return _hasher.hash(password)


def verify_password(encoded: str, password: str) -> tuple[bool, str | None]:
    """Whether ``password`` matches, and a new hash when the stored one's parameters are old."""
    try:
        _hasher.verify(encoded, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return False, None
    return True, (_hasher.hash(password) if _hasher.check_needs_rehash(encoded) else None)


DUMMY_HASH = _hasher.hash("an unknown user costs the same time as a known one")
"""Verified against when the user does not exist, so timing does not tell who exists."""


def new_token() -> tuple[str, bytes]:
    """A new read-API token and the SHA-256 the database keeps."""
    token = secrets.token_urlsafe(TOKEN_BYTES)
    return token, token_digest(token)


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def new_csrf() -> str:
    return secrets.token_urlsafe(32)


def csrf_matches(expected: str | None, given: str | None) -> bool:
    return bool(expected) and bool(given) and secrets.compare_digest(str(expected), str(given))
