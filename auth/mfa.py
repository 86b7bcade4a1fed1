"""TOTP second factor (RFC 6238) and single-use recovery codes.

TOTP uses the parameters every authenticator app supports: HMAC-SHA-1 (still approved for HMAC by
NIST SP 800-131A), 6 digits, 30-second steps, and one step of clock drift either way. Each code is
accepted once: `verify_totp` returns the accepted time step, the caller stores it, and any code of
that step or an earlier one is refused afterwards. A TOTP code can be relayed by a real-time
phishing proxy within its window, so nothing here claims protection against phishing; tenants that
need stronger authenticators get them from their IdP through SSO.

Recovery codes are shown once and stored as SHA-256 hashes; a matched code is removed by the
caller, which makes it single-use.

The TOTP secret is a credential: store it encrypted (`auth.crypto.SecretBox`, associated data
b"mfa-totp:" + user id bytes) and never log it or the provisioning URI that contains it.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Sequence
from datetime import datetime

import pyotp

__all__ = [
    "RECOVERY_CODE_COUNT",
    "TOTP_STEP_SECONDS",
    "generate_recovery_codes",
    "hash_recovery_code",
    "match_recovery_code",
    "new_totp_secret",
    "provisioning_uri",
    "verify_totp",
]

TOTP_STEP_SECONDS = 30
_TOTP_DIGITS = 6
_TOTP_WINDOW = 1
# 32 base32 characters = 160 bits, the HMAC-SHA-1 key length RFC 4226 recommends.
_SECRET_BASE32_CHARS = 32
_TOTP_CODE = re.compile(r"[0-9]{6}")

RECOVERY_CODE_COUNT = 10
# Crockford's base32: no i, l, o or u; on input o reads as 0 and i or l as 1, so a code copied by
# hand from paper still matches. 16 characters of 5 bits = 80 bits per code.
_RECOVERY_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
_RECOVERY_LENGTH = 16
_RECOVERY_GROUP = 4
_RECOVERY_ALIASES = str.maketrans({"o": "0", "i": "1", "l": "1"})
# Hyphen-minus plus the dashes word processors and chat apps substitute when a code is pasted.
_RECOVERY_IGNORED = re.compile(r"[\s\-\u2010\u2011\u2012\u2013\u2014\u2212]+")


def new_totp_secret() -> str:
    """A fresh random TOTP secret: 32 base32 characters (160 bits)."""
    return pyotp.random_base32(length=_SECRET_BASE32_CHARS)


def _label_part(text: str, what: str) -> str:
    # The otpauth label is "issuer:account"; a colon inside either part makes apps split it in the
    # wrong place, and a tenant name may well contain one.
    cleaned = " ".join(text.replace(":", " ").split())
    if not cleaned:
        raise ValueError(f"{what} must not be empty")
    return cleaned


def provisioning_uri(secret: str, account_name: str, issuer: str) -> str:
    """The otpauth:// URI an authenticator app enrols from (usually shown as a QR code).

    It contains the secret: send it to the enrolling user only, and never log it.
    """
    totp = pyotp.TOTP(secret, digits=_TOTP_DIGITS, interval=TOTP_STEP_SECONDS)
    return totp.provisioning_uri(
        name=_label_part(account_name, "account_name"), issuer_name=_label_part(issuer, "issuer")
    )


def verify_totp(secret: str, code: str, *, last_accepted_step: int | None, now: datetime) -> int | None:
    """The time step `code` belongs to if it is valid now and newer than `last_accepted_step`.

    Returns None for a wrong, malformed, expired or replayed code. Whitespace inside the code is
    ignored ("123 456"); anything other than six ASCII digits is refused. `now` must be
    timezone-aware: a naive datetime would be read in the server's local zone.
    """
    if now.tzinfo is None or now.utcoffset() is None:
        raise ValueError("now must be a timezone-aware datetime")
    candidate = "".join(code.split())
    if not _TOTP_CODE.fullmatch(candidate):
        return None
    totp = pyotp.TOTP(secret, digits=_TOTP_DIGITS, interval=TOTP_STEP_SECONDS)
    current = int(now.timestamp()) // TOTP_STEP_SECONDS
    accepted: int | None = None
    # Every step in the window is compared (no early return) so timing says nothing about which
    # one matched. If two steps share the code, the later wins: it burns more steps for replay.
    for step in range(current - _TOTP_WINDOW, current + _TOTP_WINDOW + 1):
        if step < 0 or (last_accepted_step is not None and step <= last_accepted_step):
            continue
        if hmac.compare_digest(totp.generate_otp(step), candidate):
            accepted = step
    return accepted


def generate_recovery_codes(n: int = RECOVERY_CODE_COUNT) -> list[str]:
    """`n` distinct random codes shaped xxxx-xxxx-xxxx-xxxx, to be shown to the user once."""
    if n < 1:
        raise ValueError("n must be positive")
    codes: dict[str, None] = {}
    while len(codes) < n:
        raw = "".join(secrets.choice(_RECOVERY_ALPHABET) for _ in range(_RECOVERY_LENGTH))
        groups = (raw[i : i + _RECOVERY_GROUP] for i in range(0, _RECOVERY_LENGTH, _RECOVERY_GROUP))
        codes["-".join(groups)] = None
    return list(codes)


def _normalize_recovery_code(code: str) -> str | None:
    text = _RECOVERY_IGNORED.sub("", code).lower().translate(_RECOVERY_ALIASES)
    if len(text) != _RECOVERY_LENGTH or any(c not in _RECOVERY_ALPHABET for c in text):
        return None
    return text


def _digest(normalized: str) -> str:
    # Plain SHA-256, no salt, no HMAC key, no slow KDF: those defend low-entropy secrets such as
    # passwords against guessing. A recovery code is 80 uniformly random bits, so even an attacker
    # holding every stored hash and testing all of them at once cannot enumerate the space; and a
    # fast hash lets a login compare against all ten codes without a KDF run each.
    return hashlib.sha256(normalized.encode("ascii")).hexdigest()


def hash_recovery_code(code: str) -> str:
    """The value to store for a recovery code (hex SHA-256 of its normalized form)."""
    normalized = _normalize_recovery_code(code)
    if normalized is None:
        raise ValueError("not a recovery code of the expected shape")
    return _digest(normalized)


def match_recovery_code(code: str, hashes: Sequence[str | None]) -> int | None:
    """Index of the stored hash `code` matches, or None. The caller deletes that entry.

    Case, dashes and spaces are ignored. None entries (codes already used, if the caller keeps
    positions stable) never match. Every entry is compared, whatever matched.
    """
    normalized = _normalize_recovery_code(code)
    if normalized is None:
        return None
    candidate = _digest(normalized).encode("ascii")
    found: int | None = None
    for index, stored in enumerate(hashes):
        if stored is None:
            continue
        if hmac.compare_digest(candidate, stored.encode("utf-8")) and found is None:
            found = index
    return found
