"""The paper's pictures, drawn with matplotlib (Agg backend) into PNG files.

* Figure 3: an image with its detections, next to the full-mask heat map and the four half masks
  coloured red (top), green (bottom), blue (left) and yellow (right).
* Figure 4: precision-recall curves of the first stage against the refined detections, for all
  classes pooled and for each class.

The mask panels are computed in NumPy (``full_mask_heatmap``, ``half_mask_colours``) and placed on
the figure pixel for pixel (``Figure.figimage``), so the PNG holds exactly those colours: panel k
occupies columns [k W, (k + 1) W) of a (3 W) x H picture.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

import matplotlib
import numpy as np

# The Agg canvas is attached to each Figure explicitly; pyplot (and its global backend choice) is
# never used, so importing this module changes nothing for callers that use pyplot themselves.
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from PIL import Image

from dnet_tf.constants import BOTTOM, FULL, LEFT, NUM_MASK_TYPES, RIGHT, TOP

# RGB of each half mask in the Figure 3 panel (the paper: "red, green, blue and yellow").
HALF_MASK_COLOURS = {
    TOP: (255, 0, 0),
    BOTTOM: (0, 255, 0),
    LEFT: (0, 0, 255),
    RIGHT: (255, 255, 0),
}
DEFAULT_HEATMAP = "jet"  # colour map of the full-mask panel; value 0 -> dark blue, 1 -> dark red
_DPI = 100
# Figure 4: one panel per curve set, this many inches (x _DPI pixels) each.
PR_PANEL_INCHES = (3.0, 2.5)


def resize_masks(masks: np.ndarray, height: int, width: int) -> np.ndarray:
    """Bilinear resize of masks of any resolution to the image's.

    Mask cell (i, j) of an h x w mask covers image rows [i H / h, (i + 1) H / h) (same for
    columns); PIL's bilinear filter samples at cell centres, which matches that layout.
    Args:
      masks: float [h, w, M] values in [0, 1].
      height, width: H, W of the target image.
    Returns:
      float32 [H, W, M], clipped to [0, 1].
    """
    masks = np.asarray(masks, dtype=np.float32)
    if masks.ndim != 3:
        raise ValueError(f"masks must be [h, w, M], got shape {masks.shape}")
    if masks.shape[:2] == (height, width):
        return np.clip(masks, 0.0, 1.0)
    channels = [
        np.asarray(Image.fromarray(masks[..., m], mode="F").resize((width, height), Image.BILINEAR))
        for m in range(masks.shape[-1])
    ]
    return np.clip(np.stack(channels, axis=-1), 0.0, 1.0)


def full_mask_heatmap(full_mask: np.ndarray, cmap: str = DEFAULT_HEATMAP) -> np.ndarray:
    """Heat map of the full mask.

    Args:
      full_mask: float [H, W] in [0, 1].
      cmap: matplotlib colour map name.
    Returns:
      uint8 [H, W, 3] RGB: ``cmap(value)``.
    """
    rgba = matplotlib.colormaps[cmap](np.clip(np.asarray(full_mask, np.float32), 0.0, 1.0))
    return np.round(rgba[..., :3] * 255.0).astype(np.uint8)


def half_mask_colours(masks: np.ndarray) -> np.ndarray:
    """The four half masks as one RGB picture (top red, bottom green, left blue, right yellow).

    Hue is the mask-weighted mean of the four colours, brightness the strongest half mask:
    rgb = max_h(m_h) * sum_h(m_h c_h) / sum_h(m_h); black where all four are 0. So a pixel where
    only the top mask is 1 is pure red, one where top and left are both 1 is (127.5, 0, 127.5).
    Args:
      masks: float [H, W, 5] in [0, 1], mask types in MASK_TYPES order (full is not used).
    Returns:
      uint8 [H, W, 3].
    """
    masks = np.clip(np.asarray(masks, np.float32), 0.0, 1.0)
    if masks.ndim != 3 or masks.shape[-1] != NUM_MASK_TYPES:
        raise ValueError(f"masks must be [H, W, {NUM_MASK_TYPES}], got shape {masks.shape}")
    halves = (TOP, BOTTOM, LEFT, RIGHT)
    weights = masks[..., list(halves)]  # [H, W, 4]
    colours = np.array([HALF_MASK_COLOURS[h] for h in halves], np.float32)  # [4, 3]
    total = weights.sum(-1, keepdims=True)
    mean_colour = (weights @ colours) / np.maximum(total, 1e-12)
    rgb = mean_colour * weights.max(-1, keepdims=True)
    return np.round(np.clip(rgb, 0.0, 255.0)).astype(np.uint8)


def _check_image(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image)
    if image.dtype != np.uint8 or image.ndim != 3 or image.shape[-1] != 3:
        raise ValueError(f"image must be uint8 [H, W, 3], got {image.dtype} {image.shape}")
    return image


def draw_detections(
    image: np.ndarray,
    masks: np.ndarray,
    boxes_image_yxyx: np.ndarray,
    labels: Sequence[str],
    scores: Sequence[float],
    path: str,
    cmap: str = DEFAULT_HEATMAP,
    box_colour: str = "#00ff00",
) -> str:
    """Figure 3: detections over the image, then the full-mask heat map, then the half masks.

    The PNG is (3 W) x H pixels: panel 0 the image, panel 1 ``full_mask_heatmap``, panel 2
    ``half_mask_colours``, each pixel for pixel. Boxes are outlined on all three panels, labels and
    scores written on the image panel.
    Args:
      image: uint8 [H, W, 3] RGB.
      masks: float [h, w, 5] in [0, 1] for one class, MASK_TYPES order, any resolution covering the
        whole image (resized bilinearly to H x W).
      boxes_image_yxyx: float [K, 4] continuous image_yxyx.
      labels: K strings; scores: K floats.
      path: PNG file to write (folders are created).
    Returns:
      path.
    """
    image = _check_image(image)
    height, width = image.shape[:2]
    boxes = np.asarray(boxes_image_yxyx, np.float64).reshape(-1, 4)
    if not len(boxes) == len(labels) == len(scores):
        raise ValueError(
            f"boxes_image_yxyx, labels and scores have different lengths "
            f"({len(boxes)}, {len(labels)}, {len(scores)})"
        )
    full = resize_masks(masks, height, width)
    panels = [image, full_mask_heatmap(full[..., FULL], cmap), half_mask_colours(full)]

    # +0.5 px: Agg truncates the canvas size to int, and W / dpi * dpi can land just below W.
    fig = Figure(figsize=((3 * width + 0.5) / _DPI, (height + 0.5) / _DPI), dpi=_DPI)
    FigureCanvasAgg(fig)
    for k, panel in enumerate(panels):
        # zorder -1: the figure draws its images after its axes at equal zorder, which would hide
        # the boxes.
        fig.figimage(panel, xo=k * width, yo=0, origin="upper", zorder=-1)
        ax = fig.add_axes((k * width / (3 * width + 0.5), 0.0, width / (3 * width + 0.5), 1.0))
        ax.set_xlim(0, width)
        ax.set_ylim(height, 0)
        ax.axis("off")
        ax.patch.set_alpha(0.0)
        for i, (ymin, xmin, ymax, xmax) in enumerate(boxes):
            ax.add_patch(
                Rectangle(
                    (xmin, ymin),
                    xmax - xmin,
                    ymax - ymin,
                    fill=False,
                    edgecolor=box_colour if k == 0 else "white",
                    linewidth=1.0,
                )
            )
            if k == 0:
                # Above the box, or just inside it when the box touches the top edge.
                ax.text(
                    xmin,
                    ymin,
                    f"{labels[i]} {float(scores[i]):.2f}",
                    fontsize=7,
                    color="black",
                    va="bottom" if ymin >= 12 else "top",
                    ha="left",
                    clip_on=True,
                    bbox=dict(facecolor=box_colour, edgecolor="none", pad=1.0),
                )
    _save(fig, path)
    return path


def _save(fig: Figure, path: str) -> None:
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fig.savefig(path, dpi=_DPI, format="png")


def plot_precision_recall(
    curves: Mapping[str, object],
    class_names: Sequence[str],
    path: str,
    columns: int = 4,
    title: str | None = None,
) -> str:
    """Figure 4: precision-recall curves of several methods, pooled and per class.

    Panel 0 shows all classes pooled (``VocResult.pooled_curve``), panel c + 1 class c. Each method
    is one line, its legend entry giving its AP (mAP for the pooled panel). The PNG is
    (columns x 300) x (rows x 250) pixels, rows = ceil((C + 1) / columns).
    Args:
      curves: method name -> VocResult (e.g. {"first stage": r1, "refined": r2}), same classes.
      class_names: C names in class-id order.
      path: PNG file to write.
      columns: panels per row (>= 1).
      title: optional figure title.
    Returns:
      path.
    """
    if columns < 1:
        raise ValueError(f"columns must be >= 1, got {columns}")
    for name, result in curves.items():
        if len(result.per_class) != len(class_names):
            raise ValueError(
                f"curves['{name}'] has {len(result.per_class)} classes, "
                f"class_names has {len(class_names)}"
            )
    panels = len(class_names) + 1
    columns = min(columns, panels)
    rows = -(-panels // columns)
    fig = Figure(figsize=(columns * PR_PANEL_INCHES[0], rows * PR_PANEL_INCHES[1]), dpi=_DPI)
    FigureCanvasAgg(fig)
    for p in range(panels):
        ax = fig.add_subplot(rows, columns, p + 1)
        for name, result in curves.items():
            if p == 0:
                recall, precision = result.pooled_curve()
                label = f"{name} (mAP {_fmt(result.mean_ap)})"
            else:
                c = result.per_class[p - 1]
                recall, precision = c.recall, c.precision
                label = f"{name} (AP {_fmt(c.ap)})"
            # Start each curve at recall 0 with its first precision so a single point shows as a
            # line.
            r = np.concatenate([[0.0], recall]) if len(recall) else np.zeros(0)
            q = np.concatenate([precision[:1], precision]) if len(precision) else np.zeros(0)
            ax.plot(r, q, linewidth=1.2, label=label, drawstyle="steps-post")
        ax.set_title("all classes" if p == 0 else class_names[p - 1], fontsize=9)
        ax.set_xlim(0.0, 1.0)
        ax.set_ylim(0.0, 1.02)
        ax.tick_params(labelsize=7)
        ax.set_xlabel("recall", fontsize=7)
        ax.set_ylabel("precision", fontsize=7)
        ax.grid(True, linewidth=0.3)
        ax.legend(fontsize=6, loc="lower left")
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    _save(fig, path)
    return path


def _fmt(x: float) -> str:
    return "—" if x is None or not np.isfinite(x) else f"{x:.3f}"
