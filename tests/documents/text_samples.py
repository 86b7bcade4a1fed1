"""Sample files with text for the extraction tests, built in the test: a PDF with text on its pages,
a DOCX with a paragraph and a table, and a DOCX zip bomb (small on disk, large once inflated)."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Sequence

__all__ = ["docx_bomb", "docx_with_text", "pdf_with_pages"]


def pdf_with_pages(pages: Sequence[str]) -> bytes:
    """A PDF with one line of Helvetica text per page (pypdf writes it)."""
    from pypdf import PdfWriter
    from pypdf.generic import DecodedStreamObject, DictionaryObject, NameObject

    writer = PdfWriter()
    font = writer._add_object(
        DictionaryObject(
            {
                NameObject("/Type"): NameObject("/Font"),
                NameObject("/Subtype"): NameObject("/Type1"),
                NameObject("/BaseFont"): NameObject("/Helvetica"),
            }
        )
    )
    for line in pages:
        page = writer.add_blank_page(612, 792)
        stream = DecodedStreamObject()
        escaped = line.replace("\\", "\\\\").replace("(", "\\(").replace(")", "\\)")
        stream.set_data(f"BT /F1 12 Tf 72 720 Td ({escaped}) Tj ET".encode("latin-1"))
        page[NameObject("/Contents")] = writer._add_object(stream)
        page[NameObject("/Resources")] = DictionaryObject(
            {NameObject("/Font"): DictionaryObject({NameObject("/F1"): font})}
        )
    out = io.BytesIO()
    writer.write(out)
    return out.getvalue()


def docx_with_text(paragraph: str, cell: str = "table cell") -> bytes:
    """A DOCX with one paragraph and a one-cell table (python-docx writes it)."""
    import docx

    document = docx.Document()
    document.add_paragraph(paragraph)
    table = document.add_table(rows=1, cols=1)
    table.cell(0, 0).text = cell
    out = io.BytesIO()
    document.save(out)
    return out.getvalue()


def docx_bomb(inflated_bytes: int) -> bytes:
    """A valid DOCX whose document.xml holds `inflated_bytes` of one repeated letter: it deflates to
    about a thousandth of that."""
    source = docx_with_text("bomb")
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(source)) as original, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as bomb:
        for info in original.infolist():
            data = original.read(info.filename)
            if info.filename == "word/document.xml":
                filler = b"<w:p><w:r><w:t>" + b"a" * inflated_bytes + b"</w:t></w:r></w:p>"
                data = data.replace(b"<w:body>", b"<w:body>" + filler, 1)
            bomb.writestr(info.filename, data)
    return out.getvalue()
