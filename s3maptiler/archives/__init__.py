"""Single-file tile archives: PMTiles, MBTiles and GeoPackage writers (export) and the
PMTiles reader (zooms served from an archive). Pure file formats over ``tiles``."""
