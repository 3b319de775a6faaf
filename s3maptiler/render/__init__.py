"""Rendering: the WMS client, the guard in front of it, and the one render pipeline
(GetMap, check, decode, slice, encode). Imports :mod:`s3maptiler.tiles`,
:mod:`s3maptiler.config` and :mod:`s3maptiler.metrics` only (tests/unit/test_architecture.py)."""
