"""Writing documents: numbers in full precision and never in exponent form
(``0.000042915344238281``, not ``4.2915344238281e-05``: some clients reject exponents
and ``%g`` loses metres), and XML elements with the prefixes clients expect."""

from __future__ import annotations

import math
import xml.etree.ElementTree as ET
from decimal import Decimal

from s3maptiler.documents.errors import DocumentError

XML_DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'


def num(value: float) -> str:
    """Full precision, never an exponent, no ``-0``: ``90.0`` -> ``"90"``."""
    v = float(value) + 0.0  # -0.0 + 0.0 is 0.0
    if not math.isfinite(v):
        raise DocumentError(f"cannot write the number {v!r}")
    if v.is_integer():
        return str(int(v))
    text = repr(v)  # the shortest string that reads back as the same float
    if "e" in text or "E" in text:
        text = format(Decimal(text), "f")
    return text


def pair(a: float, b: float) -> str:
    return f"{num(a)} {num(b)}"


def sub(parent: ET.Element, tag: str, text: str | None = None, **attrs: str) -> ET.Element:
    # Tags carry their prefix literally ("ows:Title") and the root declares the
    # prefixes, so the output uses the prefixes clients expect, not ns0/ns1.
    element = ET.SubElement(parent, tag, attrs)
    if text is not None:
        element.text = text
    return element


def to_xml(root: ET.Element) -> str:
    ET.indent(root, space="  ")
    return XML_DECLARATION + ET.tostring(root, encoding="unicode") + "\n"
