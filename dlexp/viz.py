"""Tiled images of filters and samples, in the style of the tutorials' ``tile_raster_images``.

Each row of ``X`` is one image of ``img_shape``; rows are laid out left to
right, top to bottom on a ``tile_shape`` = (rows, cols) grid with
``tile_spacing`` black pixels between tiles, so the output is

    H_out = (h + s_h) * rows - s_h,   W_out = (w + s_w) * cols - s_w

Each tile is scaled to [0, 255] on its own (as the tutorial's
``scale_rows_to_unit_interval=True``), which is what makes filters readable.
"""
import math

import numpy as np
from PIL import Image

from .safe_pickle import atomic_write


def scale_to_unit_interval(a: np.ndarray, eps: float = 1e-8) -> np.ndarray:
    a = a.astype(np.float64) - a.min()
    return a / (a.max() + eps)


def tile_raster_images(X, img_shape, tile_shape, tile_spacing=(1, 1), scale_rows_to_unit_interval=True):
    """uint8 image of the rows of ``X`` (n, h*w) tiled on a (rows, cols) grid."""
    X = np.asarray(X)
    (h, w), (rows, cols), (sh, sw) = img_shape, tile_shape, tile_spacing
    out = np.zeros(((h + sh) * rows - sh, (w + sw) * cols - sw), dtype=np.uint8)
    for k in range(min(len(X), rows * cols)):
        tile = X[k].reshape(h, w)
        tile = scale_to_unit_interval(tile) if scale_rows_to_unit_interval else np.clip(tile, 0, 1)
        r, c = divmod(k, cols)
        out[r * (h + sh):r * (h + sh) + h, c * (w + sw):c * (w + sw) + w] = np.round(tile * 255).astype(np.uint8)
    return out


def grid_shape(n: int):
    """A near-square (rows, cols) grid for n tiles: 100 -> (10, 10), 20 -> (4, 5)."""
    cols = math.ceil(math.sqrt(n))
    return math.ceil(n / cols), cols


def filters_image(filters, img_shape, max_tiles: int = 100):
    """Tile the first ``max_tiles`` filters (one per row) on a near-square grid."""
    filters = np.asarray(filters)[:max_tiles]
    return tile_raster_images(filters, img_shape, grid_shape(len(filters)))


def save_png(image: np.ndarray, path, scale: int = 1) -> None:
    """Write a uint8 image as PNG, atomically, enlarged ``scale`` times (nearest neighbour)."""
    img = Image.fromarray(image)
    if scale > 1:
        img = img.resize((img.width * scale, img.height * scale), Image.NEAREST)
    with atomic_write(path, "wb") as f:
        img.save(f, format="PNG")
