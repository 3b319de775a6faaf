"""The documents' errors (each message one line) and the layers a document leaves out."""

from __future__ import annotations

from typing import NamedTuple


class DocumentError(ValueError):
    """Base class for every error the documents raise; the message is one line."""


class UnknownMode(DocumentError):
    """A mode that is not one of :data:`~s3maptiler.documents.paths.MODES`."""


class CannotDescribe(DocumentError):
    """A layer that the document cannot express (layout in keys mode, grid or CRS)."""


class InvalidCallback(DocumentError):
    """A JSONP callback that is not a dotted JavaScript identifier (HTTP 400)."""


class UnknownFormat(DocumentError):
    """A JSON output format other than ``json`` or ``pjson`` (HTTP 400)."""


class Skipped(NamedTuple):
    """A layer left out of a document, and why."""

    layer: str
    reason: str
