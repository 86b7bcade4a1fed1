"""Object keys, built from ids only (never from a file name): tenant/project/document/version."""

from __future__ import annotations

import re
import uuid

__all__ = ["check_key", "object_key", "parse_key", "staging_key"]

_NO_PROJECT = "none"
_KEY = re.compile(
    r"^(?P<tenant>[0-9a-f-]{36})/(?P<project>[0-9a-f-]{36}|none)/(?P<document>[0-9a-f-]{36})/(?P<version>[0-9a-f-]{36})$"
)


def object_key(
    tenant_id: uuid.UUID, project_id: uuid.UUID | None, document_id: uuid.UUID, version_id: uuid.UUID
) -> str:
    """The key of one stored version (without the backend's prefix).

    `document_id` is the first version's row id (the chain's root), `version_id` the row id of the
    version itself: two concurrent new versions of one document get two keys, never one object.
    """
    project = str(project_id) if project_id is not None else _NO_PROJECT
    return f"{tenant_id}/{project}/{document_id}/{version_id}"


_STAGING = re.compile(r"^(?P<tenant>[0-9a-f-]{36})/uploads/(?P<upload>[0-9a-f-]{36})$")


def staging_key(tenant_id: uuid.UUID, upload_id: uuid.UUID) -> str:
    """Where a presigned upload lands until the mutation completing it has checked it and moved it
    to its object key (so a client cannot replace the bytes once they are checked)."""
    return f"{tenant_id}/uploads/{upload_id}"


def check_key(key: str) -> None:
    """ValueError unless `key` is an object key or a staging key (no path tricks, no names)."""
    if _KEY.match(key) is None and _STAGING.match(key) is None:
        raise ValueError("not a document object key")


def parse_key(key: str) -> tuple[uuid.UUID, uuid.UUID | None, uuid.UUID, uuid.UUID]:
    """The ids of a key `object_key` built; ValueError for anything else."""
    match = _KEY.match(key)
    if match is None:
        raise ValueError("not a document object key")
    project = match["project"]
    return (
        uuid.UUID(match["tenant"]),
        None if project == _NO_PROJECT else uuid.UUID(project),
        uuid.UUID(match["document"]),
        uuid.UUID(match["version"]),
    )
