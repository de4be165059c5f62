"""Document metadata: info dictionary, pages, outline, links, attachments, actions, permissions."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

import pymupdf

from shared.extraction.hostile import MuPdfError, scan_actions

_PDF_DATE = re.compile(
    r"^(?:D:)?(\d{4})(\d{2})?(\d{2})?(\d{2})?(\d{2})?(\d{2})?\s*(?:([Zz])|([+\-])(\d{2})'?(\d{2})?'?)?"
)

_FILE_ATTACHMENT = 17
"""PDF_ANNOT_FILE_ATTACHMENT (MuPDF's annotation type number)."""

_PERMISSIONS = {
    "print": "PDF_PERM_PRINT",
    "modify": "PDF_PERM_MODIFY",
    "copy": "PDF_PERM_COPY",
    "annotate": "PDF_PERM_ANNOTATE",
    "fill_forms": "PDF_PERM_FORM",
    "accessibility": "PDF_PERM_ACCESSIBILITY",
    "assemble": "PDF_PERM_ASSEMBLE",
    "print_high_quality": "PDF_PERM_PRINT_HQ",
}


def pdf_date(raw: str | None) -> str | None:
    """A PDF date ("D:20230122093000+01'00'") as ISO 8601; unparseable dates are kept as is."""
    if not raw:
        return None
    m = _PDF_DATE.match(raw.strip())
    if not m:
        return raw.strip() or None
    year, month, day, hour, minute, second, zulu, sign, tzh, tzm = m.groups()
    out = f"{year}-{month or '01'}-{day or '01'}"
    if hour:
        out += f"T{hour}:{minute or '00'}:{second or '00'}"
        if zulu:
            out += "Z"
        elif sign:
            out += f"{sign}{tzh}:{tzm or '00'}"
    return out


def permissions(doc: pymupdf.Document) -> dict[str, bool]:
    bits = int(doc.permissions)
    return {name: bool(bits & int(getattr(pymupdf, const))) for name, const in _PERMISSIONS.items()}


def _catalog_string(doc: pymupdf.Document, key: str) -> str | None:
    try:
        kind, value = doc.xref_get_key(doc.pdf_catalog(), key)
    except MuPdfError:
        return None
    if kind not in ("string", "name") or not value:
        return None
    return str(value).lstrip("/")


def _attachments(doc: pymupdf.Document) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    try:
        names = doc.embfile_names()
    except MuPdfError:
        return found
    for name in names:
        try:
            info = doc.embfile_info(name)
        except MuPdfError:
            found.append({"name": name, "filename": None, "size": None, "page": None})
            continue
        found.append(
            {
                "name": name,
                "filename": info.get("ufilename") or info.get("filename") or name,
                "size": info.get("size"),
                "description": info.get("description") or info.get("desc") or None,
                "page": None,
            }
        )
    return found


class MetadataCollector:
    """Collects the per-page parts (sizes, links, attachment annotations) as pages go by."""

    def __init__(self, max_links: int) -> None:
        self._max_links = max_links
        self.pages: list[dict[str, Any]] = []
        self.links: list[dict[str, Any]] = []
        self.links_dropped = 0
        self.internal_links = 0
        self.annotation_attachments: list[dict[str, Any]] = []

    def add_page(self, page: pymupdf.Page) -> None:
        rect = page.rect
        self.pages.append(
            {
                "number": page.number + 1,
                "width": round(rect.width, 2),
                "height": round(rect.height, 2),
                "rotation": page.rotation,
            }
        )
        self._links(page)
        self._annotation_files(page)

    def _links(self, page: pymupdf.Page) -> None:
        mupdf = pymupdf.mupdf
        link = mupdf.fz_load_links(page.this)
        while link.m_internal:
            uri = link.uri() or ""
            if not mupdf.fz_is_external_link(uri):
                self.internal_links += 1
            elif len(self.links) >= self._max_links:
                self.links_dropped += 1
            else:
                r = link.rect()
                scheme = uri.partition(":")[0].lower() if ":" in uri else ""
                self.links.append(
                    {
                        "page": page.number + 1,
                        "uri": uri[:2000],
                        "kind": "file" if scheme == "file" else "uri",
                        "rect": [round(r.x0, 2), round(r.y0, 2), round(r.x1, 2), round(r.y1, 2)],
                    }
                )
            link = link.next()

    def _annotation_files(self, page: pymupdf.Page) -> None:
        for annot in page.annots(types=[_FILE_ATTACHMENT]):
            try:
                info = annot.get_file_info()
            except MuPdfError:
                continue
            self.annotation_attachments.append(
                {
                    "name": info.get("filename") or "",
                    "filename": info.get("filename") or None,
                    "size": info.get("size"),
                    "description": info.get("description") or info.get("desc") or None,
                    "page": page.number + 1,
                }
            )

    def page_parts(self) -> dict[str, Any]:
        """What the pages seen so far contribute: all a range of a split document builds."""
        return {
            "pages": self.pages,
            "links": self.links,
            "links_dropped": self.links_dropped,
            "internal_link_count": self.internal_links,
            "annotation_attachments": self.annotation_attachments,
        }

    def build(self, doc: pymupdf.Document) -> dict[str, Any]:
        """The metadata dictionary of the result."""
        meta = doc.metadata or {}
        actions, complete = scan_actions(doc)
        try:
            toc = doc.get_toc(simple=True)
        except MuPdfError:
            toc = []
        fmt = str(meta.get("format") or "")
        return {
            "title": meta.get("title") or None,
            "author": meta.get("author") or None,
            "subject": meta.get("subject") or None,
            "keywords": meta.get("keywords") or None,
            "creator": meta.get("creator") or None,
            "producer": meta.get("producer") or None,
            "creation_date": pdf_date(meta.get("creationDate")),
            "modification_date": pdf_date(meta.get("modDate")),
            "pdf_version": fmt.removeprefix("PDF ").strip() or None,
            "language": _catalog_string(doc, "Lang"),
            "page_count": doc.page_count,
            "pages": self.pages,
            "outline": [
                {"level": level, "title": title, "page": page} for level, title, page in toc
            ],
            "links": self.links,
            "links_truncated": self.links_dropped > 0,
            "internal_link_count": self.internal_links,
            "attachments": _attachments(doc) + self.annotation_attachments,
            "has_javascript": actions.get("javascript", 0) > 0,
            "has_launch_actions": actions.get("launch", 0) > 0,
            "actions": actions,
            "actions_scan_complete": complete,
            "form_fields": _form_fields(doc),
            "encrypted": bool(doc.is_encrypted or meta.get("encryption")),
            "encryption": meta.get("encryption") or None,
            "permissions": permissions(doc),
            "repaired": bool(doc.is_repaired),
        }


def _form_fields(doc: pymupdf.Document) -> int:
    try:
        fields = doc.is_form_pdf
    except MuPdfError:
        return 0
    return int(fields) if fields else 0


def merge_page_parts(
    whole: dict[str, Any], parts: Iterable[dict[str, Any]], max_links: int
) -> dict[str, Any]:
    """The metadata of a split document: `whole` (built by its first range) with the per-page
    parts of the other ranges (`page_parts`), in page order, links capped at `max_links`."""
    merged = {
        **whole,
        "pages": list(whole["pages"]),
        "links": list(whole["links"]),
        "attachments": list(whole["attachments"]),
    }
    dropped = 0
    for part in parts:
        merged["pages"] += part["pages"]
        merged["internal_link_count"] += part["internal_link_count"]
        merged["attachments"] += part["annotation_attachments"]
        room = max(max_links - len(merged["links"]), 0)
        merged["links"] += part["links"][:room]
        dropped += part["links_dropped"] + max(len(part["links"]) - room, 0)
    merged["links_truncated"] = bool(whole["links_truncated"]) or dropped > 0
    return merged
