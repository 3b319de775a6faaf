"""Operations on a whole bucket: set-up and check of a self-completing tile cache,
bulk upload of a tile directory, purge, and publishing the documents beside the
tiles. Used by the CLI (and by the local website of ``make run-website``)."""
