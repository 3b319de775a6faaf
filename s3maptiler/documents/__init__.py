"""Documents that let GIS clients open the layers: TMS XML, WMTS capabilities, ArcGIS
JSON, and OGC API - Tiles JSON.

Every function here is pure and deterministic: the same layers and base URL give the
same bytes, so a publisher can skip objects that did not change. URLs are built from a
``base_url`` (the S3 website / CloudFront host, or the service's own URL) and a
``mode``:

- ``"service"``: tiles come from the service's fixed routes, which work for every
  layout: ``{base}/1.0.0/{layer}/{z}/{x}/{y}.{ext}`` (TMS),
  ``{base}/wmts/1.0.0/{layer}/{Style}/{TileMatrixSet}/{TileMatrix}/{TileRow}/{TileCol}.{ext}``
  and ``{base}/wmts?`` (WMTS REST and KVP), ``{base}/arcgis/rest/services/{layer}/MapServer``.
- ``"keys"``: tiles come straight from their S3 keys, ``{base}/{prefix}{layout path}``.
  Only some layouts can be written down: TMS needs layout ``tms``; WMTS templates need
  ``xyz`` or ``wmts``. Other layers are left out of the TMS and WMTS documents, logged,
  and listed by :func:`skipped_layers`; OGC API keeps them, with the tile route's path
  in the bucket as their template (which the bucket's redirect sends to the service).

Numbers in XML are written in full precision and never in exponent form
(``0.000042915344238281`` rather than ``4.2915344238281e-05``): some clients reject
exponents and ``%g`` loses metres.

Where the documents live under the base URL is decided here too
(:func:`tms_service_path`, :func:`tile_map_path`, :data:`WMTS_CAPABILITIES_PATH`,
:func:`arcgis_service_path`), so the hrefs inside them and the routes or keys that
serve them cannot drift apart.

One module per document: :mod:`~s3maptiler.documents.tms`,
:mod:`~s3maptiler.documents.wmts`, :mod:`~s3maptiler.documents.arcgis`,
:mod:`~s3maptiler.documents.ogcapi` and its :mod:`~s3maptiler.documents.openapi`. What they
share, a module each: :mod:`~s3maptiler.documents.paths` (where documents live),
:mod:`~s3maptiler.documents.views` (layers as documents see them, and which a document
leaves out), :mod:`~s3maptiler.documents.standard_grids` (**the** standard grids),
:mod:`~s3maptiler.documents.xmltext` (numbers and XML) and
:mod:`~s3maptiler.documents.errors`.
"""
