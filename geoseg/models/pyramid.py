"""A fixed multi-scale feature pyramid: what a pixel looks like, and what surrounds it.

Buildings are not a colour: a light roof and a light parking lot share one, a dark roof and a
shadow share another. What separates them is context at the scale of a building: a roof is a
compact, uniform patch brighter (or darker) than its surroundings and bounded by edges, a road
is long and thin, vegetation is textured. This module computes that context without any label
and without training, for every pixel, as torch operations (so it runs inside the model, on the
GPU when there is one, tile by tile like any other network):

- the normalised bands, and for 3+ bands their chromaticity (band / sum), which is invariant to
  illumination and separates grey roofs and roads from soil and vegetation;
- Gaussian-smoothed bands and the local standard deviation of brightness at several scales
  (texture: smooth roofs vs. rough canopy);
- gradient magnitude of brightness (edges bound objects);
- white and black morphological top-hats of brightness with square windows of several sizes:
  a bright (dark) structure smaller than the window stands out, which is the idea of the
  morphological building index (Huang & Zhang 2011) without its directional profiles.

Scales are in pixels and span 1 to 41 px, which covers a house at 0.1 m to 1 m resolution.
:func:`scales_for` restates them in ground units for a scene of known pixel size (today's
pixels at :data:`REFERENCE_GSD`), within an octave either way. The pyramid has no learnt
parameters; it is the "frozen unsupervised feature map" that k-means clusters and that a
few-label head reads (docs/architecture.md).
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

#: Gaussian sigmas (pixels) of the smoothed bands and local standard deviations
SIGMAS = (1.0, 2.0, 4.0, 8.0, 16.0)
#: sigmas of the brightness gradient magnitude
EDGE_SIGMAS = (1.0, 2.0, 4.0)
#: square window sizes (pixels) of the morphological top-hats
TOPHAT_SIZES = (5, 11, 21, 41)
#: ground pixel size (m) at which the pixel scales above are the ground scales: the largest
#: top-hat then spans 20.5 m, wider than a detached house (10-15 m), so a whole roof stands out
#: in it, and the smallest 2.5 m (a shed, roof furniture); 0.5 m is also the middle of the
#: 0.1-1 m range (geometrically: 0.32 m) rounded to the common aerial/satellite product size
REFERENCE_GSD = 0.5
#: bounds of the factor applied to the pixel scales. Below 1/2 the finest blur (sigma 0.5 px)
#: and top-hat (3 px) would reach the pixel and channels would repeat; above 2 the largest
#: top-hat (81 px) outgrows the context a 128 px training tile gives, and its cost (linear in
#: the window) doubles. Beyond them the pyramid stays in pixels at the bound: a coarser scene
#: sees relatively wider context, a finer one narrower (a drone roof is not fully covered).
SCALE_RANGE = (0.5, 2.0)


def default_scales() -> dict[str, list]:
    """The pixel scales of the pyramid as a checkpoint stores them."""
    return {
        "sigmas": list(SIGMAS),
        "edge_sigmas": list(EDGE_SIGMAS),
        "tophat_sizes": list(TOPHAT_SIZES),
    }


def scales_for(pixel_size: float | None) -> dict[str, list]:
    """The pixel scales that span the reference scales' ground extent at ``pixel_size`` metres.

    ``None`` (no georeferencing: a PNG) keeps the pixel scales. The factor
    ``REFERENCE_GSD / pixel_size`` is clamped to :data:`SCALE_RANGE` and applied to every
    scale alike, so the pyramid keeps its shape (no two channels of one scale); top-hat windows
    are rounded to odd sizes, at least 3.
    """
    if pixel_size is None or not pixel_size > 0:
        return default_scales()
    lo, hi = SCALE_RANGE
    f = min(max(REFERENCE_GSD / float(pixel_size), lo), hi)
    return {
        "sigmas": [round(s * f, 4) for s in SIGMAS],
        "edge_sigmas": [round(s * f, 4) for s in EDGE_SIGMAS],
        "tophat_sizes": [max(3, 2 * int(round((w * f - 1) / 2)) + 1) for w in TOPHAT_SIZES],
    }


def check_scales(scales: dict[str, Any] | None) -> dict[str, tuple]:
    """``scales`` (a checkpoint's, None = the pixel scales) as tuples, with as many of each
    as the pyramid has channels for: the feature count must not depend on them."""
    got = default_scales() if scales is None else scales
    out = {}
    for key, ref in default_scales().items():
        values = tuple(got[key])
        if len(values) != len(ref):
            raise ValueError(f"pyramid scales {key} has {len(values)} values, not {len(ref)}")
        out[key] = values
    return out


def n_features(in_channels: int) -> int:
    """Number of feature channels :func:`pyramid` returns for ``in_channels`` bands."""
    colour = in_channels + 1 + (in_channels + 1 if in_channels >= 3 else 0)
    return colour + len(SIGMAS) * (in_channels + 1) + len(EDGE_SIGMAS) + 2 * len(TOPHAT_SIZES)


def _gaussian_kernel(sigma: float, device, dtype) -> torch.Tensor:
    radius = max(1, int(round(3 * sigma)))
    t = torch.arange(-radius, radius + 1, device=device, dtype=dtype)
    k = torch.exp(-0.5 * (t / sigma) ** 2)
    return k / k.sum()


def _blur(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Exact separable Gaussian blur, reflecting at the border (as scipy's default)."""
    k = _gaussian_kernel(sigma, x.device, x.dtype)
    r = k.numel() // 2
    c = x.shape[1]
    # reflect padding needs pad < size; replicate is the safe fallback on tiny tiles
    mode = "reflect" if min(x.shape[-2:]) > r else "replicate"
    x = F.pad(x, (r, r, 0, 0), mode=mode)
    x = F.conv2d(x, k.view(1, 1, 1, -1).expand(c, 1, 1, -1), groups=c)
    x = F.pad(x, (0, 0, r, r), mode=mode)
    return F.conv2d(x, k.view(1, 1, -1, 1).expand(c, 1, -1, 1), groups=c)


def gaussian(x: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of (B, C, H, W); wide blurs are computed on a coarser grid.

    A blur of sigma 16 px has 97 taps; torch's depthwise convolution makes that the cost of the
    whole pyramid on CPU. Blurring by sigma removes the detail that a grid ``sigma / 2`` times
    coarser cannot hold, so the image is box-averaged down by that factor (a power of two),
    blurred by the remaining sigma, and bilinearly upsampled: the standard Gaussian pyramid,
    within a few percent of the exact blur and an order of magnitude cheaper.
    """
    factor = 1
    while sigma / (factor * 2) >= 2.0 and min(x.shape[-2:]) >= factor * 8:
        factor *= 2
    if factor == 1:
        return _blur(x, sigma)
    h, w = x.shape[-2:]
    small = F.avg_pool2d(x, factor, stride=factor, ceil_mode=True)
    # a box of width f has variance (f² - 1) / 12 in fine pixels: remove it from the blur
    rest = max(sigma**2 - (factor**2 - 1) / 12.0, 0.25) ** 0.5 / factor
    small = _blur(small, rest)
    return F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)


def _dilate(x: torch.Tensor, size: int) -> torch.Tensor:
    # a square max filter is separable: rows then columns, 2k comparisons per pixel, not k²
    r = size // 2
    x = F.max_pool2d(F.pad(x, (r, r, 0, 0), mode="replicate"), (1, size), stride=1)
    return F.max_pool2d(F.pad(x, (0, 0, r, r), mode="replicate"), (size, 1), stride=1)


def _erode(x: torch.Tensor, size: int) -> torch.Tensor:
    return -_dilate(-x, size)


def pyramid(x: torch.Tensor, scales: dict[str, Any] | None = None) -> torch.Tensor:
    """Per-pixel features (B, n_features(C), H, W) of a normalised batch (B, C, H, W).

    The input is geoseg's normalised image (clipped to p2–p98, standardised); brightness is the
    band mean. Every output channel is roughly unit scale, so k-means and a linear head see
    comparable features without further standardisation. ``scales`` (:func:`scales_for`)
    replaces the pixel scales; None keeps them.
    """
    sc = check_scales(scales)
    bright = x.mean(1, keepdim=True)
    parts = [x, bright]
    if x.shape[1] >= 3:
        # chromaticity on a positive version of the bands (normalised bands are centred at 0;
        # the p2 clip puts them above about -2.5)
        pos = (x + 3.0).clamp_min(0.0)
        total = pos.sum(1, keepdim=True) + 1e-3
        parts += [pos / total * x.shape[1] - 1.0, pos.amax(1, keepdim=True) / total * 3 - 1.0]
    both = torch.cat([x, bright], 1)
    for sigma in sc["sigmas"]:
        mean = gaussian(both, sigma)
        m1 = mean[:, -1:]
        m2 = gaussian(bright * bright, sigma)
        parts += [mean[:, :-1], (m2 - m1 * m1).clamp_min(0).sqrt()]
    for sigma in sc["edge_sigmas"]:
        g = gaussian(bright, sigma)
        gy = g[..., 2:, :] - g[..., :-2, :]
        gx = g[..., :, 2:] - g[..., :, :-2]
        gy = F.pad(gy, (0, 0, 1, 1), mode="replicate")
        gx = F.pad(gx, (1, 1, 0, 0), mode="replicate")
        parts.append((gx * gx + gy * gy).sqrt() * sigma)
    for size in sc["tophat_sizes"]:
        opening = _dilate(_erode(bright, size), size)
        closing = _erode(_dilate(bright, size), size)
        parts += [bright - opening, closing - bright]
    return torch.cat(parts, 1)
