"""The S3 backend (aioboto3): bucket, region, key prefix, Signature Version 4 on every request and
presigned URL, and SSE-KMS with the configured key id."""

from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from email.utils import encode_rfc2231
from pathlib import Path
from typing import Any

import aioboto3  # type: ignore[import-untyped]
from boto3.s3.transfer import TransferConfig  # type: ignore[import-untyped]
from botocore.config import Config  # type: ignore[import-untyped]
from botocore.exceptions import BotoCoreError, ClientError  # type: ignore[import-untyped]

from storage.base import PresignedUpload
from storage.config import S3Config
from storage.errors import StorageUnavailable
from storage.keys import check_key

__all__ = ["S3Storage", "content_disposition"]

_NOT_FOUND = {"404", "NoSuchKey", "NotFound"}


def content_disposition(filename: str) -> str:
    """RFC 6266 attachment with an ASCII fallback name and the UTF-8 `filename*`."""
    fallback = "".join(ch if 32 <= ord(ch) < 127 and ch not in '"\\' else "_" for ch in filename) or "download"
    return f"attachment; filename=\"{fallback}\"; filename*={encode_rfc2231(filename, 'utf-8')}"


class S3Storage:
    """Objects in one S3 bucket under a prefix."""

    provider = "s3"

    def __init__(self, config: S3Config) -> None:
        self.config = config
        self.bucket: str | None = config.bucket
        self.region: str | None = config.region
        self.kms_key_id: str | None = config.kms_key_id
        self._session = aioboto3.Session(
            aws_access_key_id=config.access_key_id,
            aws_secret_access_key=config.secret_access_key,
            region_name=config.region,
        )
        self._client_config = Config(
            signature_version="s3v4",
            s3={"addressing_style": "path" if config.endpoint_url else "auto"},
            retries={"max_attempts": 2, "mode": "standard"},
            connect_timeout=5,
            read_timeout=30,
        )

    def _client(self) -> Any:
        return self._session.client(
            "s3", endpoint_url=self.config.endpoint_url, region_name=self.config.region, config=self._client_config
        )

    def key_for(self, object_key: str) -> str:
        return f"{self.config.prefix}{object_key}"

    def _check(self, key: str) -> None:
        if not key.startswith(self.config.prefix):
            raise ValueError("not a key of this store")
        check_key(key[len(self.config.prefix) :])

    def _encryption(self) -> dict[str, str]:
        if self.config.kms_key_id is None:
            return {}
        return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.config.kms_key_id}

    async def put_file(self, key: str, path: Path, *, content_type: str) -> None:
        self._check(key)
        try:
            async with self._client() as s3:
                # A multipart upload that fails is aborted by upload_file: no part is left behind.
                await s3.upload_file(
                    str(path), self.config.bucket, key,
                    ExtraArgs={"ContentType": content_type, **self._encryption()},
                    Config=TransferConfig(multipart_threshold=16 * 1024 * 1024),
                )
        except (BotoCoreError, ClientError, OSError) as exc:
            raise StorageUnavailable(f"S3: {type(exc).__name__}") from exc

    async def read(
        self, key: str, *, chunk_size: int = 64 * 1024, if_match: str | None = None
    ) -> AsyncIterator[bytes]:
        self._check(key)
        condition = {} if if_match is None else {"IfMatch": if_match}
        try:
            async with self._client() as s3:
                try:
                    response = await s3.get_object(Bucket=self.config.bucket, Key=key, **condition)
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") in _NOT_FOUND | {"PreconditionFailed", "412"}:
                        raise FileNotFoundError(key) from None
                    raise
                body = response["Body"]
                try:
                    while chunk := await body.read(chunk_size):
                        yield chunk
                finally:
                    body.close()
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable(f"S3: {type(exc).__name__}") from exc

    async def size(self, key: str) -> int | None:
        found = await self.stat(key)
        return None if found is None else found[0]

    async def promote(self, source: str, target: str, *, if_match: str) -> None:
        self._check(source)
        self._check(target)
        try:
            async with self._client() as s3:
                try:
                    await s3.copy_object(
                        Bucket=self.config.bucket,
                        Key=target,
                        CopySource={"Bucket": self.config.bucket, "Key": source},
                        CopySourceIfMatch=if_match,
                        **self._encryption(),
                    )
                except ClientError as exc:
                    if exc.response.get("Error", {}).get("Code") in _NOT_FOUND | {"PreconditionFailed", "412"}:
                        raise FileNotFoundError(source) from None
                    raise
                await s3.delete_object(Bucket=self.config.bucket, Key=source)
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable(f"S3: {type(exc).__name__}") from exc

    async def stat(self, key: str) -> tuple[int, str] | None:
        self._check(key)
        try:
            async with self._client() as s3:
                head = await s3.head_object(Bucket=self.config.bucket, Key=key)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in _NOT_FOUND:
                return None
            raise StorageUnavailable(f"S3: {type(exc).__name__}") from exc
        except BotoCoreError as exc:
            raise StorageUnavailable(f"S3: {type(exc).__name__}") from exc
        return int(head["ContentLength"]), str(head["ETag"])

    async def delete(self, key: str) -> None:
        self._check(key)
        try:
            async with self._client() as s3:
                await s3.delete_object(Bucket=self.config.bucket, Key=key)
        except (BotoCoreError, ClientError) as exc:
            raise StorageUnavailable(f"S3: {type(exc).__name__}") from exc

    async def presign_upload(self, key: str, *, max_bytes: int, lifetime: datetime.timedelta) -> PresignedUpload:
        self._check(key)
        fields: dict[str, str] = {}
        conditions: list[Any] = [["content-length-range", 1, max_bytes]]
        if self.config.kms_key_id is not None:
            fields = {
                "x-amz-server-side-encryption": "aws:kms",
                "x-amz-server-side-encryption-aws-kms-key-id": self.config.kms_key_id,
            }
            conditions += [{name: value} for name, value in fields.items()]
        seconds = int(lifetime.total_seconds())
        expires = datetime.datetime.now(datetime.UTC) + lifetime
        async with self._client() as s3:
            post = await s3.generate_presigned_post(
                Bucket=self.config.bucket, Key=key, Fields=fields, Conditions=conditions, ExpiresIn=seconds
            )
        return PresignedUpload(method="POST", url=str(post["url"]), expires_at=expires, fields=dict(post["fields"]))

    async def presign_download(
        self, key: str, *, lifetime: datetime.timedelta, filename: str, content_type: str
    ) -> str | None:
        self._check(key)
        async with self._client() as s3:
            url = await s3.generate_presigned_url(
                "get_object",
                Params={
                    "Bucket": self.config.bucket,
                    "Key": key,
                    "ResponseContentDisposition": content_disposition(filename),
                    "ResponseContentType": content_type,
                },
                ExpiresIn=int(lifetime.total_seconds()),
            )
        return str(url)

    async def aclose(self) -> None:
        return None
