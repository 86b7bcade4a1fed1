"""Storage settings: which backend holds the bytes, and the limits of an upload.

Built by server/settings.py from the environment (GWM_STORAGE_*, GWM_UPLOAD_*); tests build one directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["S3Config", "StorageConfig", "derive_signing_key"]


@dataclass(frozen=True, slots=True)
class S3Config:
    """Where the S3 backend writes: bucket, region, key prefix, optional endpoint and KMS key."""

    bucket: str
    region: str = "us-east-1"
    # Every key starts with it (e.g. "gwm/"); empty: keys at the bucket's root.
    prefix: str = ""
    # An S3-compatible endpoint (tests: moto's server on 127.0.0.1); None: AWS's own.
    endpoint_url: str | None = None
    # Server-side encryption with this KMS key (SSE-KMS); None: the bucket's default encryption.
    kms_key_id: str | None = None
    access_key_id: str | None = field(default=None, repr=False)
    secret_access_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """The document store and the upload limits."""

    # "local" (files under `root`) or "s3" (`s3` must be set).
    backend: str = "local"
    root: Path = field(default_factory=lambda: Path(".gwm/documents"))
    s3: S3Config | None = None
    # The largest file a multipart upload or a presigned upload may carry.
    max_upload_bytes: int = 50 * 1024 * 1024
    # Multipart uploads read at once by one process: their temporary files take at most
    # upload_concurrency * max_upload_bytes of disk.
    upload_concurrency: int = 4
    # Temporary files (spooled uploads, objects being checked) go here; None: the system's.
    temp_dir: Path | None = None
    # How long a presigned upload may be used after it is issued.
    presign_seconds: int = 900
    # HMAC key of the local backend's signed upload URLs (and of the tokens completing an upload).
    signing_key: bytes = field(default=b"", repr=False)


def derive_signing_key(secret_keys: str) -> bytes:
    """The signing key of storage URLs and upload tickets: HMAC-SHA256 of a fixed label under the
    first GWM_SECRET_KEYS key ("kid:base64-32-bytes,..."), so no setting of its own is needed."""
    import base64
    import hashlib
    import hmac

    first = secret_keys.split(",", 1)[0].strip()
    _, _, encoded = first.partition(":")
    secret = base64.b64decode(encoded or first)
    return hmac.new(secret, b"gwm documents signing", hashlib.sha256).digest()
