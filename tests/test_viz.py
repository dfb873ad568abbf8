"""Tiled filter images: the grid geometry and per-tile scaling of tile_raster_images."""
import numpy as np
from PIL import Image

from dlexp.viz import filters_image, grid_shape, save_png, tile_raster_images


def test_tile_grid_geometry_and_placement():
    X = np.zeros((6, 4 * 3))
    X[4, 5] = 1.0  # tile 4 -> row 1, col 1 of a (2, 3) grid; pixel (1, 2) inside it
    img = tile_raster_images(X, (4, 3), (2, 3), tile_spacing=(1, 1))
    assert img.shape == ((4 + 1) * 2 - 1, (3 + 1) * 3 - 1) and img.dtype == np.uint8
    bright = np.argwhere(img == 255)
    assert bright.tolist() == [[5 + 1, 4 + 2]]
    assert (img[4, :] == 0).all() and (img[:, 3] == 0).all()  # spacing lines stay black


def test_each_tile_scaled_to_full_range():
    X = np.stack([np.linspace(0, 1, 9), np.linspace(-5, 3, 9)])
    img = tile_raster_images(X, (3, 3), (1, 2), tile_spacing=(0, 0))
    for tile in (img[:, :3], img[:, 3:]):
        assert tile.min() == 0 and tile.max() == 255


def test_grid_shape_near_square():
    assert grid_shape(100) == (10, 10) and grid_shape(20) == (4, 5) and grid_shape(1) == (1, 1)


def test_filters_png_round_trip(tmp_path):
    img = filters_image(np.random.RandomState(0).randn(500, 784), (28, 28))
    assert img.shape == (29 * 10 - 1, 29 * 10 - 1)
    save_png(img, tmp_path / "f.png", scale=2)
    back = np.asarray(Image.open(tmp_path / "f.png"))
    assert back.shape == (2 * img.shape[0], 2 * img.shape[1])
    assert (back[::2, ::2] == img).all()
