"""The `DocumentStorage` protocol both backends follow, and what they return."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

__all__ = ["DocumentStorage", "PresignedUpload", "StoredObject"]


@dataclass(frozen=True, slots=True)
class StoredObject:
    """One object as stored: its key (with the backend's prefix), size, digests and detected type."""

    key: str
    size: int
    sha256: str
    md5: str
    mime_type: str
    extension: str | None


@dataclass(frozen=True, slots=True)
class PresignedUpload:
    """How a client sends the bytes itself: `method` to `url`, with the form `fields` (S3's POST
    policy: send them before the file, the file in the part named `file`) or the `headers` (the
    local backend's PUT, which needs GraphQL-Require-Preflight); usable until `expires_at`."""

    method: str
    url: str
    expires_at: datetime.datetime
    fields: dict[str, str] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)


@runtime_checkable
class DocumentStorage(Protocol):
    """Where document bytes live. Keys are full keys (`key_for`), as stored in documents.storage_key."""

    #: documents.storage_provider: "local" or "s3".
    provider: str
    #: documents.storage_bucket / storage_region / encryption_key_id (None on the local backend).
    bucket: str | None
    region: str | None
    kms_key_id: str | None

    def key_for(self, object_key: str) -> str:
        """The full key of an `object_key` (storage/keys.py), i.e. with the configured prefix."""
        ...

    async def put_file(self, key: str, path: Path, *, content_type: str) -> None:
        """Store the file at `path` under `key`, all or nothing (StorageUnavailable on failure,
        nothing left behind)."""
        ...

    def read(self, key: str, *, chunk_size: int = 64 * 1024, if_match: str | None = None) -> AsyncIterator[bytes]:
        """The object's bytes in chunks (StorageUnavailable if it cannot be read, FileNotFoundError
        if there is no such object, or none with the version tag `if_match`)."""
        ...

    async def stat(self, key: str) -> tuple[int, str] | None:
        """The object's size and version tag (S3's ETag), None when there is none."""
        ...

    async def promote(self, source: str, target: str, *, if_match: str) -> None:
        """Move the object `source` (still at version `if_match`, else FileNotFoundError) to `target`."""
        ...

    async def size(self, key: str) -> int | None:
        """The object's size, None when there is none."""
        ...

    async def delete(self, key: str) -> None:
        """Remove the object (no error if there is none)."""
        ...

    async def presign_upload(
        self, key: str, *, max_bytes: int, lifetime: datetime.timedelta
    ) -> PresignedUpload:
        """A way for the client to send at most `max_bytes` to `key` directly."""
        ...

    async def presign_download(
        self, key: str, *, lifetime: datetime.timedelta, filename: str, content_type: str
    ) -> str | None:
        """S3: a SigV4 GET URL (X-Amz-Expires = lifetime) served as an attachment. Local: None
        (the server serves the bytes itself behind an HMAC-signed URL)."""
        ...

    async def aclose(self) -> None:
        """Release clients and connections."""
        ...
