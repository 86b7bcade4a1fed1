"""storage/extract.py: text from plain text, PDF and DOCX in a child process; its limits (pages,
decompressed bytes, text length, wall clock), each named in the failure's reason."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from storage.extract import DOCX_TYPE, ExtractionFailed, ExtractionLimits, extract_in_child
from tests.documents.text_samples import docx_bomb, docx_with_text, pdf_with_pages

PDF = "application/pdf"


def _file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "object"
    path.write_bytes(data)
    return path


async def test_plain_text_is_read_as_utf8_without_nul(tmp_path: Path) -> None:
    path = _file(tmp_path, "Statement of Work\x00 — CMMC Level 2\n".encode())
    result = await extract_in_child(path, "text/plain", ExtractionLimits())
    assert result.text == "Statement of Work — CMMC Level 2\n"
    assert result.page_count is None
    assert not path.with_name("object.txt").exists()  # the child's output file is removed


async def test_text_that_is_not_utf8_is_read_as_cp1252(tmp_path: Path) -> None:
    path = _file(tmp_path, "caf\xe9 clause".encode("cp1252"))
    result = await extract_in_child(path, "text/plain", ExtractionLimits())
    assert result.text == "café clause"


async def test_a_pdf_gives_the_text_of_its_pages_and_their_count(tmp_path: Path) -> None:
    data = pdf_with_pages(["Cover page", "The CMMC Level 2 clause (DFARS 252.204-7012) applies."])
    result = await extract_in_child(_file(tmp_path, data), PDF, ExtractionLimits())
    assert "CMMC Level 2 clause" in result.text and "Cover page" in result.text
    assert result.page_count == 2


async def test_a_docx_gives_its_paragraphs_and_tables(tmp_path: Path) -> None:
    data = docx_with_text("Offerors shall meet CMMC Level 2.", cell="Section L evaluation")
    result = await extract_in_child(_file(tmp_path, data), DOCX_TYPE, ExtractionLimits())
    assert result.text.splitlines() == ["Offerors shall meet CMMC Level 2.", "Section L evaluation"]


async def test_types_without_text_give_an_empty_text(tmp_path: Path) -> None:
    result = await extract_in_child(_file(tmp_path, b"\x89PNG\r\n\x1a\n"), "image/png", ExtractionLimits())
    assert result.text == "" and result.page_count is None


async def test_a_pdf_over_the_page_limit_fails_naming_the_limit(tmp_path: Path) -> None:
    data = pdf_with_pages([f"page {n}" for n in range(6)])
    with pytest.raises(ExtractionFailed) as failed:
        await extract_in_child(_file(tmp_path, data), PDF, ExtractionLimits(max_pages=5))
    assert failed.value.reason == "page limit: 6 pages, the limit is 5"


async def test_a_docx_zip_bomb_fails_before_anything_is_inflated(tmp_path: Path) -> None:
    bomb = docx_bomb(64 * 1024 * 1024)
    assert len(bomb) < 200 * 1024  # small on disk
    started = time.monotonic()
    with pytest.raises(ExtractionFailed) as failed:
        limits = ExtractionLimits(max_decompressed_bytes=8 * 1024 * 1024)
        await extract_in_child(_file(tmp_path, bomb), DOCX_TYPE, limits)
    assert failed.value.reason.startswith("decompressed size limit: the DOCX inflates to ")
    assert failed.value.reason.endswith("the limit is 8388608")
    assert time.monotonic() - started < 30


async def test_text_over_the_limit_fails(tmp_path: Path) -> None:
    with pytest.raises(ExtractionFailed) as failed:
        await extract_in_child(_file(tmp_path, b"word " * 1000), "text/plain", ExtractionLimits(max_text_chars=100))
    assert failed.value.reason == "text limit: more than 100 characters of text"


async def test_a_parser_past_the_wall_deadline_is_killed(tmp_path: Path) -> None:
    data = pdf_with_pages([f"page {n} " + "lorem ipsum " * 30 for n in range(1500)])
    started = time.monotonic()
    with pytest.raises(ExtractionFailed) as failed:
        await extract_in_child(_file(tmp_path, data), PDF, ExtractionLimits(wall_seconds=0.5))
    assert failed.value.reason == "time limit: the parser did not finish within 0.5 s"
    assert time.monotonic() - started < 10


async def test_a_parser_past_its_cpu_limit_is_stopped(tmp_path: Path) -> None:
    data = pdf_with_pages([f"page {n} " + "lorem ipsum " * 30 for n in range(3000)])
    limits = ExtractionLimits(cpu_seconds=1, wall_seconds=60, max_pages=10_000)  # the page limit must not come first
    with pytest.raises(ExtractionFailed) as failed:
        await extract_in_child(_file(tmp_path, data), PDF, limits)
    assert failed.value.reason == "CPU time limit: the parser was stopped after 1 s of CPU"


async def test_a_parser_over_its_memory_limit_fails(tmp_path: Path) -> None:
    text = ("x" * 1000 + " ") * 60_000  # 60 MB of text: twice that once read and decoded
    limits = ExtractionLimits(memory_bytes=160 * 1024 * 1024, max_text_chars=10**9)
    with pytest.raises(ExtractionFailed) as failed:
        await extract_in_child(_file(tmp_path, text.encode()), "text/plain", limits)
    assert failed.value.reason.startswith("memory limit")


async def test_a_damaged_pdf_fails_with_the_parsers_complaint(tmp_path: Path) -> None:
    with pytest.raises(ExtractionFailed) as failed:
        await extract_in_child(_file(tmp_path, b"%PDF-1.7\n garbage"), PDF, ExtractionLimits())
    assert failed.value.reason.startswith("unreadable PDF: ")


def test_the_limits_are_settings() -> None:
    from server.settings import Settings, SettingsError

    settings = Settings.from_env({"GWM_EXTRACT_MAX_PAGES": "5", "GWM_EXTRACT_WALL_SECONDS": "9"})
    assert (settings.extract_max_pages, settings.extract_wall_seconds) == (5, 9)
    assert Settings.from_env({}).extract_max_unpacked_bytes == ExtractionLimits().max_decompressed_bytes
    with pytest.raises(SettingsError, match="GWM_EXTRACT_MAX_PAGES must be at least 1"):
        Settings.from_env({"GWM_EXTRACT_MAX_PAGES": "0"})
    with pytest.raises(SettingsError, match="GWM_EXTRACT_MEMORY_BYTES must be at least"):
        Settings.from_env({"GWM_EXTRACT_MEMORY_BYTES": "1000"})
