"""Judging what a WMS answered: a complete image of the asked type and size, an OGC
exception report, or an error page whose own words become the one-line reason.

Structural and cheap, no decode: PNG chunks to IEND, JPEG headers to the first scan
and a final EOI, GIF and WebP lengths. Image families are recognised by
:mod:`s3maptiler.tiles.formats`.
"""

from __future__ import annotations

import html.parser
import re
import struct
import xml.etree.ElementTree as ET

from s3maptiler.render.errors import WMSBadImage, one_line
from s3maptiler.tiles.formats import families_of, family_label, sniff

__all__ = ["MAX_ERROR_BODY", "body_message", "check_image", "exception_report"]

#: Non-image answers are read only this far: they serve to find a message.
MAX_ERROR_BODY = 1024 * 1024


# SOF markers whose frames browsers and Pillow decode: baseline, extended, progressive.
_JPEG_SOF = frozenset({0xC0, 0xC1, 0xC2})


_JPEG_OTHER_SOF = frozenset({0xC3, 0xC5, 0xC6, 0xC7, 0xC9, 0xCA, 0xCB, 0xCD, 0xCE, 0xCF})


_JPEG_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


def _wrong_size(label: str, got: tuple[int, int], width: int, height: int) -> WMSBadImage:
    return WMSBadImage(f"WMS sent a {got[0]}x{got[1]} {label}, expected {width}x{height}")


def _check_png(data: bytes, width: int, height: int) -> None:
    # IHDR must be the first chunk: length 13 at offset 8, width/height at 16/20.
    if len(data) < 33 or data[8:16] != b"\x00\x00\x00\x0dIHDR":
        raise WMSBadImage("WMS sent a PNG without a valid IHDR header")
    size = struct.unpack_from(">II", data, 16)
    if size != (width, height):
        raise _wrong_size("PNG", size, width, height)
    # Walk the chunks: every declared length must fit, and IEND must be reached.
    pos, end, has_data = 8, len(data), False
    while True:
        if pos + 12 > end:
            raise WMSBadImage(f"WMS sent a truncated PNG ({end} bytes, no IEND chunk)")
        length, ctype = struct.unpack_from(">I4s", data, pos)
        if length > 0x7FFFFFFF or not ctype.isalpha():
            raise WMSBadImage(f"WMS sent a corrupt PNG (bad chunk at byte {pos})")
        pos += 12 + length
        if pos > end:
            raise WMSBadImage(
                f"WMS sent a truncated PNG ({end} bytes, chunk {ctype.decode()} needs {pos})"
            )
        if ctype == b"IDAT":
            has_data = True
        elif ctype == b"IEND":
            break
    if not has_data:
        raise WMSBadImage("WMS sent a PNG without image data (no IDAT chunk)")


def _check_jpeg(data: bytes, width: int, height: int) -> None:
    end = len(data)
    if not data.endswith(b"\xff\xd9"):
        raise WMSBadImage(f"WMS sent a truncated JPEG ({end} bytes, no end-of-image marker)")
    # Walk the header segments up to the first scan; the entropy-coded data after it
    # is not parsed (that would be a decode), the final EOI vouches for its end.
    pos, size = 2, None
    while True:
        if pos + 4 > end:
            raise WMSBadImage(f"WMS sent a truncated JPEG ({end} bytes, no scan)")
        if data[pos] != 0xFF:
            raise WMSBadImage(f"WMS sent a corrupt JPEG (no marker at byte {pos})")
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        pos += 2
        if marker in _JPEG_STANDALONE:
            continue
        if marker == 0xD9:
            raise WMSBadImage("WMS sent a JPEG without image data")
        (length,) = struct.unpack_from(">H", data, pos)
        if length < 2 or pos + length > end:
            raise WMSBadImage(f"WMS sent a truncated JPEG (segment at byte {pos - 2})")
        if marker in _JPEG_SOF:
            if length < 8:
                raise WMSBadImage("WMS sent a corrupt JPEG (short frame header)")
            rows, cols = struct.unpack_from(">HH", data, pos + 3)
            size = (cols, rows)
        elif marker in _JPEG_OTHER_SOF:
            raise WMSBadImage(f"WMS sent a JPEG with an unsupported coding (SOF 0x{marker:02X})")
        elif marker == 0xDA:
            break
        pos += length
    if size is None:
        raise WMSBadImage("WMS sent a JPEG without a frame header")
    if size != (width, height):
        raise _wrong_size("JPEG", size, width, height)


def _check_gif(data: bytes, width: int, height: int) -> None:
    if len(data) < 14:
        raise WMSBadImage("WMS sent a truncated GIF")
    size = struct.unpack_from("<HH", data, 6)
    if size != (width, height):
        raise _wrong_size("GIF", size, width, height)
    if not data.endswith(b"\x3b"):
        raise WMSBadImage(f"WMS sent a truncated GIF ({len(data)} bytes, no trailer)")


def _check_webp(data: bytes, width: int, height: int) -> None:
    if len(data) < 12:
        raise WMSBadImage("WMS sent a truncated WebP")
    (riff_size,) = struct.unpack_from("<I", data, 4)
    if len(data) < riff_size + 8:
        raise WMSBadImage(f"WMS sent a truncated WebP ({len(data)} of {riff_size + 8} bytes)")


def _check_magic_only(data: bytes, width: int, height: int) -> None:
    return None


_CHECKS = {
    "png": _check_png,
    "jpeg": _check_jpeg,
    "gif": _check_gif,
    "webp": _check_webp,
    "tiff": _check_magic_only,
}


def check_image(data: bytes, image_format: str, width: int, height: int) -> None:
    """Raise :class:`WMSBadImage` unless ``data`` is a complete image of the family of
    ``image_format`` (a WMS FORMAT such as ``image/png; mode=8bit``) and ``width`` ×
    ``height`` pixels.

    Structural and cheap, no decode: PNG signature, IHDR size and a chunk walk to IEND;
    JPEG SOI, SOF0/1/2 size and a final EOI; GIF screen size and trailer; WebP RIFF
    length; TIFF magic only.  Formats this module does not know accept any of those.
    """
    if not data:
        raise WMSBadImage("WMS sent an empty body instead of an image")
    expected = families_of(image_format)
    got = sniff(data)
    if got is None:
        wanted = "/".join(family_label(f) for f in expected)
        raise WMSBadImage(f"WMS sent bytes that are not a {wanted} image")
    if got not in expected:
        raise WMSBadImage(f"WMS sent a {family_label(got)} image where {image_format} was asked")
    _CHECKS[got](data, width, height)


def _charset(content_type: str) -> str:
    match = re.search(r"charset=[\"']?([\w.:-]+)", content_type, re.IGNORECASE)
    return match.group(1) if match else "utf-8"


def _decode(body: bytes, content_type: str) -> str:
    head = body[:65536]
    try:
        return head.decode(_charset(content_type), errors="replace")
    except LookupError:
        return head.decode("utf-8", errors="replace")


def _local_name(tag: object) -> str:
    return tag.rsplit("}", 1)[-1] if isinstance(tag, str) else ""


def _exception_messages(root: ET.Element) -> list[str]:
    messages = []
    for element in root.iter():
        name = _local_name(element.tag)
        if name == "ServiceException":  # WMS 1.1.1 and 1.3.0 (ogc namespace)
            code, text = element.get("code"), "".join(element.itertext())
        elif name == "Exception":  # OWS 1.x ExceptionReport
            code = element.get("exceptionCode")
            text = " ".join(
                "".join(child.itertext())
                for child in element
                if _local_name(child.tag) == "ExceptionText"
            )
        else:
            continue
        text = " ".join(text.split())
        messages.append(f"{code}: {text}" if code and text else text or code or "")
    return [m for m in messages if m]


_EXCEPTION_RE = re.compile(
    r"<(?:\w+:)?(?:ServiceException|ExceptionText)\b[^>]*>(.*?)</(?:\w+:)?(?:ServiceException|ExceptionText)>",
    re.DOTALL,
)


_REPORT_ROOTS = ("ServiceExceptionReport", "ExceptionReport")


def exception_report(body: bytes) -> str | None:
    """The messages of an OGC exception report, or None if ``body`` is not one."""
    head = body[:4096].lstrip(b"\xef\xbb\xbf \t\r\n")
    if not head.startswith(b"<") or not any(
        r.encode() in body[:MAX_ERROR_BODY] for r in _REPORT_ROOTS
    ):
        return None
    try:
        root = ET.fromstring(body[:MAX_ERROR_BODY])
    except ET.ParseError:
        # Malformed XML (or cut at the read limit): salvage the message texts.
        text = body[:MAX_ERROR_BODY].decode("utf-8", errors="replace")
        found = [" ".join(re.sub(r"<[^>]+>", " ", m).split()) for m in _EXCEPTION_RE.findall(text)]
        found = [f for f in found if f]
        return "; ".join(found) if found else None
    messages = _exception_messages(root)
    if messages:
        return "; ".join(messages)
    if _local_name(root.tag) in _REPORT_ROOTS:
        return "WMS sent an exception report without a message"
    return None


class _HTMLText(html.parser.HTMLParser):
    """Collects the <title> and the visible text of an HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.title: list[str] = []
        self.text: list[str] = []
        self._skip = 0
        self._in_title = False

    def handle_starttag(self, tag: str, attrs: object) -> None:
        if tag in ("script", "style"):
            self._skip += 1
        elif tag == "title":
            self._in_title = True

    def handle_endtag(self, tag: str) -> None:
        if tag in ("script", "style") and self._skip:
            self._skip -= 1
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._skip:
            return
        (self.title if self._in_title else self.text).append(data)


def _looks_like_html(text: str, content_type: str) -> bool:
    if "html" in content_type.lower():
        return True
    return re.match(r"\s*(<!doctype\s+html|<html\b)", text, re.IGNORECASE) is not None


def _html_message(text: str) -> str:
    parser = _HTMLText()
    try:
        parser.feed(text)
        parser.close()
    except Exception:  # noqa: BLE001 - a broken error page must not hide the error itself
        return ""
    return one_line(" ".join(parser.title)) or one_line(" ".join(parser.text))


def body_message(body: bytes, content_type: str) -> str:
    """The WMS's own words from an HTML or plain-text answer, or ''."""
    text = _decode(body, content_type)
    if _looks_like_html(text, content_type):
        return _html_message(text)
    if content_type.lower().startswith("text/plain"):
        return one_line(text)
    return ""
