"""Taking in a file: spool the bytes to a bounded temporary file while counting them and computing
SHA-256 and MD5, find the type from the bytes, check it, then store the object. Whatever refuses or
fails (too large, a type not allowed, a client gone, the backend down), the temporary file is gone
and no object is left.

    stored = await ingest.store(storage, key, chunks, limits)        # uploads, SAM.gov attachments
    stored = await ingest.verify(storage, key, limits, sha256=..., size=...)   # presigned uploads
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import tempfile
from collections.abc import AsyncIterable, AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio

from storage.base import DocumentStorage, StoredObject
from storage.content import ALLOWED, HEAD_BYTES, ContentType, detect
from storage.errors import Refused, StorageUnavailable

__all__ = ["Limits", "Spooled", "check", "put", "spool", "store", "verify"]


@dataclass(frozen=True, slots=True)
class Limits:
    """The most bytes a file may have, and where its temporary copy goes (None: the system's)."""

    max_bytes: int
    temp_dir: Path | None = None


@dataclass(frozen=True, slots=True)
class Spooled:
    """A file spooled to `path`: its size, digests (hex) and type."""

    path: Path
    size: int
    sha256: str
    md5: str
    content: ContentType


def _too_large(limit: int) -> Refused:
    return Refused("TOO_LARGE", f"The file is larger than the limit of {limit} bytes.")


@contextlib.asynccontextmanager
async def spool(chunks: AsyncIterable[bytes], limits: Limits) -> AsyncIterator[Spooled]:
    """Write `chunks` to a temporary file (removed on leaving, also on error or cancellation),
    refusing TOO_LARGE as soon as they pass the limit."""
    fd, name = tempfile.mkstemp(prefix="gwm-upload-", suffix=".part", dir=limits.temp_dir)
    os.close(fd)
    path = Path(name)
    try:
        sha256 = hashlib.sha256()
        md5 = hashlib.md5(usedforsecurity=False)
        size = 0
        head = bytearray()
        async with await anyio.open_file(path, "wb") as out:
            async for chunk in chunks:
                size += len(chunk)
                if size > limits.max_bytes:
                    raise _too_large(limits.max_bytes)
                sha256.update(chunk)
                md5.update(chunk)
                if len(head) < HEAD_BYTES:
                    head += chunk[: HEAD_BYTES - len(head)]
                await out.write(chunk)
        content = await anyio.to_thread.run_sync(detect, bytes(head), path)
        yield Spooled(path, size, sha256.hexdigest(), md5.hexdigest(), content)
    finally:
        with anyio.CancelScope(shield=True):
            await anyio.Path(path).unlink(missing_ok=True)


def check(spooled: Spooled, *, sha256: str | None = None, size: int | None = None) -> None:
    """Refuse an empty file, a type outside the allow-list, or digests other than announced."""
    if spooled.size == 0:
        raise Refused("EMPTY_FILE", "The file is empty.")
    if not spooled.content.allowed:
        allowed = ", ".join(sorted(set(ALLOWED.values())))
        raise Refused(
            "UNSUPPORTED_TYPE",
            f"The file's content is {spooled.content.mime}, which is not accepted (accepted: {allowed}); "
            "the type is read from the bytes, not the file name.",
        )
    if size is not None and spooled.size != size:
        raise Refused("INTEGRITY_MISMATCH", f"The file has {spooled.size} bytes, not the {size} announced.")
    if sha256 is not None and spooled.sha256 != sha256.lower():
        raise Refused("INTEGRITY_MISMATCH", "The file's SHA-256 is not the one announced.")


def _stored(key: str, spooled: Spooled) -> StoredObject:
    return StoredObject(
        key=key,
        size=spooled.size,
        sha256=spooled.sha256,
        md5=spooled.md5,
        mime_type=spooled.content.mime,
        extension=spooled.content.extension,
    )


async def put(storage: DocumentStorage, key: str, spooled: Spooled) -> StoredObject:
    """Store a spooled (and checked) file under `key`; on failure or cancellation no object stays."""
    try:
        await storage.put_file(key, spooled.path, content_type=spooled.content.mime)
    except BaseException:
        with anyio.CancelScope(shield=True), contextlib.suppress(Exception):
            await storage.delete(key)
        raise
    return _stored(key, spooled)


async def store(
    storage: DocumentStorage,
    key: str,
    chunks: AsyncIterable[bytes],
    limits: Limits,
    *,
    sha256: str | None = None,
    size: int | None = None,
) -> StoredObject:
    """Spool, check and store `chunks` under `key`. On any refusal or failure nothing stays.

    The caller deletes the object (`await storage.delete(key)`) if its own transaction then fails."""
    async with spool(chunks, limits) as spooled:
        check(spooled, sha256=sha256, size=size)
        return await put(storage, key, spooled)


async def verify(
    storage: DocumentStorage,
    key: str,
    limits: Limits,
    *,
    sha256: str | None,
    size: int | None,
    target: str | None = None,
) -> StoredObject:
    """Check an object a client stored itself (a presigned upload): size, type from its bytes and
    SHA-256. What is refused is deleted; UPLOAD_MISSING when there is no object. With `target`, the
    object checked (that very version of it) is then moved there, and the result names `target`."""
    found = await storage.stat(key)
    if found is None:
        raise Refused("UPLOAD_MISSING", "Nothing was uploaded for this upload (or it was already completed).")
    stored_size, tag = found
    try:
        if stored_size > limits.max_bytes:
            raise _too_large(limits.max_bytes)
        try:
            async with spool(storage.read(key, if_match=tag), limits) as spooled:
                check(spooled, sha256=sha256, size=size)
                if target is not None:
                    await storage.promote(key, target, if_match=tag)
                    return _stored(target, spooled)
                return _stored(key, spooled)
        except FileNotFoundError:
            raise Refused("UPLOAD_INVALID", "The uploaded object changed while it was being checked.") from None
    except Refused:
        with anyio.CancelScope(shield=True), contextlib.suppress(StorageUnavailable):
            await storage.delete(key)
        raise
