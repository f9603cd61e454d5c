"""The tile store: the one tile grid, the resumable Zarr writer, and the store reader."""
