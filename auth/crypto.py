"""Authenticated encryption of small secrets at rest (TOTP secrets, IdP client secrets).

`SecretBox` seals bytes with AES-256-GCM under a key chosen by id and returns a text token

    v1.<key id>.<base64url(nonce || ciphertext || tag)>

Every call takes associated data naming where the value belongs (e.g. b"mfa:" + user id): the
ciphertext is bound to it, so a token copied into another user's row fails to decrypt instead of
handing that user someone else's secret. The token's version and key id are bound too.

Rotation: configure the new key first in the setting ("new:..., old:..."). Tokens are written
with the current (first) key and read with whichever known key they name; `needs_rotation` tells a
re-encryption job which rows still use an old one. Drop the old key once none do.
"""

from __future__ import annotations

import base64
import binascii
import os
import re
import uuid
from collections.abc import Mapping

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from auth.exceptions import ConfigurationError, DecryptionError

__all__ = ["SecretBox", "config_aad"]

_VERSION = "v1"
_KEY_BYTES = 32
# 96-bit random nonces: NIST SP 800-38D bounds one key to 2**32 random-nonce encryptions, far above
# what MFA enrolments and secret updates will ever produce between rotations.
_NONCE_BYTES = 12
_TAG_BYTES = 16
# Key ids appear in tokens and in the "id:key,id:key" setting, so '.', ':' and ',' are excluded.
_KEY_ID = re.compile(r"[A-Za-z0-9_-]{1,32}")
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")
_KEY_HINT = (
    'generate one with: python -c "import base64,os; print(base64.b64encode(os.urandom(32)).decode())"'
)


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes | None:
    if not _BASE64URL.fullmatch(text):
        return None
    try:
        data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    except (binascii.Error, ValueError):
        return None
    # Refuse non-canonical spellings (stray low bits in the last character) so one ciphertext has
    # exactly one token: nothing downstream can be fooled by two different-looking equal values.
    return data if _b64url_encode(data) == text else None


def _header(key_id: str) -> bytes:
    return f"{_VERSION}.{key_id}.".encode("ascii")


def _check_aad(aad: bytes) -> bytes:
    if not isinstance(aad, bytes | bytearray | memoryview):
        raise TypeError("aad must be bytes")
    if not aad:
        # Empty associated data binds the ciphertext to nothing; that is always a caller's bug.
        raise ValueError("aad must name the value's context, e.g. b'mfa:' + user id")
    return bytes(aad)


class SecretBox:
    """AES-256-GCM with several named keys: encrypts with the current one, decrypts with any."""

    def __init__(self, keys: Mapping[str, bytes], current_key_id: str) -> None:
        if not keys:
            raise ConfigurationError("SecretBox needs at least one key")
        ciphers: dict[str, AESGCM] = {}
        for key_id, key in keys.items():
            if not isinstance(key_id, str) or not _KEY_ID.fullmatch(key_id):
                raise ConfigurationError(
                    f"key id {key_id!r} must be 1-32 characters of letters, digits, '-' or '_'"
                )
            if not isinstance(key, bytes | bytearray):
                raise ConfigurationError(f"key {key_id!r} must be bytes")
            if len(key) != _KEY_BYTES:
                raise ConfigurationError(
                    f"key {key_id!r} must be exactly {_KEY_BYTES} bytes for AES-256, got {len(key)}; "
                    + _KEY_HINT
                )
            ciphers[key_id] = AESGCM(bytes(key))
        if current_key_id not in ciphers:
            raise ConfigurationError(f"current key id {current_key_id!r} is not among the configured keys")
        self._ciphers = ciphers
        self._current_key_id = current_key_id

    @classmethod
    def from_setting(cls, value: str) -> SecretBox:
        """Build from "kid1:base64key,kid2:base64key"; the first key is the current one.

        Keys may be standard or URL-safe base64, padded or not. Errors name key ids, never keys.
        """
        keys: dict[str, bytes] = {}
        for position, entry in enumerate(value.split(","), start=1):
            key_id, separator, encoded = (part.strip() for part in entry.partition(":"))
            if not separator or not key_id or not encoded:
                raise ConfigurationError(f"entry {position} of the key setting is not 'key_id:base64key'")
            if key_id in keys:
                raise ConfigurationError(f"key id {key_id!r} appears twice in the key setting")
            key = _b64url_decode(encoded.replace("+", "-").replace("/", "_").rstrip("="))
            if key is None:
                raise ConfigurationError(
                    f"key {key_id!r} in the key setting is not valid base64; {_KEY_HINT}"
                )
            keys[key_id] = key
        return cls(keys, current_key_id=next(iter(keys)))

    def __repr__(self) -> str:
        # Key ids only: this object's repr can end up in a log or a traceback.
        return f"SecretBox(key_ids={list(self._ciphers)!r}, current_key_id={self._current_key_id!r})"

    @property
    def current_key_id(self) -> str:
        return self._current_key_id

    def encrypt(self, plaintext: bytes, aad: bytes) -> str:
        """Seal `plaintext` under the current key, bound to `aad`."""
        context = _check_aad(aad)
        header = _header(self._current_key_id)
        nonce = os.urandom(_NONCE_BYTES)
        sealed = self._ciphers[self._current_key_id].encrypt(nonce, bytes(plaintext), header + context)
        return header.decode("ascii") + _b64url_encode(nonce + sealed)

    def decrypt(self, token: str, aad: bytes) -> bytes:
        """Open a token from `encrypt`; DecryptionError if it is not authentic for `aad`."""
        context = _check_aad(aad)
        key_id, blob = self._parse(token)
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise DecryptionError("token names a key that is not configured")
        nonce, sealed = blob[:_NONCE_BYTES], blob[_NONCE_BYTES:]
        try:
            return cipher.decrypt(nonce, sealed, _header(key_id) + context)
        except InvalidTag:
            # One message for a wrong key, wrong context and tampering alike; `from None` keeps
            # the cryptography internals out of logs.
            raise DecryptionError("token failed authentication") from None

    def needs_rotation(self, token: str) -> bool:
        """Whether `token` was sealed with a key other than the current one (not authenticated)."""
        key_id, _ = self._parse(token)
        return key_id != self._current_key_id

    @staticmethod
    def _parse(token: str) -> tuple[str, bytes]:
        if not isinstance(token, str):
            raise DecryptionError("token is not text")
        parts = token.split(".")
        if len(parts) != 3 or parts[0] != _VERSION or not _KEY_ID.fullmatch(parts[1]):
            raise DecryptionError("token is malformed")
        blob = _b64url_decode(parts[2])
        if blob is None or len(blob) < _NONCE_BYTES + _TAG_BYTES:
            raise DecryptionError("token is malformed")
        return parts[1], blob


def config_aad(tenant_id: uuid.UUID, key: str) -> bytes:
    """The associated data of a sealed tenant configuration value: it opens for that tenant's key only."""
    return f"tenant-config:{tenant_id}:{key}".encode()
