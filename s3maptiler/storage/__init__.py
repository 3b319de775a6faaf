"""Storage: where tiles live (S3 or a directory), the one S3 module and the upload
pool. Imports :mod:`s3maptiler.tiles` only."""
