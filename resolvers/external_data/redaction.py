"""Credentials out of what the read API shows of external API traffic.

The poller records every call it makes (`api_integration_logs`): the headers it sent carry the
source's credentials (`Authorization`, `X-Api-Key`...), SAM.gov takes its key as an `api_key`
query parameter (so URLs and the error messages quoting them carry it), and responses may carry
cookies or tokens. The writer is meant to redact before storing; the read API does not rely on
that and redacts again on the way out:

- headers: every secret-looking header is dropped; a value that is not a JSON object (or a list
  of `[name, value]` pairs) is withheld entirely (null), since it cannot be checked;
- JSON payloads: every secret-looking key is dropped, at any depth;
- text (URLs, error messages, and every string inside headers and payloads): the value of a
  secret-looking `name=value` parameter or `name: value` pair and of a `Bearer`/`Basic`
  credential becomes `REDACTED`.

A name is secret-looking when, lower-cased with everything but letters and digits removed, it
contains auth, token, secret, passw, cookie, session, signature, credential or apikey, or ends in
key (X-Api-Key, api_key, Authorization, Proxy-Authorization, Set-Cookie, X-Amz-Security-Token,
Ocp-Apim-Subscription-Key, client_secret, access_token...). Dropping too much costs a debugging
detail; dropping too little leaks a tenant's credential, so the list errs on the wide side.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["MASK", "is_secret_name", "redact_headers", "redact_json", "redact_text"]

MASK = "REDACTED"

_SECRET_PART = re.compile(r"auth|token|secret|passw|cookie|session|signature|credential|apikey|key$")
_NOT_ALNUM = re.compile(r"[^a-z0-9]")
# `name=value` in a query string, a form body or prose (`...?api_key=abc&limit=1`), and
# `name: value` as in a header line or a JSON object quoted in an error message.
_PARAM = re.compile(r"(?P<name>[A-Za-z0-9_.\-\[\]]+)=(?P<value>[^&#;\s'\"<>()]*)")
_COLON = re.compile(r"(?P<name>[A-Za-z0-9_\-]+)(?P<sep>[\"']?\s*:\s*[\"']?)(?P<value>[^\s,;'\"{}\[\]&<>()]+)")
_SCHEMES = {"bearer", "basic", "token"}
_SCHEME_CREDENTIAL = re.compile(r"\b(?P<scheme>Bearer|Basic|Token)\s+[A-Za-z0-9._~+/=\-]+", re.I)


def is_secret_name(name: str) -> bool:
    """Whether a header, key or parameter name looks like it holds a credential."""
    return bool(_SECRET_PART.search(_NOT_ALNUM.sub("", name.lower())))


def _mask_param(match: re.Match[str]) -> str:
    if is_secret_name(match["name"]) and match["value"]:
        return f"{match['name']}={MASK}"
    return match[0]


def _mask_colon(match: re.Match[str]) -> str:
    value = match["value"]
    if is_secret_name(match["name"]) and not value.startswith("//") and value.lower() not in _SCHEMES:
        return f"{match['name']}{match['sep']}{MASK}"
    return match[0]


def redact_text(value: str | None) -> str | None:
    """`value` with credential parameters and Bearer/Basic credentials masked."""
    if value is None:
        return None
    masked = _SCHEME_CREDENTIAL.sub(lambda m: f"{m['scheme']} {MASK}", value)
    masked = _PARAM.sub(_mask_param, masked)
    return _COLON.sub(_mask_colon, masked)


def redact_json(value: Any) -> Any:
    """A copy of a JSON value without secret-looking keys, its strings passed through redact_text."""
    if isinstance(value, Mapping):
        return {k: redact_json(v) for k, v in value.items() if not (isinstance(k, str) and is_secret_name(k))}
    if isinstance(value, list):
        return [redact_json(v) for v in value]
    if isinstance(value, str):
        return redact_text(value)
    return value


def _is_pair(item: Any) -> bool:
    return isinstance(item, list | tuple) and len(item) == 2 and isinstance(item[0], str)


def redact_headers(value: Any) -> Any:
    """Headers without secret-looking ones: an object, or a list of [name, value] pairs; else None."""
    if value is None:
        return None
    if isinstance(value, Mapping):
        return redact_json(value)
    if isinstance(value, list) and all(_is_pair(item) for item in value):
        return [[name, redact_json(v)] for name, v in value if not is_secret_name(name)]
    return None
