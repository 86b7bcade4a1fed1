"""What a file is, from its bytes (never its name): a registry match (`filetype`), DOCX/XLSX/PPTX
recognised inside their ZIP, and plain text by its own rule; checked against an allow-list that has
no HTML, SVG, XML, script or executable type.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import filetype  # type: ignore[import-untyped]

__all__ = ["ALLOWED", "HEAD_BYTES", "ContentType", "detect", "is_plain_text"]

#: How many leading bytes the registry and the plain text rule look at.
HEAD_BYTES = 64 * 1024

_DOCX = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
_XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
_PPTX = "application/vnd.openxmlformats-officedocument.presentationml.presentation"

#: Accepted types and the extension each is stored with. Nothing a browser would run (HTML, SVG,
#: XML, JavaScript) and no executable or bare archive.
ALLOWED: dict[str, str] = {
    "application/pdf": "pdf",
    _DOCX: "docx",
    _XLSX: "xlsx",
    _PPTX: "pptx",
    "image/png": "png",
    "image/jpeg": "jpg",
    "image/gif": "gif",
    "text/plain": "txt",
}

# The main part of each OOXML package, as [Content_Types].xml names it.
_OOXML_MAIN = {
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml": _DOCX,
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml": _XLSX,
    "application/vnd.openxmlformats-officedocument.presentationml.presentation.main+xml": _PPTX,
}
_ZIP_TYPES = {"application/zip", _DOCX, _XLSX, _PPTX}
# Markup a browser would render or run if it ever sniffed the text (looked for case-insensitively).
_MARKUP = (b"<!doctype", b"<html", b"<head", b"<body", b"<script", b"<svg", b"<iframe", b"<?xml", b"<object")
_TEXT_CONTROLS = frozenset(b"\t\n\r\f")


@dataclass(frozen=True, slots=True)
class ContentType:
    """The type found: its MIME type, the extension it is stored with, and whether it is allowed."""

    mime: str
    extension: str | None
    allowed: bool


def is_plain_text(head: bytes) -> bool:
    """UTF-8 (a BOM allowed, a character cut at the end of `head` allowed), no NUL or other control
    characters than tab, line feed, carriage return and form feed, and no HTML/SVG/XML markup."""
    if head.startswith(b"\xef\xbb\xbf"):
        head = head[3:]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as exc:
        # Only a multi-byte character cut off by the end of the head is forgiven.
        if exc.start < len(head) - 3 or exc.reason != "unexpected end of data":
            return False
        text = head[: exc.start].decode("utf-8")
    if any((ord(ch) < 32 and ord(ch) not in _TEXT_CONTROLS) or ord(ch) == 127 for ch in text):
        return False
    lowered = head.lower()
    return not any(marker in lowered for marker in _MARKUP)


def _ooxml(path: Path) -> str | None:
    """The OOXML type of a ZIP file from its [Content_Types].xml, or None (not one, or unreadable)."""
    try:
        with zipfile.ZipFile(path) as archive:
            info = archive.getinfo("[Content_Types].xml")
            if info.file_size > 1024 * 1024:
                return None
            listing = archive.read(info)
            names = set(archive.namelist())
    except (zipfile.BadZipFile, KeyError, OSError, ValueError, NotImplementedError, EOFError):
        return None
    for marker, mime in _OOXML_MAIN.items():
        if marker.encode() in listing:
            main = {_DOCX: "word/", _XLSX: "xl/", _PPTX: "ppt/"}[mime]
            if any(name.startswith(main) for name in names):
                return mime
    return None


def detect(head: bytes, path: Path | None = None) -> ContentType:
    """The type of a file whose first bytes are `head` (and whose whole content is at `path`, which
    the ZIP-based types need: without it a ZIP is just a ZIP, refused)."""
    if not head:
        return ContentType("application/x-empty", None, False)
    kind = filetype.guess(head)
    if kind is not None:
        mime = str(kind.mime)
        if mime in _ZIP_TYPES:
            found = _ooxml(path) if path is not None else None
            if found is None:
                return ContentType("application/zip", "zip", False)
            return ContentType(found, ALLOWED[found], True)
        return ContentType(mime, str(kind.extension), mime in ALLOWED)
    if is_plain_text(head):
        return ContentType("text/plain", "txt", True)
    if any(marker in head.lower() for marker in _MARKUP):
        return ContentType("text/html", None, False)
    return ContentType("application/octet-stream", None, False)
