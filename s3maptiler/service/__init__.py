"""The tile service: the tile path (cache read, single flight in three rings, render,
upload), the addresses of tiles, and the one construction of the service and its
clients. Knows nothing about HTTP."""
