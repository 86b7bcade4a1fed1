"""Small sample files built in the test (no fixtures on disk): a PDF, a DOCX, hostile look-alikes."""

from __future__ import annotations

import io
import zipfile


def pdf_bytes(text: str = "hello") -> bytes:
    """A one-page PDF saying `text` (pypdf writes it)."""
    from pypdf import PdfWriter

    writer = PdfWriter()
    writer.add_blank_page(width=200, height=200)
    writer.add_metadata({"/Title": text})
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def docx_bytes(text: str = "hello") -> bytes:
    """A DOCX with one paragraph (python-docx writes it)."""
    import docx

    document = docx.Document()
    document.add_paragraph(text)
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def exe_bytes() -> bytes:
    """The start of an ELF executable (what a renamed program looks like)."""
    return b"\x7fELF\x02\x01\x01\x00" + b"\x00" * 8 + b"\x02\x00\x3e\x00" + b"\x00" * 200


def html_bytes() -> bytes:
    return b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>\n"


def svg_bytes() -> bytes:
    return b'<svg xmlns="http://www.w3.org/2000/svg" onload="alert(1)"><circle r="4"/></svg>\n'


def zip_bytes() -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        archive.writestr("readme.txt", "not a document")
    return out.getvalue()
