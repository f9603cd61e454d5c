"""Whole chunks and shards of a tile store's arrays, encoded here and written straight into a
local store folder, byte for byte what zarr would write (zarr reads them back).

Why not zarr's ``__setitem__``: it spends about 2 ms of CPU per chunk in selection and asyncio
machinery (measured: as much as GDAL decoding the source pixels), and a tile is exactly one
chunk, so the writer can encode it with the array's own codecs and write the bytes at once.

Why shards (issue 11): one file per tile per array made creating files the largest cost of
``geoseg tile`` on ext4 (a profile of the 4096² NAIP scene: ~20 % of all CPU samples in the
kernel's inode allocation, ``ext4_create`` / ``recently_deleted``). A local store now keeps
:func:`shard_tiles` consecutive tiles in one shard file per array (zarr v3 ``sharding_indexed``:
the encoded tiles, then an index of (offset, length) pairs with a crc32c checksum). Readers
still get one tile at a time (zarr reads the index, then that tile's bytes).

A shard's tiles may come from two strips (tasks) of the writer; :class:`ShardAssembler` keeps
the first strip's encoded tiles until the last one arrives and then writes the whole shard
once, so no shard is ever read back or written by two threads.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable
from pathlib import Path

import numpy as np

#: target raw bytes of one shard (tiles per shard = this / a tile's bytes, 1 to 64): ~32 NAIP
#: 256² 4-band tiles per file; small enough that a shard's tiles waiting in memory for the
#: strip that completes it stay a few MiB per lane
SHARD_BYTES = 8 << 20
#: zarr's marker of an absent chunk in a shard index
_ABSENT = np.uint64(2**64 - 1)


def shard_tiles(tile_bytes: int) -> int:
    """Tiles per shard for tiles of ``tile_bytes`` raw bytes (1: no sharding)."""
    return int(max(1, min(64, SHARD_BYTES // max(1, tile_bytes))))


def chunk_encoder(codecs) -> Callable[[np.ndarray], list] | None:
    """``parts = encode(chunk)``: the encoded chunk as a list of byte buffers (written one
    after the other, never joined: no copy of a tile's bytes), equal to zarr's codec chain
    ``codecs`` (C-order bytes, then at most one Blosc or Zstd compressor, then optionally a
    crc32c checksum); ``None`` for any other chain (the caller then lets zarr encode)."""
    import numcodecs
    from zarr.codecs import BloscCodec, BytesCodec, Crc32cCodec, ZstdCodec

    codecs = list(codecs)
    if not codecs or not isinstance(codecs[0], BytesCodec):
        return None
    endian = codecs[0].endian
    if endian is not None and endian.value != sys.byteorder:
        return None
    checksum = isinstance(codecs[-1], Crc32cCodec)
    middle = codecs[1:-1] if checksum else codecs[1:]
    compressor = None
    if len(middle) > 1:
        return None
    if middle and isinstance(middle[0], ZstdCodec):
        compressor = numcodecs.Zstd(level=middle[0].level, checksum=middle[0].checksum)
    elif middle and isinstance(middle[0], BloscCodec):
        codec = middle[0]
        shuffle = {"noshuffle": 0, "shuffle": 1, "bitshuffle": 2}[codec.shuffle.value]
        compressor = numcodecs.Blosc(
            cname=codec.cname.value, clevel=codec.clevel, shuffle=shuffle, blocksize=codec.blocksize
        )
    elif middle:
        return None

    def encode(chunk: np.ndarray) -> list:
        data = compressor.encode(chunk) if compressor is not None else _bytes_of(chunk)
        return [data, _crc32c(data)] if checksum else [data]

    return encode


def _bytes_of(chunk: np.ndarray) -> np.ndarray:
    """A C-contiguous chunk's bytes as a flat uint8 array (no copy; google_crc32c takes
    arrays, not memoryviews)."""
    return np.ascontiguousarray(chunk).reshape(-1).view(np.uint8)


def _crc32c(data) -> bytes:
    """zarr's ``crc32c`` codec suffix: the checksum of ``data`` as a native uint32."""
    import google_crc32c

    return np.uint32(google_crc32c.value(data)).tobytes()


def _local_root(array) -> Path | None:
    """The array's folder when its store is a local folder, else ``None``."""
    from zarr.storage import LocalStore

    store = array.store_path.store
    return Path(store.root) / array.path if isinstance(store, LocalStore) else None


def _is_empty(chunk: np.ndarray, fill) -> bool:
    """A chunk equal to the fill value everywhere: zarr does not store it (reads give fill).

    A zero fill of integers or booleans is tested on the C-contiguous chunk's bytes as
    uint64 words (8x fewer elements than ``chunk.any()``, which is as costly as encoding
    an LZ4 tile); floats keep the value test, since -0.0 equals a 0 fill with other bytes.
    """
    if fill:
        return bool((chunk == fill).all())
    if chunk.dtype.kind in "uib" and chunk.flags.c_contiguous and chunk.nbytes % 8 == 0:
        return not chunk.reshape(-1).view(np.uint64).any()
    return not chunk.any()


class ChunkFiles:
    """Whole tile chunks of one unsharded zarr array (one tile per chunk file), written
    straight into a local store; other stores (``memory://``, ``s3://``) go through zarr.
    Chunks equal to the fill value are not stored (their file is removed), as zarr does."""

    def __init__(self, array):
        self.array = array
        self.root = _local_root(array)
        self.encode = chunk_encoder(getattr(array.metadata, "codecs", ()))
        self.fill = array.fill_value

    def put(self, first: int, chunks: list[np.ndarray]) -> None:
        """Write ``chunks`` at chunk indices ``first, first + 1, ...`` along the first axis:
        each one tile of a tile array (its chunk shape minus the first axis, of length 1),
        or a whole chunk of a 1-D array (the ``done`` flags)."""
        if self.root is None or self.encode is None:
            self.array[first : first + len(chunks)] = np.stack(chunks)
            return
        dtype = self.array.dtype
        for k, chunk in enumerate(chunks):
            key = self.array.metadata.encode_chunk_key((first + k,) + (0,) * (self.array.ndim - 1))
            path = self.root / key
            if _is_empty(chunk, self.fill):
                path.unlink(missing_ok=True)
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            with path.open("wb") as f:
                f.writelines(self.encode(np.ascontiguousarray(chunk, dtype=dtype)))


def sharded(array) -> int:
    """Tiles per shard of a tile array written in shards, else 0 (one tile per chunk)."""
    from zarr.codecs import ShardingCodec

    codecs = getattr(array.metadata, "codecs", ())
    if len(codecs) == 1 and isinstance(codecs[0], ShardingCodec):
        return int(array.metadata.chunk_grid.chunk_shape[0])
    return 0


class _ShardArray:
    """How one sharded array's shards are encoded and where their files go."""

    def __init__(self, array):
        from zarr.codecs import BytesCodec, Crc32cCodec, ShardingCodec
        from zarr.codecs.sharding import ShardingCodecIndexLocation

        codec = array.metadata.codecs[0]
        assert isinstance(codec, ShardingCodec)
        index = list(codec.index_codecs)
        self.root = _local_root(array)
        self.encode = chunk_encoder(codec.codecs)
        standard = (
            codec.index_location == ShardingCodecIndexLocation.end
            and len(index) == 2
            and isinstance(index[0], BytesCodec)
            and (index[0].endian is None or index[0].endian.value == "little")
            and isinstance(index[1], Crc32cCodec)
            and codec.chunk_shape[1:] == array.metadata.chunk_grid.chunk_shape[1:]
            and codec.chunk_shape[0] == 1
        )
        self.direct = self.root is not None and self.encode is not None and standard
        self.array = array
        self.fill = array.fill_value
        self.dtype = array.dtype
        self.tiles = int(array.metadata.chunk_grid.chunk_shape[0])
        self.ndim = array.ndim

    def encode_tile(self, tile: np.ndarray):
        """A tile's encoded bytes (``None``: equal to the fill value, not stored); the tile
        itself when zarr must encode it (:meth:`write` then goes through zarr)."""
        if not self.direct:
            return tile
        tile = np.ascontiguousarray(tile, dtype=self.dtype)
        return None if _is_empty(tile, self.fill) else self.encode(tile)

    def write(self, shard: int, tiles: dict[int, object], lock: threading.Lock) -> None:
        """Write shard ``shard`` from ``{tile offset in the shard: encoded tile or None}``."""
        if not self.direct:  # zarr reads, merges and writes the shard: one thread at a time
            i0 = shard * self.tiles
            with lock:
                for j, tile in sorted(tiles.items()):
                    self.array[i0 + j] = tile
            return
        path = self.root / self.array.metadata.encode_chunk_key((shard,) + (0,) * (self.ndim - 1))
        index = np.full((self.tiles, 2), _ABSENT, "<u8")
        parts, offset = [], 0
        for j in sorted(tiles):
            if tiles[j] is None:
                continue
            length = sum(len(part) for part in tiles[j])
            index[j] = (offset, length)
            parts += tiles[j]
            offset += length
        if not parts:  # all tiles empty: zarr stores no shard
            path.unlink(missing_ok=True)
            return
        raw = index.tobytes()
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("wb") as f:
            f.writelines([*parts, raw, _crc32c(raw)])


class ShardAssembler:
    """Completes the shards of one run of the writer: strips hand in their encoded tiles per
    shard; the strip whose tiles complete a shard gets them all back and writes it.

    Args:
        arrays: the sharded arrays by name (``image``, ``valid``, ``label``), one shard size.
        need: per shard, how many of its tiles this run writes (the others are written
            already, so a shard's tiles are all written or all pending: resumes rely on it).
        done: the store's ``done`` flags, one chunk per shard: a written shard's chunk of
            flags is written whole, as a file, right after it (through zarr, a flag update
            cost ~3.5 ms of CPU, plus ~3 ms to open the group in each strip).
    """

    def __init__(self, arrays: dict, need: np.ndarray, done):
        self.arrays = {name: _ShardArray(a) for name, a in arrays.items()}
        self.tiles = next(iter(self.arrays.values())).tiles
        self.need = need
        self.length = int(next(iter(self.arrays.values())).array.shape[0])
        self.pending: dict[int, tuple[dict[str, dict[int, object]], int]] = {}
        self.lock = threading.Lock()
        self.zarr_lock = threading.Lock()
        self.done = done
        self.flags = ChunkFiles(done) if done.chunks == (self.tiles,) else None

    def add(self, shard: int, tiles: dict[str, dict[int, object]], count: int) -> bool:
        """Hand in ``count`` tiles of ``shard`` (``{array: {offset: encoded}}``); when they
        complete it, write the shard and return True."""
        with self.lock:
            if shard in self.pending:
                held, n = self.pending.pop(shard)
                for name, part in tiles.items():
                    held.setdefault(name, {}).update(part)
                tiles, count = held, n + count
            if count < self.need[shard]:
                self.pending[shard] = (tiles, count)
                return False
        for name, part in tiles.items():
            self.arrays[name].write(shard, part, self.zarr_lock)
        i0, i1 = shard * self.tiles, min((shard + 1) * self.tiles, self.length)
        if self.flags is not None:  # the shard's chunk of flags, all set (zarr pads the last)
            self.flags.put(shard, [np.ones(self.tiles, bool)])
        else:
            with self.zarr_lock:
                self.done[i0:i1] = True
        return True

    def check_finished(self) -> None:
        """Every shard was completed (a shard left waiting is a planning bug, not bad input)."""
        if self.pending:
            raise RuntimeError(f"tile shards never completed: {sorted(self.pending)[:5]}")
