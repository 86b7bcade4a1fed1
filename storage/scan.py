"""The malware-scan hook (SI-3): a pluggable `Scanner` that reads an object's bytes and says whether
it is clean.

A new object is `quarantined` (documents.scan_status, migration 0015) until a scan finds it clean;
the scan job (server/document_jobs.py, run by `gwm jobs run` and the worker loop) feeds each
quarantined object through the configured scanner and records the verdict. A scanner that cannot
scan (the daemon is down, it answers with an error) raises `ScanUnavailable`: the object stays
quarantined and the next run tries again.

Scanners:
- `ClamdScanner`: ClamAV's daemon over TCP, the INSTREAM command (the bytes in length-prefixed
  chunks, never a path on the daemon's disk), `host:port` from GWM_SCAN_CLAMD.
- `NoScanner`: no scanner configured; every object is released as clean with the reason "not
  scanned: no scanner configured", which its audit row records (the single-machine default; a
  deployment that must meet SI-3 configures clamd).
"""

from __future__ import annotations

import asyncio
import struct
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

__all__ = ["ClamdScanner", "NoScanner", "ScanUnavailable", "ScanVerdict", "Scanner", "scanner_from_setting"]


class ScanUnavailable(Exception):
    """The scanner could not give a verdict (unreachable, timed out, answered with an error)."""


@dataclass(frozen=True, slots=True)
class ScanVerdict:
    """What a scan found: `clean`, and the finding (a signature name) or a note."""

    clean: bool
    reason: str | None = None


@runtime_checkable
class Scanner(Protocol):
    """Scans one object's bytes, given as an async stream of chunks."""

    #: Recorded with each verdict ("clamd", "none", ...).
    name: str

    async def scan(self, chunks: AsyncIterator[bytes]) -> ScanVerdict:
        """The verdict on the whole stream; ScanUnavailable when there is none."""
        ...


class NoScanner:
    """Releases every object unscanned (no scanner configured); the reason says so."""

    name = "none"

    async def scan(self, chunks: AsyncIterator[bytes]) -> ScanVerdict:
        return ScanVerdict(clean=True, reason="not scanned: no scanner configured")


class ClamdScanner:
    """ClamAV's clamd over TCP with INSTREAM (clamd's StreamMaxLength bounds what it accepts)."""

    name = "clamd"

    def __init__(self, host: str, port: int, *, timeout: float = 60.0, chunk_size: int = 64 * 1024) -> None:
        self.host = host
        self.port = port
        self.timeout = timeout
        self.chunk_size = chunk_size

    async def scan(self, chunks: AsyncIterator[bytes]) -> ScanVerdict:
        try:
            return await asyncio.wait_for(self._scan(chunks), self.timeout)
        except TimeoutError:
            raise ScanUnavailable(f"clamd at {self.host}:{self.port} did not answer in {self.timeout:g} s") from None
        except OSError as exc:
            raise ScanUnavailable(f"clamd at {self.host}:{self.port}: {exc}") from None

    async def _scan(self, chunks: AsyncIterator[bytes]) -> ScanVerdict:
        reader, writer = await asyncio.open_connection(self.host, self.port)
        try:
            writer.write(b"zINSTREAM\0")
            async for chunk in chunks:
                for start in range(0, len(chunk), self.chunk_size):
                    part = chunk[start : start + self.chunk_size]
                    writer.write(struct.pack("!L", len(part)) + part)
                    await writer.drain()
            writer.write(struct.pack("!L", 0))
            await writer.drain()
            answer = (await reader.read(4096)).rstrip(b"\0\n").decode("utf-8", "replace")
        finally:
            writer.close()
            try:
                await writer.wait_closed()
            except OSError:
                pass
        return _verdict(answer)


def _verdict(answer: str) -> ScanVerdict:
    """clamd's reply: `stream: OK`, `stream: <signature> FOUND`, or `... ERROR`."""
    _, _, result = answer.partition(": ")
    if result == "OK":
        return ScanVerdict(clean=True, reason="clamd: no threat found")
    if result.endswith(" FOUND"):
        return ScanVerdict(clean=False, reason=f"clamd: {result.removesuffix(' FOUND')}")
    raise ScanUnavailable(f"clamd answered {answer[:200]!r}")


def scanner_from_setting(value: str | None) -> Scanner:
    """GWM_SCAN_CLAMD: `host:port` of a clamd, or empty for NoScanner."""
    if not value:
        return NoScanner()
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"a clamd address is host:port, got {value!r}")
    return ClamdScanner(host.strip("[]"), int(port))
