"""Random bearer secrets and their digests: session tokens, account tokens, API keys.

Tokens carry 256 bits from `secrets`; only their SHA-256 digest is stored, so a copy of the
database cannot be replayed as credentials. A slow hash would add nothing: the input is random,
not a password.
"""

from __future__ import annotations

import hashlib
import secrets

__all__ = ["API_KEY_PREFIX", "digest", "new_api_key", "new_token"]

API_KEY_PREFIX = "gwm_"


def new_token() -> tuple[str, str]:
    """A fresh token (shown once) and its digest (stored)."""
    token = secrets.token_urlsafe(32)
    return token, digest(token)


def new_api_key() -> tuple[str, str, str]:
    """(key, digest, display prefix). Keys start with `gwm_` so the middleware can tell them apart."""
    key = API_KEY_PREFIX + secrets.token_urlsafe(32)
    return key, digest(key), key[: len(API_KEY_PREFIX) + 6]


def digest(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()
