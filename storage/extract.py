"""Text extraction from a stored file, in a child process with memory, CPU and wall-clock limits.

    limits = ExtractionLimits(max_pages=2000, max_decompressed_bytes=200 * 2**20)
    result = await extract_in_child(path, "application/pdf", limits)   # -> Extracted(text, page_count)
    # ExtractionFailed(reason) names the limit or the parser's complaint

A hostile file must not take the worker down, so parsing never runs in the worker's process:
`extract_in_child` starts `python -m storage.extract` on the file, which first sets its own
RLIMIT_AS (address space) and RLIMIT_CPU, then parses and writes the text to a file beside the input.
The parent waits at most `wall_seconds` and kills it after that (a parser blocked on something other
than CPU). Inside the child, limits are checked before the costly step: a PDF's page count before any
page is read (`max_pages`), a DOCX's declared uncompressed size of all ZIP members before anything is
inflated (`max_decompressed_bytes`; zipfile stops at the declared size and fails the CRC of a member
that lies about it), pypdf's own inflate limits set to the same bound, and the text's length while it
grows (`max_text_chars`). Reasons name the limit (`"page limit: 12 pages, the limit is 5"`).

Types: text/plain (UTF-8, else cp1252 with replacement), application/pdf (pypdf), DOCX (python-docx:
the paragraphs of the body, tables included, in order). Other allowed types (images, XLSX, PPTX)
have no text: an empty result. NUL characters (which PostgreSQL text cannot hold) are dropped.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import signal
import sys
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

__all__ = [
    "DOCX_TYPE",
    "KILLED_PREFIX",
    "Extracted",
    "ExtractionFailed",
    "ExtractionLimits",
    "extract_file",
    "extract_in_child",
]

DOCX_TYPE = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
#: The start of the reason of a child killed from outside (not by one of its limits).
KILLED_PREFIX = "the parser was killed by signal"
_PACKAGE_ROOT = Path(__file__).resolve().parent.parent
# How much of the child's stdout (its JSON verdict) and stderr the parent reads.
_MAX_REPORT = 64 * 1024


@dataclass(frozen=True, slots=True)
class ExtractionLimits:
    """What one extraction may use. The defaults suit a 500-page RFP; tests set them low."""

    max_pages: int = 2_000
    # All ZIP members of a DOCX together, uncompressed; also pypdf's bound per inflated stream.
    max_decompressed_bytes: int = 256 * 1024 * 1024
    max_text_chars: int = 20_000_000
    memory_bytes: int = 1024 * 1024 * 1024
    cpu_seconds: int = 60
    wall_seconds: float = 120.0

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, raw: str) -> ExtractionLimits:
        return cls(**json.loads(raw))


@dataclass(frozen=True, slots=True)
class Extracted:
    """The text of a file and its page count (PDF only)."""

    text: str
    page_count: int | None


class ExtractionFailed(Exception):
    """The file's text could not be extracted; `reason` is stored on the document (names the limit)."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


class _TextTooLong(ExtractionFailed):
    def __init__(self, limit: int) -> None:
        super().__init__(f"text limit: more than {limit} characters of text")


class _Text:
    """The text as it grows, failing as soon as it passes the limit."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.parts: list[str] = []
        self.size = 0

    def add(self, piece: str) -> None:
        piece = piece.replace("\x00", "")
        self.size += len(piece)
        if self.size > self.limit:
            raise _TextTooLong(self.limit)
        self.parts.append(piece)

    def value(self) -> str:
        return "".join(self.parts)


# -- the parsers (run in the child) ------------------------------------------------------------------


def _plain(path: Path, limits: ExtractionLimits) -> Extracted:
    # A UTF-8 character is at most 4 bytes: more bytes than that cannot fit the text limit.
    if path.stat().st_size > 4 * limits.max_text_chars:
        raise _TextTooLong(limits.max_text_chars)
    raw = path.read_bytes()
    try:
        decoded = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        decoded = raw.decode("cp1252", errors="replace")
    text = _Text(limits.max_text_chars)
    text.add(decoded)
    return Extracted(text.value(), None)


def _pdf(path: Path, limits: ExtractionLimits) -> Extracted:
    import pypdf

    bound = limits.max_decompressed_bytes
    # pypdf's own bounds on what one stream may declare or inflate to.
    limited = pypdf.apply_configuration(
        maximum_declared_stream_length=bound,
        array_based_stream_maximum_output_length=bound,
        lzw_maximum_output_length=bound,
        run_length_maximum_output_length=bound,
        zlib_maximum_output_length=bound,
        brotli_maximum_output_length=bound,
        jbig2_maximum_output_length=bound,
    )
    with limited:
        return _pdf_text(pypdf.PdfReader, path, limits)


def _pdf_text(reader_type: Any, path: Path, limits: ExtractionLimits) -> Extracted:
    try:
        reader = reader_type(path)
        if reader.is_encrypted:
            raise ExtractionFailed("the PDF is encrypted")
        pages = len(reader.pages)
        if pages > limits.max_pages:
            raise ExtractionFailed(f"page limit: {pages} pages, the limit is {limits.max_pages}")
        text = _Text(limits.max_text_chars)
        for number, page in enumerate(reader.pages):
            if number:
                text.add("\n\n")
            text.add(page.extract_text() or "")
    except ExtractionFailed:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # pypdf raises many types for a damaged file
        raise ExtractionFailed(f"unreadable PDF: {type(exc).__name__}: {exc}"[:500]) from None
    return Extracted(text.value(), pages)


def _docx(path: Path, limits: ExtractionLimits) -> Extracted:
    try:
        with zipfile.ZipFile(path) as archive:
            declared = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, OSError) as exc:
        raise ExtractionFailed(f"unreadable DOCX: {exc}"[:500]) from None
    if declared > limits.max_decompressed_bytes:
        raise ExtractionFailed(
            f"decompressed size limit: the DOCX inflates to {declared} bytes, the limit is "
            f"{limits.max_decompressed_bytes}"
        )
    import docx
    from docx.oxml.ns import qn

    try:
        document: Any = docx.Document(str(path))
        text = _Text(limits.max_text_chars)
        paragraph_tag, text_tag, tab_tag, break_tag = qn("w:p"), qn("w:t"), qn("w:tab"), qn("w:br")
        first = True
        for paragraph in document.element.body.iter(paragraph_tag):
            if not first:
                text.add("\n")
            first = False
            for node in paragraph.iter(text_tag, tab_tag, break_tag):
                if node.tag == text_tag:
                    text.add(node.text or "")
                else:
                    text.add("\t" if node.tag == tab_tag else "\n")
    except ExtractionFailed:
        raise
    except MemoryError:
        raise
    except Exception as exc:  # python-docx / lxml on a damaged package
        raise ExtractionFailed(f"unreadable DOCX: {type(exc).__name__}: {exc}"[:500]) from None
    return Extracted(text.value(), None)


def extract_file(path: Path, mime_type: str, limits: ExtractionLimits) -> Extracted:
    """The text of `path` in this process (the child's work; call `extract_in_child` instead)."""
    if mime_type == "text/plain":
        return _plain(path, limits)
    if mime_type == "application/pdf":
        return _pdf(path, limits)
    if mime_type == DOCX_TYPE:
        return _docx(path, limits)
    return Extracted("", None)


# -- the parent ----------------------------------------------------------------------------------------


def _signal_reason(returncode: int, limits: ExtractionLimits) -> str:
    number = -returncode
    if number == signal.SIGXCPU:  # RLIMIT_CPU's soft limit
        return f"CPU time limit: the parser was stopped after {limits.cpu_seconds} s of CPU"
    if number == signal.SIGSEGV:
        return "the parser crashed (SIGSEGV)"
    # SIGKILL and the like come from outside (the OOM killer, an operator): worth another try.
    return f"{KILLED_PREFIX} {signal.Signals(number).name}"


async def extract_in_child(path: Path, mime_type: str, limits: ExtractionLimits) -> Extracted:
    """The text of the file at `path`, extracted by a child process under `limits`.

    Raises ExtractionFailed with a reason naming the limit, or the parser's complaint.
    """
    output = path.with_name(path.name + ".txt")
    process = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "storage.extract", str(path), str(output), mime_type, limits.to_json(),
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=str(_PACKAGE_ROOT),
        start_new_session=True,
    )
    try:
        try:
            stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=limits.wall_seconds)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            await process.wait()
            raise ExtractionFailed(
                f"time limit: the parser did not finish within {limits.wall_seconds:g} s"
            ) from None
        except BaseException:  # cancelled (the worker stops, or lost its lease): no orphan child
            with contextlib.suppress(ProcessLookupError):
                process.kill()
            with contextlib.suppress(BaseException):
                await process.wait()
            raise
        returncode = process.returncode
        assert returncode is not None
        if returncode < 0:
            raise ExtractionFailed(_signal_reason(returncode, limits))
        try:
            verdict = json.loads(stdout[:_MAX_REPORT].decode("utf-8", errors="replace"))
        except json.JSONDecodeError:
            tail = stderr[-500:].decode("utf-8", errors="replace").strip()
            raise ExtractionFailed(f"the parser exited with status {returncode}: {tail}"[:500]) from None
        if not verdict.get("ok"):
            raise ExtractionFailed(str(verdict.get("reason") or "extraction failed")[:500])
        text = output.read_text(encoding="utf-8")
        page_count = verdict.get("page_count")
        return Extracted(text, page_count if isinstance(page_count, int) else None)
    finally:
        with contextlib.suppress(FileNotFoundError):
            output.unlink()


# -- the child -----------------------------------------------------------------------------------------


def _set_limits(limits: ExtractionLimits) -> None:
    import resource

    resource.setrlimit(resource.RLIMIT_AS, (limits.memory_bytes, limits.memory_bytes))
    # The soft limit raises SIGXCPU; the hard one, a second later, SIGKILL.
    resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))


def _child(argv: list[str]) -> int:
    source, output, mime_type, raw_limits = argv
    limits = ExtractionLimits.from_json(raw_limits)
    _set_limits(limits)
    try:
        result = extract_file(Path(source), mime_type, limits)
        Path(output).write_text(result.text, encoding="utf-8", errors="replace")
        verdict: dict[str, Any] = {"ok": True, "page_count": result.page_count}
    except ExtractionFailed as exc:
        verdict = {"ok": False, "reason": exc.reason}
    except MemoryError:
        verdict = {"ok": False, "reason": f"memory limit: more than {limits.memory_bytes} bytes of address space"}
    except RecursionError:
        verdict = {"ok": False, "reason": "nesting limit: the file nests too deeply to parse"}
    sys.stdout.write(json.dumps(verdict))
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    os.umask(0o077)
    sys.exit(_child(sys.argv[1:]))
