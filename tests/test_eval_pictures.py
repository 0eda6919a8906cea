"""Figures 3 and 4: the PNGs decode at the documented size and hold the specified colours."""

import matplotlib
import numpy as np
import pytest
from PIL import Image

from dnet_tf.constants import BOTTOM, FULL, LEFT, RIGHT, TOP
from dnet_tf.evaluation.pictures import (
    draw_detections,
    half_mask_colours,
    plot_precision_recall,
    resize_masks,
)
from dnet_tf.evaluation.voc_ap import evaluate_detections

H, W = 60, 80  # image; masks are 12 x 16 cells, so one cell = 5 x 5 pixels


def _planted_masks():
    m = np.zeros((12, 16, 5), np.float32)
    m[1:4, 1:4, TOP] = 1.0  # image rows 5..20, cols 5..20
    m[1:4, 6:9, BOTTOM] = 1.0  # cols 30..45
    m[7:10, 1:4, LEFT] = 1.0  # rows 35..50
    m[7:10, 6:9, RIGHT] = 1.0
    m[1:4, 11:14, TOP] = 1.0  # top and left together, cols 55..70
    m[1:4, 11:14, LEFT] = 1.0
    m[7:10, 11:14, FULL] = 1.0  # rows 35..50, cols 55..70
    return m


def _rgb(png, r, c):
    return tuple(int(v) for v in png[r, c, :3])


def test_figure3_png_size_and_mask_colours_read_back(tmp_path):
    image = np.full((H, W, 3), 90, np.uint8)
    # One box far from the sampled pixel centres: rows 25..33, cols 20..60.
    path = draw_detections(
        image,
        _planted_masks(),
        np.array([[25.0, 20.0, 33.0, 60.0]]),
        ["cat"],
        [0.87],
        str(tmp_path / "sub" / "fig3.png"),
    )
    png = np.asarray(Image.open(path))
    assert png.shape[:2] == (H, 3 * W)  # three panels of W x H, pixel for pixel

    half = 2 * W  # panel 2: the half masks; centre pixel of each planted region
    assert _rgb(png, 12, half + 12) == (255, 0, 0)  # top -> red
    assert _rgb(png, 12, half + 37) == (0, 255, 0)  # bottom -> green
    assert _rgb(png, 42, half + 12) == (0, 0, 255)  # left -> blue
    assert _rgb(png, 42, half + 37) == (255, 255, 0)  # right -> yellow
    # top + left, both 1: mean colour (255+0, 0+0, 0+255)/2 at brightness 1 -> 127.5 rounds to 128.
    assert _rgb(png, 12, half + 62) == (128, 0, 128)
    assert _rgb(png, 42, half + 62) == (0, 0, 0)  # only the full mask there: no half-mask colour
    assert _rgb(png, 57, half + 2) == (0, 0, 0)  # no mask at all

    jet = matplotlib.colormaps["jet"]
    one = tuple(int(round(v * 255)) for v in jet(1.0)[:3])
    zero = tuple(int(round(v * 255)) for v in jet(0.0)[:3])
    assert _rgb(png, 42, W + 62) == one  # panel 1: full-mask heat map, 1 inside the planted region
    assert _rgb(png, 12, W + 12) == zero  # and 0 where only half masks are set
    assert _rgb(png, 55, 75) == (90, 90, 90)  # panel 0: the image itself away from the box
    # The box outline is drawn on the image panel: green dominates along its left edge (x = 20).
    edge = png[27:32, 19:22, :3].astype(int)
    assert (edge[..., 1] - edge[..., 0]).max() > 60


def test_half_mask_colours_scale_with_strength():
    m = np.zeros((1, 2, 5), np.float32)
    m[0, 0, RIGHT] = 0.5  # half-strength yellow
    m[0, 1, BOTTOM] = 0.2
    m[0, 1, TOP] = 0.6  # hue (0.6 red + 0.2 green) / 0.8, brightness 0.6 -> (114.75, 38.25, 0)
    out = half_mask_colours(m)
    assert tuple(out[0, 0]) == (128, 128, 0)  # 127.5 -> 128
    assert tuple(out[0, 1]) == (115, 38, 0)


def test_resize_masks_keeps_cell_layout():
    # A 2 x 2 mask onto 4 x 4 pixels: cell (0, 1) covers rows 0..2, cols 2..4; corner pixels keep
    # the corner cell's value exactly (bilinear clamps at the border).
    m = np.array([[0.0, 1.0], [0.25, 0.5]], np.float32)[..., None]
    out = resize_masks(m, 4, 4)[..., 0]
    assert out[0, 3] == 1.0 and out[0, 0] == 0.0 and out[3, 0] == 0.25 and out[3, 3] == 0.5
    # Pixel (0, 1) at x = 1.5 px -> cell coordinate 1.5 / 2 - 0.5 = 0.25 between 0 and 1 -> 0.25.
    assert out[0, 1] == pytest.approx(0.25)


def test_figure4_png_size_and_both_curves_drawn(tmp_path):
    # cat: boxes A, B; dog: box D. First stage: A (TP), a miss (FP), D (TP); refined: A, B, D.
    a, b, d, miss = [0, 0, 10, 10], [40, 40, 50, 50], [20, 20, 30, 30], [60, 60, 70, 70]
    gt = [{"boxes_yxyx": np.array([a, b, d]), "classes": np.array([0, 0, 1])}]
    first = [
        {
            "boxes_yxyx": np.array([a, miss, d]),
            "scores": np.array([0.9, 0.8, 0.7]),
            "classes": np.array([0, 0, 1]),
        }
    ]
    refined = [
        {
            "boxes_yxyx": np.array([a, b, d]),
            "scores": np.array([0.9, 0.8, 0.7]),
            "classes": np.array([0, 0, 1]),
        }
    ]
    curves = {
        "first stage": evaluate_detections(gt, first, 2),
        "refined": evaluate_detections(gt, refined, 2),
    }
    path = plot_precision_recall(curves, ["cat", "dog"], str(tmp_path / "fig4.png"), columns=2)
    png = np.asarray(Image.open(path))
    # 3 panels (all classes, cat, dog) in 2 columns -> 2 rows of 300 x 250 px.
    assert png.shape[:2] == (2 * 250, 2 * 300)
    r, g, b = (png[..., k].astype(int) for k in range(3))
    # The two methods' line colours (default cycle): blue #1f77b4 and orange #ff7f0e. Thin lines
    # are anti-aliased against white, so count pixels by hue, not by exact value.
    assert ((b - r > 60) & (b - g > 20)).sum() > 100  # first stage, incl. its drop in the cat panel
    assert ((r - b > 100) & (g - b > 30) & (r - g > 40)).sum() > 100  # refined


def test_bad_inputs_are_refused(tmp_path):
    with pytest.raises(ValueError, match="image must be uint8"):
        draw_detections(
            np.zeros((4, 4, 3), np.float32),
            np.zeros((2, 2, 5)),
            np.zeros((0, 4)),
            [],
            [],
            str(tmp_path / "x.png"),
        )
    with pytest.raises(ValueError, match="different lengths"):
        draw_detections(
            np.zeros((4, 4, 3), np.uint8),
            np.zeros((2, 2, 5)),
            np.zeros((1, 4)),
            [],
            [],
            str(tmp_path / "x.png"),
        )
