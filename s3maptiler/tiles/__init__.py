"""Tiles: grids, CRSs, layouts, formats and metatile geometry. Pure: no I/O, and
nothing of the rest of the project is imported here."""
