"""The model as a function on tiles: device choice, test-time augmentation, and
``predict_array`` for small in-memory images (the same grid and blending as ``predict``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from geoseg.errors import BadInput
from geoseg.models.device import resolve_device
from geoseg.predict.blend import Segment, blend_block
from geoseg.tiles.grid import TileGrid


def segmenter(model, *, head: int = 0, device: Any = "cpu", tta: bool = False) -> Segment:
    """Wrap a geoseg model as a :data:`geoseg.predict.blend.Segment` (numpy tiles → probabilities).

    Args:
        model: a model following the contract (``forward`` returns one logit map per head).
        head: which head's clusters to predict.
        device: torch device the model is on; CUDA runs under float16 autocast.
        tta: average the softmax over the 8 flips/rotations of each tile (8x the compute).
    """
    import torch

    from geoseg.models.dihedral import dihedral, undihedral

    device = torch.device(device)
    views = [(k, f) for k in range(4) for f in (False, True)] if tta else [(0, False)]
    amp = device.type == "cuda"

    def segment(x: np.ndarray) -> np.ndarray:
        if device.type == "cpu" and len(x) > 1:
            # On a CPU, tiles go through the model one at a time: a batch buys no speed
            # there, while its activations are large fresh allocations (zeroed pages, heaps
            # that grow and fragment). Measured on a 1024² block, one thread, under load: IIC
            # 1.9 s and +24 MiB one by one against 2.8 s and +120 MiB in batches of 8 (1.40 s
            # against 1.44 s on a quiet machine); k-means 0.13 s and +0 MiB against 0.31 s
            # and +36-60 MiB. It also makes a tile's probabilities
            # independent of the batch it came in (k-means' einsum differed in the last bit).
            first = forward(x[:1])
            out = np.empty((len(x), *first.shape[1:]), first.dtype)
            out[0] = first[0]
            for i in range(1, len(x)):
                out[i] = forward(x[i : i + 1])[0]
            return out
        return forward(x)

    def forward(x: np.ndarray) -> np.ndarray:
        xt = torch.from_numpy(np.ascontiguousarray(x)).to(device)
        total = None
        with torch.inference_mode(), torch.autocast(device.type, enabled=amp):
            for k, flip in views:
                # dihedral copies even the identity view (torch.rot90 by 0): kept, since the
                # model fed the caller's array itself gave probabilities differing in the last
                # bit from run to run (k-means, two worker threads; not explained yet)
                out = model(dihedral(xt, k, flip))
                logits = out[head] if isinstance(out, (list, tuple)) else out
                probs = torch.softmax(logits.float(), dim=1)
                probs = undihedral(probs, k, flip) if tta else probs  # (rot90 by 0 copies)
                total = probs if total is None else total + probs
        # dividing by one view would be one more batch-sized copy (and x / 1 == x exactly)
        total = total / len(views) if tta else total
        return total.float().cpu().numpy()

    return segment


# --- small in-memory images -----------------------------------------------------------------


def load_model(model: str | Path | Mapping[str, Any]) -> tuple[Any, Any]:
    """``(Checkpoint, model in eval mode on CPU)`` from a path or an already loaded dict.

    A checkpoint with a few-label head (``geoseg map --head linear``) gives the model with that
    head appended (:func:`geoseg.heads.model.attach`), so predict treats it as one more head.
    """
    from geoseg.checkpoint import Checkpoint
    from geoseg.heads.model import attach

    ckpt = Checkpoint(model) if isinstance(model, Mapping) else Checkpoint.load(model)
    return ckpt, attach(ckpt.build_model(), ckpt)


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
    crop = ckpt.predict_tile if ckpt else None
    default = crop or -(-max(height, width) // multiple) * multiple
    grid = TileGrid.for_prediction(tile_size or int(default), overlap, multiple)
    dev = resolve_device(device)
    model = model.to(dev).eval()
    n_classes = int(model.n_clusters[head])
    (block,) = grid.blocks(height, width, block=max(height, width) * 2)
    segment = segmenter(model, head=head, device=dev, tta=tta)
    return blend_block(
        block,
        image,
        segment,
        tile=grid.size,
        overlap=grid.overlap,
        batch_size=batch_size,
        n_classes=n_classes,
        valid=valid,
        norm=norm,
    )
