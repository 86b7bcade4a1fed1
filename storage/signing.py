"""HMAC-SHA256 signed tokens: claims + purpose + expiry, for URLs the local backend serves (a
presigned upload; downloads may use it too) and for the ticket that completes a presigned upload.

A token is `base64url(json claims) "." base64url(hmac)`; the purpose is part of the MAC, so a token
issued for one purpose is refused for another. Expiry is checked against an injected clock.
"""

from __future__ import annotations

import base64
import datetime
import hashlib
import hmac
import json
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["BadSignature", "Expired", "Signer"]


class BadSignature(ValueError):
    """Malformed or tampered token, or one issued for another purpose."""


class Expired(ValueError):
    """A genuine token past its expiry."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Signer:
    """Signs and verifies tokens with one key (at least 32 bytes)."""

    def __init__(self, key: bytes, *, clock: Callable[[], datetime.datetime] = _utcnow) -> None:
        if len(key) < 32:
            raise ValueError("the signing key must have at least 32 bytes")
        self._key = key
        self.clock = clock

    def _mac(self, purpose: str, body: str) -> bytes:
        return hmac.new(self._key, f"{purpose}\n{body}".encode(), hashlib.sha256).digest()

    def sign(
        self, purpose: str, claims: Mapping[str, Any], lifetime: datetime.timedelta
    ) -> tuple[str, datetime.datetime]:
        """A token carrying `claims` (JSON values) for `purpose`, and the instant it expires."""
        expires = self.clock() + lifetime
        payload = {**claims, "exp": int(expires.timestamp())}
        body = _b64(json.dumps(payload, separators=(",", ":"), sort_keys=True).encode())
        return f"{body}.{_b64(self._mac(purpose, body))}", expires

    def verify(self, purpose: str, token: str) -> dict[str, Any]:
        """The claims of a token signed for `purpose`; BadSignature or Expired otherwise."""
        body, _, mac = token.partition(".")
        try:
            given = _unb64(mac)
        except ValueError:
            raise BadSignature("malformed token") from None
        if not body or not hmac.compare_digest(given, self._mac(purpose, body)):
            raise BadSignature("bad signature")
        try:
            claims = json.loads(_unb64(body))
        except ValueError:
            raise BadSignature("malformed token") from None
        if not isinstance(claims, dict) or not isinstance(claims.get("exp"), int):
            raise BadSignature("malformed token")
        if self.clock().timestamp() >= claims["exp"]:
            raise Expired("expired")
        return claims
