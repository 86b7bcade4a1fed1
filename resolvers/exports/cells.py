"""Cells of an export as CSV and XLSX: formula injection escaped, rows written batch by batch.

A spreadsheet evaluates a cell whose text begins with `=`, `+`, `-` or `@` (and some strip a leading
tab or carriage return first), so a project named `=HYPERLINK("https://evil.example", "open")`
would become a live link, or worse, in the reviewer's spreadsheet (CWE-1236). Every text value
beginning with one of those characters is escaped:

- CSV: prefixed with a single quote (`'=HYPERLINK(...)`), the OWASP recommendation; the value is
  then text to every spreadsheet, and a reader can strip the quote.
- XLSX: written as a string cell (never a formula) with the cell's `quotePrefix` style, which is
  how a spreadsheet itself records a value typed with a leading quote: the cell shows and keeps the
  exact text and is never evaluated.

Only text values are escaped: numbers, instants and ids are formatted by the server and cannot
hold a formula (a negative number stays a number).
"""

from __future__ import annotations

import csv
import datetime
import decimal
import io
import json
import tempfile
import uuid
from collections.abc import Iterator, Sequence
from typing import IO, Any

from openpyxl import Workbook
from openpyxl.cell import WriteOnlyCell
from openpyxl.cell.cell import ILLEGAL_CHARACTERS_RE
from openpyxl.worksheet._write_only import WriteOnlyWorksheet

__all__ = ["FORMULA_PREFIXES", "CsvEncoder", "XlsxBuilder", "escape_text", "needs_escape"]

#: The leading characters that make a spreadsheet evaluate a cell (docs/api.md "Exports").
FORMULA_PREFIXES = ("=", "+", "-", "@", "\t", "\r")


def needs_escape(text: str) -> bool:
    return text.startswith(FORMULA_PREFIXES)


def escape_text(text: str) -> str:
    """`text` as a CSV cell: a single quote in front when a spreadsheet would evaluate it."""
    return "'" + text if needs_escape(text) else text


def _plain(value: Any) -> Any:
    """A cell's value as text or a number: instants in ISO 8601 UTC, JSON as compact JSON text."""
    if value is None or isinstance(value, bool | int | float | decimal.Decimal | str):
        return value
    if isinstance(value, datetime.datetime):
        return value.astimezone(datetime.UTC).isoformat().replace("+00:00", "Z")
    if isinstance(value, datetime.date | uuid.UUID):
        return str(value) if isinstance(value, uuid.UUID) else value.isoformat()
    if isinstance(value, dict | list):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, separators=(",", ":"))
    return str(value)


class CsvEncoder:
    """Rows to UTF-8 CSV bytes (RFC 4180 quoting, CRLF line ends), one chunk per batch.

    The first chunk starts with a byte-order mark, so spreadsheets read the file as UTF-8.
    """

    def __init__(self) -> None:
        self._started = False

    def encode(self, rows: Sequence[Sequence[Any]]) -> bytes:
        buffer = io.StringIO()
        writer = csv.writer(buffer, lineterminator="\r\n")
        for row in rows:
            writer.writerow([self._cell(value) for value in row])
        text = buffer.getvalue()
        if not self._started:
            self._started = True
            text = "\ufeff" + text
        return text.encode("utf-8")

    @staticmethod
    def _cell(value: Any) -> Any:
        plain = _plain(value)
        if isinstance(plain, bool):
            return "true" if plain else "false"
        if isinstance(plain, str):
            return escape_text(plain)
        return "" if plain is None else plain


class XlsxBuilder:
    """One worksheet written with openpyxl's write_only mode: rows go to a temporary file as they
    come (memory holds one batch), and `save` assembles the workbook into a spooled temporary file
    that is then streamed in chunks."""

    def __init__(self, title: str) -> None:
        self._workbook = Workbook(write_only=True)
        self._sheet: WriteOnlyWorksheet = self._workbook.create_sheet(title)

    def append(self, rows: Sequence[Sequence[Any]]) -> None:
        for row in rows:
            self._sheet.append([self._cell(value) for value in row])

    def _cell(self, value: Any) -> Any:
        plain = _plain(value)
        if isinstance(plain, decimal.Decimal):
            return float(plain)  # scores and amounts: a number cell (two decimals survive a double)
        if not isinstance(plain, str):
            return plain
        # XML cannot carry most control characters (openpyxl refuses them): they are dropped.
        text = ILLEGAL_CHARACTERS_RE.sub("", plain)
        cell = WriteOnlyCell(self._sheet, value=text)
        cell.data_type = "s"  # text, even when it looks like a formula or a number
        if needs_escape(text):
            cell.quotePrefix = True
        return cell

    def save(self) -> IO[bytes]:
        """The finished workbook, positioned at its start."""
        out: IO[bytes] = tempfile.SpooledTemporaryFile(max_size=8 * 1024 * 1024)
        self._workbook.save(out)
        out.seek(0)
        return out


def read_chunks(file: IO[bytes], size: int = 64 * 1024) -> Iterator[bytes]:
    """`file` in chunks of `size` bytes, then closed."""
    try:
        while chunk := file.read(size):
            yield chunk
    finally:
        file.close()
