"""Document storage: where a document version's bytes live (the local filesystem or S3).

`open_storage(config, public_url)` gives the configured `DocumentStorage`; `storage.ingest` takes a
file in (spooled, hashed, typed, checked, stored); `storage.keys` builds keys from ids only;
`storage.documents` adds the documents row of a stored object (a new document or a new version).
"""

from __future__ import annotations

from storage.base import DocumentStorage, PresignedUpload, StoredObject
from storage.config import S3Config, StorageConfig
from storage.errors import Refused, StorageUnavailable

__all__ = [
    "DocumentStorage",
    "PresignedUpload",
    "Refused",
    "S3Config",
    "StorageConfig",
    "StorageUnavailable",
    "StoredObject",
    "open_storage",
]


def open_storage(config: StorageConfig, public_url: str) -> DocumentStorage:
    """The backend `config` names."""
    from storage.signing import Signer

    if config.backend == "s3":
        from storage.s3 import S3Storage

        if config.s3 is None:
            raise ValueError("the s3 backend needs its bucket settings")
        return S3Storage(config.s3)
    if config.backend == "local":
        from storage.local import LocalStorage

        return LocalStorage(config.root, signer=Signer(config.signing_key), public_url=public_url)
    raise ValueError(f"unknown storage backend {config.backend!r}")
