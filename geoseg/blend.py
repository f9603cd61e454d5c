"""The core of tiled inference: the global tile grid, blocks, blending, the model as a
function from tiles to probabilities (with test-time augmentation), and predict_array for
small in-memory images (re-exported by :mod:`geoseg.predict`).

Seams are avoided by defining everything on ONE global tile grid: a block computes exactly the
tiles that touch it, with the same windows and the same blend weights a whole-scene run would
use, and adds them up in the same (row-major) order. The class map is therefore the same
whatever the block size; only the cost changes (a tile straddling a block border is computed
by both blocks).

Nothing here reads files: a block gets its pixels from the caller and its probabilities from
a ``segment`` callable, so the same code serves predict (file blocks), predict_array (one
in-memory block) and the tests (a fixed function with spatial context).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.errors import BadInput

#: segment(x float32 (B, C, T, T)) -> probabilities float32 (B, K, T, T)
Segment = Callable[[np.ndarray], np.ndarray]


def tile_origins(length: int, tile: int, overlap: int) -> np.ndarray:
    """Top/left offsets of the tiles covering ``length`` pixels along one axis.

    Tiles step by ``tile - overlap``; the last one is pulled back to end at the scene edge (so no
    tile reads past the scene) unless the scene is shorter than one tile, when a single tile at 0
    is padded.
    """
    stride = tile - overlap
    if length <= tile:
        return np.zeros(1, np.int64)
    origins = list(range(0, length - tile, stride))
    origins.append(length - tile)
    return np.asarray(origins, np.int64)


def block_edges(length: int, tile: int, overlap: int, block: int) -> list[tuple[int, int]]:
    """Split one axis into blocks of about ``block`` pixels, as ``(start, stop)`` pairs.

    Blocks span whole strides and their borders sit ``overlap`` pixels into a tile, where only
    that tile covers the pixels; so each border costs one extra tile row/column, the least
    possible, and a block needs a halo of just ``overlap`` pixels before its start.
    """
    stride = tile - overlap
    step = max(1, round(block / stride)) * stride
    edges = list(range(step + overlap, length, step))
    starts = [0, *edges]
    stops = [*edges, length]
    return list(zip(starts, stops, strict=True))


def ramp(tile: int, overlap: int) -> np.ndarray:
    """1-D blend weight: a raised-cosine rise over ``overlap`` pixels at each end, 1 inside.

    Every value is strictly positive (half-pixel offsets), so a pixel covered by a single tile
    at the scene edge keeps that tile's probabilities exactly after normalisation.
    """
    w = np.ones(tile, np.float64)
    n = min(overlap, tile // 2)
    if n > 0:
        rise = np.sin(0.5 * np.pi * (np.arange(n) + 0.5) / n) ** 2
        w[:n] = rise
        w[tile - n :] = rise[::-1]
    return w


def blend_weight(tile: int, overlap: int) -> np.ndarray:
    """The separable 2-D weight ``ramp ⊗ ramp`` (T, T) float32 applied to each tile's softmax."""
    r = ramp(tile, overlap)
    return np.outer(r, r).astype(np.float32)


@dataclass(frozen=True)
class Block:
    """One block of the scene: the output window and the global tiles that touch it.

    Attributes:
        rows, cols: output window ``(start, stop)`` in scene pixels.
        read_rows, read_cols: input window to read (the tiles' union clipped to the scene).
        tiles: ``(row, col)`` scene offsets of every touching tile, in row-major order.
    """

    rows: tuple[int, int]
    cols: tuple[int, int]
    read_rows: tuple[int, int]
    read_cols: tuple[int, int]
    tiles: tuple[tuple[int, int], ...]

    @property
    def shape(self) -> tuple[int, int]:
        return self.rows[1] - self.rows[0], self.cols[1] - self.cols[0]


def _touching(origins: np.ndarray, tile: int, start: int, stop: int) -> np.ndarray:
    return origins[(origins < stop) & (origins + tile > start)]


def plan_blocks(height: int, width: int, *, tile: int, overlap: int, block: int) -> list[Block]:
    """All blocks of a ``height`` x ``width`` scene, each with its tiles and read window."""
    row_origins = tile_origins(height, tile, overlap)
    col_origins = tile_origins(width, tile, overlap)
    blocks = []
    for r0, r1 in block_edges(height, tile, overlap, block):
        rows = _touching(row_origins, tile, r0, r1)
        for c0, c1 in block_edges(width, tile, overlap, block):
            cols = _touching(col_origins, tile, c0, c1)
            blocks.append(
                Block(
                    rows=(r0, r1),
                    cols=(c0, c1),
                    read_rows=(int(rows[0]), min(int(rows[-1]) + tile, height)),
                    read_cols=(int(cols[0]), min(int(cols[-1]) + tile, width)),
                    tiles=tuple((int(r), int(c)) for r in rows for c in cols),
                )
            )
    return blocks


def blend_block(
    block: Block,
    x: np.ndarray,
    segment: Segment,
    *,
    tile: int,
    overlap: int,
    batch_size: int,
    n_classes: int,
    valid: np.ndarray | None = None,
    norm: Mapping[str, Sequence[float]] | None = None,
) -> np.ndarray:
    """Blended probabilities (K, h, w) float32 of ``block``'s output window.

    Tiles are normalised batch by batch, so the block itself stays in its source dtype (a
    quarter of float32 for uint8): the block's peak memory is what bounds predict's. Invalid
    pixels are fed as 0, the band mean after normalisation. A tile with no valid pixel is
    skipped: every pixel it covers is nodata anyway, and scenes often carry large nodata
    collars. Pixels no tile reached get probability 0.

    Args:
        block: the block (from :func:`plan_blocks`).
        x: the input over ``block.read_rows`` x ``block.read_cols``, (C, h, w): source dtype
            with ``norm``, else already normalised.
        segment: the model, tiles in → probabilities out (see :data:`Segment`).
        tile, overlap: the global grid parameters used to plan ``block``.
        batch_size: tiles per ``segment`` call.
        n_classes: K, the number of probability channels ``segment`` returns.
        valid: (h, w) bool over the read window, or ``None`` when every pixel is valid.
        norm: statistics for :func:`geoseg.transforms.normalize`, or ``None``.
    """
    from geoseg.transforms import normalize

    rr0, cc0 = block.read_rows[0], block.read_cols[0]
    need_h = max(r for r, _ in block.tiles) + tile - rr0
    need_w = max(c for _, c in block.tiles) + tile - cc0
    if x.shape[1] < need_h or x.shape[2] < need_w:
        # A scene smaller than one tile: padding is invalid, so it is fed as the band mean.
        pad = ((0, 0), (0, need_h - x.shape[1]), (0, need_w - x.shape[2]))
        valid = np.pad(np.ones(x.shape[1:], bool) if valid is None else valid, pad[1:])
        x = np.pad(x, pad)
    tiles = block.tiles
    if valid is not None:
        tiles = tuple(
            (r, c)
            for r, c in tiles
            if valid[r - rr0 : r - rr0 + tile, c - cc0 : c - cc0 + tile].any()
        )
    weight = blend_weight(tile, overlap)
    (r0, r1), (c0, c1) = block.rows, block.cols
    acc = np.zeros((n_classes, r1 - r0, c1 - c0), np.float32)
    wsum = np.zeros((r1 - r0, c1 - c0), np.float32)
    for start in range(0, len(tiles), batch_size):
        batch = tiles[start : start + batch_size]
        windows = [
            (slice(r - rr0, r - rr0 + tile), slice(c - cc0, c - cc0 + tile)) for r, c in batch
        ]
        xb = np.stack([x[:, rs, cs] for rs, cs in windows])
        xb = np.asarray(normalize(xb, norm) if norm is not None else xb, np.float32)
        if valid is not None:
            vb = np.stack([valid[rs, cs] for rs, cs in windows])
            np.copyto(xb, 0, where=~vb[:, None])  # not a product: NaN nodata stays NaN
        probs = segment(xb)
        for (r, c), p in zip(batch, probs, strict=True):
            # Intersection of this tile with the output window, in block and in tile coordinates.
            top, bottom = max(r, r0), min(r + tile, r1)
            left, right = max(c, c0), min(c + tile, c1)
            tr, tc = slice(top - r, bottom - r), slice(left - c, right - c)
            br, bc = slice(top - r0, bottom - r0), slice(left - c0, right - c0)
            w = weight[tr, tc]
            acc[:, br, bc] += p[:, tr, tc] * w
            wsum[br, bc] += w
    np.divide(acc, wsum, out=acc, where=wsum > 0)
    return acc


# --- the model as a Segment ------------------------------------------------------------------


def resolve_device(device: str = "auto"):
    """``"auto"`` → CUDA when present, else CPU; a ``cuda`` request without a GPU is refused."""
    import torch

    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise BadInput("CUDA is not available on this machine; use --device cpu", param="--device")
    return torch.device(device)


def _dihedral(x, k: int, flip: bool):
    x = x.rot90(k, (2, 3))
    return x.flip(3) if flip else x


def _undihedral(y, k: int, flip: bool):
    y = y.flip(3) if flip else y
    return y.rot90(-k, (2, 3))


def segmenter(model, *, head: int = 0, device: Any = "cpu", tta: bool = False) -> Segment:
    """Wrap a geoseg model as a :data:`geoseg.blend.Segment` (numpy tiles → probabilities).

    Args:
        model: a model following the contract (``forward`` returns one logit map per head).
        head: which head's clusters to predict.
        device: torch device the model is on; CUDA runs under float16 autocast.
        tta: average the softmax over the 8 flips/rotations of each tile (8x the compute).
    """
    import torch

    device = torch.device(device)
    views = [(k, f) for k in range(4) for f in (False, True)] if tta else [(0, False)]
    amp = device.type == "cuda"

    def segment(x: np.ndarray) -> np.ndarray:
        xt = torch.from_numpy(np.ascontiguousarray(x)).to(device)
        total = None
        with torch.inference_mode(), torch.autocast(device.type, enabled=amp):
            for k, flip in views:
                out = model(_dihedral(xt, k, flip))
                logits = out[head] if isinstance(out, (list, tuple)) else out
                probs = _undihedral(torch.softmax(logits.float(), dim=1), k, flip)
                total = probs if total is None else total + probs
        return (total / len(views)).float().cpu().numpy()

    return segment


# --- small in-memory images -----------------------------------------------------------------


def load_model(model: str | Path | Mapping[str, Any]) -> tuple[dict[str, Any], Any]:
    """``(checkpoint dict, model in eval mode on CPU)`` from a path or an already loaded dict."""
    from geoseg.checkpoint import load_checkpoint, model_from_checkpoint

    ckpt = dict(model) if isinstance(model, Mapping) else load_checkpoint(model)
    return ckpt, model_from_checkpoint(ckpt)


def check_grid(tile: int, overlap: int | None, multiple: int = 1) -> tuple[int, int]:
    """Validated ``(tile, overlap)``; the default overlap is an eighth of the tile."""
    if tile % multiple:
        fit = -(-tile // multiple) * multiple
        raise BadInput(
            f"{tile} is not a multiple of {multiple}, which this model needs; use {fit}",
            param="--tile-size",
        )
    overlap = tile // 8 if overlap is None else overlap
    if not 0 <= overlap <= tile // 2:
        raise BadInput(
            f"{overlap} must be between 0 and half the tile size ({tile // 2})", param="--overlap"
        )
    return tile, overlap


def predict_array(
    model: Any,
    image: np.ndarray,
    valid: np.ndarray | None = None,
    *,
    tile_size: int | None = None,
    overlap: int | None = None,
    batch_size: int = 8,
    device: str = "auto",
    tta: bool = False,
    norm: Mapping[str, Sequence[float]] | None = None,
    head: int | None = None,
) -> np.ndarray:
    """Blended cluster probabilities of a small in-memory image, as predict computes them.

    For ``geoseg map``, evaluation and the demo, which hold a tile or a crop in memory; the
    image goes through the same normalisation, tiling and blending as :func:`predict`.

    Args:
        model: a checkpoint path or dict (bands already selected; normalised with its ``norm``),
            or a bare model (then ``norm`` is used if given, else ``image`` must be normalised).
        image: (C, H, W) in the source dtype.
        valid: (H, W) bool; invalid pixels are fed as the band mean and get probability 0 when
            a whole tile is invalid.
        tile_size, overlap: tiling (defaults: the checkpoint's tile size, or the whole image).
        batch_size, device, tta: as in :func:`predict`.
        norm: normalisation statistics overriding the checkpoint's.
        head: head to predict (default: the checkpoint's, else 0).

    Returns:
        (K, H, W) float32 probabilities.
    """
    ckpt: dict[str, Any] = {}
    if isinstance(model, (str, Path, Mapping)):
        ckpt, model = load_model(model)
        if image.shape[0] != len(ckpt["bands"]):
            raise BadInput(
                f"image has {image.shape[0]} bands but the model expects {len(ckpt['bands'])}",
                param="image",
            )
    norm = norm if norm is not None else ckpt.get("norm")
    head = int(ckpt.get("head", 0)) if head is None else head
    height, width = image.shape[1:]
    multiple = int(getattr(model, "size_multiple", 1))
    default = ckpt.get("tile_size") or -(-max(height, width) // multiple) * multiple
    tile, overlap = check_grid(tile_size or int(default), overlap, multiple)
    dev = resolve_device(device)
    model = model.to(dev).eval()
    n_classes = int(model.n_clusters[head])
    (block,) = plan_blocks(height, width, tile=tile, overlap=overlap, block=max(height, width) * 2)
    segment = segmenter(model, head=head, device=dev, tta=tta)
    return blend_block(
        block, image, segment, tile=tile, overlap=overlap, batch_size=batch_size,
        n_classes=n_classes, valid=valid, norm=norm,
    )  # fmt: skip
