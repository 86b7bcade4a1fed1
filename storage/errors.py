"""Refusals of the storage layer. `Refused` is a DomainError, so a mutation shows it as a UserError
with its own code; `StorageUnavailable` is a backend failure (S3 down, disk full), never the caller's."""

from __future__ import annotations

from models.errors import DomainError

__all__ = ["Refused", "StorageUnavailable"]


class Refused(DomainError):
    """A file the store does not take: TOO_LARGE, UNSUPPORTED_TYPE, EMPTY_FILE, INTEGRITY_MISMATCH,
    UPLOAD_BUSY, UPLOAD_EXPIRED, UPLOAD_INVALID, UPLOAD_MISSING, UPLOAD_NOT_FOUND."""

    def __init__(self, code: str, message: str, *, field: str | None = "file") -> None:
        super().__init__(message, field=field)
        self.code = code


class StorageUnavailable(DomainError):
    """The backend failed (the object was not stored, or not read); the operation is undone. Shown
    as a UserError STORAGE_UNAVAILABLE: not the caller's fault, but worth a retry."""

    code = "STORAGE_UNAVAILABLE"

    def __init__(self, detail: str) -> None:
        super().__init__("The document store could not be reached; nothing was stored. Try again later.")
        self.detail = detail
