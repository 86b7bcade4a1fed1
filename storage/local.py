"""The local filesystem backend (the single-machine install's default): objects under a root
directory (`.gwm/documents`), one file per key, written to a temporary name and renamed."""

from __future__ import annotations

import datetime
import os
import shutil
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import anyio
import anyio.to_thread

from storage.base import PresignedUpload
from storage.errors import StorageUnavailable
from storage.keys import check_key
from storage.signing import Signer

__all__ = ["UPLOAD_PATH", "UPLOAD_PURPOSE", "LocalStorage"]

#: The route the local backend's presigned uploads go to (server/storage_routes.py): PUT <path><token>.
UPLOAD_PATH = "/storage/upload/"
#: Signer purpose of those tokens (claims: key, max).
UPLOAD_PURPOSE = "storage.upload"
_PREFLIGHT = {"GraphQL-Require-Preflight": "1"}


class LocalStorage:
    """Objects as files under `root`; presigned uploads are HMAC-signed URLs of this server."""

    provider = "local"
    bucket: str | None = None
    region: str | None = None
    kms_key_id: str | None = None

    def __init__(self, root: Path, *, signer: Signer, public_url: str) -> None:
        self.root = root
        self.signer = signer
        self.public_url = public_url.rstrip("/")

    def key_for(self, object_key: str) -> str:
        return object_key

    def path_of(self, key: str) -> Path:
        """The file of `key`; ValueError for anything but a key built from ids (no path tricks)."""
        check_key(key)
        return self.root / key

    async def put_file(self, key: str, path: Path, *, content_type: str) -> None:
        target = self.path_of(key)
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")

        def copy() -> None:
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                shutil.copyfile(path, partial)
                os.replace(partial, target)
            finally:
                partial.unlink(missing_ok=True)

        try:
            await anyio.to_thread.run_sync(copy)
        except OSError as exc:
            raise StorageUnavailable(f"local store: {type(exc).__name__}") from exc

    async def put_stream(self, key: str, chunks: AsyncIterator[bytes]) -> bool:
        """Write `chunks` to `key` through a temporary name, only if there is no object there yet
        (False, nothing written, when there is): a failure or cancellation leaves nothing."""
        target = self.path_of(key)
        partial = target.with_name(f".{target.name}.{uuid.uuid4().hex}.partial")
        await anyio.Path(target.parent).mkdir(parents=True, exist_ok=True)
        try:
            async with await anyio.open_file(partial, "wb") as out:
                async for chunk in chunks:
                    await out.write(chunk)
            try:
                os.link(partial, target)  # never replaces an object already there
            except FileExistsError:
                return False
            return True
        finally:
            with anyio.CancelScope(shield=True):
                await anyio.Path(partial).unlink(missing_ok=True)

    @staticmethod
    def _tag(stat: os.stat_result) -> str:
        return f"{stat.st_ino}-{stat.st_size}-{stat.st_mtime_ns}"

    async def stat(self, key: str) -> tuple[int, str] | None:
        try:
            found = os.stat(self.path_of(key))
        except FileNotFoundError:
            return None
        return found.st_size, self._tag(found)

    async def promote(self, source: str, target: str, *, if_match: str) -> None:
        src, dst = self.path_of(source), self.path_of(target)
        try:
            if self._tag(os.stat(src)) != if_match:
                raise FileNotFoundError(source)
            dst.parent.mkdir(parents=True, exist_ok=True)
            os.replace(src, dst)
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise StorageUnavailable(f"local store: {type(exc).__name__}") from exc

    async def read(
        self, key: str, *, chunk_size: int = 64 * 1024, if_match: str | None = None
    ) -> AsyncIterator[bytes]:
        path = self.path_of(key)
        if if_match is not None and (await self.stat(key) or (0, ""))[1] != if_match:
            raise FileNotFoundError(key)
        try:
            handle = await anyio.open_file(path, "rb")
        except FileNotFoundError:
            raise
        except OSError as exc:
            raise StorageUnavailable(f"local store: {type(exc).__name__}") from exc
        async with handle:
            while chunk := await handle.read(chunk_size):
                yield chunk

    async def size(self, key: str) -> int | None:
        found = await self.stat(key)
        return None if found is None else found[0]

    async def delete(self, key: str) -> None:
        await anyio.Path(self.path_of(key)).unlink(missing_ok=True)

    async def presign_upload(self, key: str, *, max_bytes: int, lifetime: datetime.timedelta) -> PresignedUpload:
        token, expires = self.signer.sign(UPLOAD_PURPOSE, {"key": key, "max": max_bytes}, lifetime)
        return PresignedUpload(
            method="PUT", url=f"{self.public_url}{UPLOAD_PATH}{token}", expires_at=expires, headers=dict(_PREFLIGHT)
        )

    async def presign_download(
        self, key: str, *, lifetime: datetime.timedelta, filename: str, content_type: str
    ) -> str | None:
        return None

    async def aclose(self) -> None:
        return None
