"""Page renderings and embedded images, written page by page into ZIP artifacts."""

from __future__ import annotations

import contextlib
import json
import os
import zipfile

import pymupdf

from shared.extraction.base import ArtifactFile, ExtractLimits
from shared.extraction.hostile import MuPdfError, is_out_of_memory, short_error

PAGE_IMAGES_ZIP = "page_images.zip"
IMAGES_ZIP = "images.zip"
MANIFEST = "manifest.json"

_IMAGE_TYPES = {"jpeg": "jpg", "jpg": "jpg", "jpx": "jp2", "png": "png", "jb2": "jb2"}


class _Zip:
    """A ZIP written entry by entry, so only one image is in memory at a time."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._zip = zipfile.ZipFile(path, "w", zipfile.ZIP_STORED, allowZip64=True)
        self.entries: list[dict[str, object]] = []

    def write(self, name: str, data: bytes, *, compress: bool = False) -> None:
        kind = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
        self._zip.writestr(name, data, compress_type=kind)

    def close(self, manifest: dict[str, object]) -> None:
        self.write(MANIFEST, json.dumps(manifest, indent=1).encode(), compress=True)
        self._zip.close()

    def discard(self) -> None:
        self._zip.close()
        with contextlib.suppress(OSError):
            os.remove(self.path)


class PageImageWriter:
    """`page_images.zip`: `preview/page-NNNN.png` with a fixed long edge and
    `full/page-NNNN.png` at the requested resolution, plus `manifest.json`."""

    def __init__(self, out_dir: str, dpi: int, preview_long_edge: int) -> None:
        self._zip = _Zip(os.path.join(out_dir, PAGE_IMAGES_ZIP))
        self._dpi = dpi
        self._edge = preview_long_edge

    def add(self, page: pymupdf.Page) -> None:
        """Render one page (the caller has checked it against the render limits)."""
        number = page.number + 1
        zoom = self._dpi / 72.0
        full = page.get_pixmap(matrix=pymupdf.Matrix(zoom, zoom), alpha=False)
        full_name = f"full/page-{number:04d}.png"
        self._zip.write(full_name, full.tobytes("png"))
        long_edge = max(full.width, full.height, 1)
        scale = self._edge / long_edge
        if scale <= 1.0:
            # downscale the full rendering instead of interpreting the page a second time
            width = max(1, round(full.width * scale))
            height = max(1, round(full.height * scale))
            preview = pymupdf.Pixmap(full, width, height, None)
        else:
            rect = page.rect
            z = self._edge / max(rect.width, rect.height, 1.0)
            preview = page.get_pixmap(matrix=pymupdf.Matrix(z, z), alpha=False)
        preview_name = f"preview/page-{number:04d}.png"
        self._zip.write(preview_name, preview.tobytes("png"))
        self._zip.entries.append(
            {
                "page": number,
                "full": {"name": full_name, "width": full.width, "height": full.height},
                "preview": {
                    "name": preview_name,
                    "width": preview.width,
                    "height": preview.height,
                },
            }
        )

    def close(self) -> ArtifactFile:
        self._zip.close(
            {"dpi": self._dpi, "preview_long_edge": self._edge, "pages": self._zip.entries}
        )
        return ArtifactFile(PAGE_IMAGES_ZIP, self._zip.path, "application/zip")

    def discard(self) -> None:
        self._zip.discard()


class EmbeddedImageWriter:
    """`images.zip`: each embedded image once, in its stored format where MuPDF can keep it
    (JPEG, JPEG 2000), otherwise as PNG, plus `manifest.json` (pages, size, format)."""

    def __init__(self, out_dir: str, limits: ExtractLimits, warnings: list[str]) -> None:
        self._zip = _Zip(os.path.join(out_dir, IMAGES_ZIP))
        self._limits = limits
        self._warnings = warnings
        self._by_xref: dict[int, dict[str, object]] = {}
        self._skipped_over_count = 0

    def add_page(self, doc: pymupdf.Document, page: pymupdf.Page) -> None:
        number = page.number + 1
        for item in page.get_images(full=True):
            xref, smask, width, height = int(item[0]), int(item[1]), int(item[2]), int(item[3])
            known = self._by_xref.get(xref)
            if known is not None:
                pages = known["pages"]
                if isinstance(pages, list) and number not in pages:
                    pages.append(number)
                continue
            if width * height > self._limits.max_image_pixels:
                self._warnings.append(
                    f"image {xref} on page {number} skipped: {width}x{height} pixels is over "
                    f"the decoded image limit of {self._limits.max_image_pixels}"
                )
                self._by_xref[xref] = {"xref": xref, "pages": [number], "skipped": "too large"}
                continue
            if len(self._zip.entries) >= self._limits.max_images:
                self._skipped_over_count += 1
                continue
            try:
                info = doc.extract_image(xref)
            except MuPdfError as exc:
                if is_out_of_memory(exc):
                    raise MemoryError(str(exc)) from exc
                self._warnings.append(
                    f"image {xref} on page {number} could not be read: {short_error(exc)}"
                )
                self._by_xref[xref] = {"xref": xref, "pages": [number], "skipped": "damaged"}
                continue
            if not info or not info.get("image"):
                continue
            ext = _IMAGE_TYPES.get(str(info.get("ext", "png")).lower(), "png")
            data: bytes = info["image"]
            name = f"page-{number:04d}-image-{xref}.{ext}"
            self._zip.write(name, data)
            entry: dict[str, object] = {
                "name": name,
                "xref": xref,
                "pages": [number],
                "width": int(info.get("width", width)),
                "height": int(info.get("height", height)),
                "format": ext,
                "colorspace": info.get("cs-name") or None,
                "bytes": len(data),
                "has_mask": bool(smask),
            }
            self._zip.entries.append(entry)
            self._by_xref[xref] = entry

    def close(self) -> ArtifactFile:
        if self._skipped_over_count:
            self._warnings.append(
                f"{self._skipped_over_count} images not written: more than "
                f"{self._limits.max_images} images"
            )
        skipped = [e for e in self._by_xref.values() if "skipped" in e]
        self._zip.close({"images": self._zip.entries, "skipped": skipped})
        return ArtifactFile(IMAGES_ZIP, self._zip.path, "application/zip")

    def discard(self) -> None:
        self._zip.discard()
