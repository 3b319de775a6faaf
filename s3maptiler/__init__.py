"""s3maptiler: an S3 tile cache that completes itself from a WMS."""
