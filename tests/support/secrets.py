"""Every secret the suite uses, collected as it goes, so one last test can look for leaks.

The HTTP client used by the API tests registers what it sends (passwords, codes, bearer tokens)
and what it receives (session tokens, API keys, TOTP secrets, recovery codes); factories register
the passwords they set. A log handler keeps every record the application logs during the session.
`tests/test_zz_secrets.py` then greps the audit trail and the logs for all of them.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Any

import httpx

__all__ = ["LOG_LINES", "SECRETS", "LogKeeper", "remember", "request_hook", "response_hook"]

SECRETS: set[str] = set()
LOG_LINES: list[str] = []

_SECRET_KEYS = {
    "password", "newpassword", "currentpassword", "code", "token", "key", "secret", "recoverycodes",
    "provisioninguri", "samlresponse",
}


def _is_identifier(value: str) -> bool:
    try:
        uuid.UUID(value)
    except ValueError:
        return False
    return True


def _is_object_key(value: str) -> bool:
    """A storage object key (an S3 presigned POST's `key` field): built from ids and fixed words only
    (storage/keys.py), so it names where a file goes and is no secret."""
    parts = value.split("/")
    return len(parts) > 1 and all(_is_identifier(p) or re.fullmatch(r"[a-z][a-z0-9_-]*", p) for p in parts)


def remember(value: Any) -> None:
    # Row ids travel under names like "key" too (a GraphQL variable), and so do storage object keys;
    # they are not secrets.
    if isinstance(value, str) and len(value) >= 8 and not _is_identifier(value) and not _is_object_key(value):
        SECRETS.add(value)
    elif isinstance(value, list):
        for item in value:
            remember(item)


def _is_error_code(key: str, value: Any) -> bool:
    """An error's `code` (UserError, GraphQL extensions): UPPER_SNAKE_CASE, never a secret."""
    return key == "code" and isinstance(value, str) and re.fullmatch(r"[A-Z][A-Z0-9_]*", value) is not None


def _scan(value: Any) -> None:
    if isinstance(value, dict):
        for key, item in value.items():
            if key.lower().replace("_", "") in _SECRET_KEYS and not _is_error_code(key, item):
                remember(item)
            _scan(item)
    elif isinstance(value, list):
        for item in value:
            _scan(item)


async def request_hook(request: httpx.Request) -> None:
    authorization = request.headers.get("authorization", "")
    if authorization.lower().startswith("bearer "):
        remember(authorization[7:].strip())
    if request.headers.get("content-type", "").startswith("application/json"):
        try:
            _scan(json.loads(request.content or b"null"))
        except (ValueError, httpx.RequestNotRead):  # not JSON, or a streamed body (nothing to learn)
            pass


async def response_hook(response: httpx.Response) -> None:
    if response.headers.get("content-type", "").startswith(("application/json", "application/graphql-response+json")):
        await response.aread()
        try:
            _scan(response.json())
        except ValueError:
            pass


class LogKeeper(logging.Handler):
    def emit(self, record: logging.LogRecord) -> None:
        try:
            LOG_LINES.append(self.format(record))
        except Exception:  # a record that cannot be formatted still must not break the suite
            LOG_LINES.append(str(record.msg))
