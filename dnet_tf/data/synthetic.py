"""The embedded default dataset: a generated Pascal VOC directory, deterministic by seed.

Nothing is downloaded. Every image is drawn with Pillow and NumPy from its own random stream,
``numpy.random.default_rng([seed, split, index])``, so the same seed writes the same bytes, in any
order and with any number of worker processes.

What the images hold (the cases the paper's five masks exist for, at a scale a small CNN learns
in minutes on a CPU):

- Six object classes, each with its own shape AND its own colour/texture, so either cue tells
  them apart:

  =======  ===========  =================================================  =====================
  class    kind         shape                                              colour / texture
  =======  ===========  =================================================  =====================
  ball     rigid        disc                                               red, shaded sphere
  crate    rigid        axis-aligned rectangle, w/h 0.75..1.33             blue, light grid, rim
  star     rigid        five-pointed star, random rotation                 yellow, orange rim
  ring     rigid        elliptic annulus (a lifebuoy), hole shows the      cyan/white sectors
                        background
  blob     deformable   random smooth closed outline, w/h 0.6..1.6         green, dark spots
  snake    deformable   thick sine-wave band, horizontal or vertical,      magenta, dark bands
                        w/h 2.5..4 (or its inverse)
  =======  ===========  =================================================  =====================

  Hue, saturation and value of each object vary within its class's range.
- 0-6 objects per image; object sizes (the box's longer side over the image side along that
  axis) from 5% to 90% of the image, fewer small ones than large ones (12% below 10%).
- Same-class groups: in ``group_probability`` of the images with room for two or more objects,
  two or three objects of one class touch (boxes share an edge) or overlap (up to a third of the
  smaller side) — at least 20% of all images.
- Partial occlusion (later objects and foreground distractors cover earlier objects) and
  truncation at the image border; each annotated object stays at least ``min_visible`` visible.
- Cluttered textured backgrounds (low-saturation gradients, noise, stripes and dozens of clutter
  shapes) and distractor shapes that belong to no class (triangles, crosses, hexagons, arcs,
  thick lines, outlined frames), some saturated.
- Varied image sizes (sides 200-500 px) and aspect ratios (up to 1.6:1 either way); JPEG
  quality 70-95.

Annotations follow VOC: the box of the *visible* pixels of each object, written 1-based inclusive
(a box covering pixel columns c0..c1 is written xmin = c0 + 1, xmax = c1 + 1); ``truncated`` is 1
when the object runs past the image border; ``difficult`` is always 0 (every object is at least
``min_visible`` visible and is drawn at least 12 px long and 8 px thick, snakes 14 px).
"""

from __future__ import annotations

import colorsys
import concurrent.futures
import dataclasses
import io
import json
import math
import os
import pathlib
import xml.etree.ElementTree as ET  # writing only; parsing goes through defusedxml
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from dnet_tf.core import boxes as core_boxes

# Generation order; training code sorts class names (pipeline.load_class_names).
SYNTHETIC_CLASSES = ("ball", "crate", "star", "ring", "blob", "snake")
SPLITS = ("train", "val", "test")
_SPLIT_STREAM = {"train": 0, "val": 1, "test": 2}
GENERATOR_VERSION = 1
MIN_SNAKE_THICKNESS = 14.0  # px, the snake's box across its body (the band itself is ~60% of it)


@dataclasses.dataclass
class SyntheticConfig:
    """Knobs of the generator; defaults write the team's default dataset."""

    seed: int = 0  # random seed; >= 0
    # Images per split. 600 train images give ~1,700 boxes, enough for the sampler to draw
    # millions of distinct crops; 100 val / 100 test give ~280 boxes each, so a per-class AP
    # rests on ~45 boxes. All 800 images generate in ~10 s on 2 cores.
    num_train: int = 600
    num_val: int = 100
    num_test: int = 100
    min_side: int = 200  # px, shortest image side; >= 64
    max_side: int = 500  # px, longest image side; >= min_side
    max_aspect: float = 1.6  # longest / shortest image side; >= 1
    # P(number of objects = k), k = 0..6
    count_weights: Sequence[float] = (0.05, 0.22, 0.22, 0.18, 0.14, 0.11, 0.08)
    min_object_fraction: float = 0.05  # smallest object side / image side; (0, 1)
    max_object_fraction: float = 0.9  # largest object side / image side; (min, 1]
    small_object_share: float = 0.12  # share of objects below 2 * min_object_fraction; [0, 1]
    group_probability: float = 0.45  # images with >= 2 objects holding a same-class group; [0, 1]
    min_visible: float = (
        0.5  # least visible share of an object's pixels (occlusion, border); (0, 1]
    )
    jpeg_quality: tuple = (70, 95)  # inclusive range of JPEG quality; each in [1, 95]

    def validate(self) -> SyntheticConfig:
        def check(cond, name, msg):
            if not cond:
                raise ValueError(f"synthetic config field '{name}': {msg}")

        check(self.seed >= 0, "seed", "must be >= 0")
        for name in ("num_train", "num_val", "num_test"):
            check(getattr(self, name) >= 0, name, "must be >= 0")
        check(self.min_side >= 64, "min_side", "must be >= 64")
        check(self.max_side >= self.min_side, "max_side", "must be >= min_side")
        check(self.max_aspect >= 1.0, "max_aspect", "must be >= 1")
        check(
            len(self.count_weights) >= 1
            and all(w >= 0 for w in self.count_weights)
            and sum(self.count_weights) > 0,
            "count_weights",
            "must be non-negative, not all 0",
        )
        check(
            0 < self.min_object_fraction < self.max_object_fraction <= 1,
            "min_object_fraction",
            "need 0 < min_object_fraction < max_object_fraction <= 1",
        )
        check(0 <= self.small_object_share <= 1, "small_object_share", "must be in [0, 1]")
        check(0 <= self.group_probability <= 1, "group_probability", "must be in [0, 1]")
        check(0 < self.min_visible <= 1, "min_visible", "must be in (0, 1]")
        lo, hi = self.jpeg_quality
        check(1 <= lo <= hi <= 95, "jpeg_quality", "must be (lo, hi) with 1 <= lo <= hi <= 95")
        return self

    def split_sizes(self) -> dict:
        return {"train": self.num_train, "val": self.num_val, "test": self.num_test}


@dataclasses.dataclass
class SyntheticObject:
    """One annotated object of a generated image.

    box_image_yxyx: the visible pixels' box, continuous absolute [ymin, xmin, ymax, xmax] with
    integer values (pixel (r, c) covers [r, r+1) x [c, c+1)).
    """

    class_name: str
    box_image_yxyx: tuple
    truncated: bool
    visible_fraction: float


# ----------------------------------------------------------------------------- colours & textures


def _hsv(h_deg: float, s: float, v: float) -> np.ndarray:
    r, g, b = colorsys.hsv_to_rgb((h_deg % 360.0) / 360.0, s, v)
    return np.array([r, g, b], np.float32) * 255.0


def _class_colour(
    rng: np.random.Generator, hue_range, sat=(0.6, 1.0), val=(0.6, 1.0)
) -> np.ndarray:
    return _hsv(rng.uniform(*hue_range), rng.uniform(*sat), rng.uniform(*val))


def _grid_yx(h: int, w: int):
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    return (yy + 0.5) / h, (xx + 0.5) / w  # [0, 1] across the patch


def _solid(h: int, w: int, colour: np.ndarray) -> np.ndarray:
    return np.broadcast_to(colour, (h, w, 3)).astype(np.float32)


def _new_mask(h: int, w: int, scale: int = 1):
    m = Image.new("L", (w * scale, h * scale), 0)
    return m, ImageDraw.Draw(m)


# ----------------------------------------------------------------------------- the six classes
# Each renderer takes the patch size (h, w) = the object's box and returns
# (mask uint8 [h, w] with 255 inside, rgb float32 [h, w, 3] in 0..255).


def _render_ball(rng, h, w):
    m, d = _new_mask(h, w)
    d.ellipse([0, 0, w - 1, h - 1], fill=255)
    base = _class_colour(rng, (-12.0, 10.0), sat=(0.7, 1.0), val=(0.65, 1.0))
    yy, xx = _grid_yx(h, w)
    hy, hx = rng.uniform(0.25, 0.45), rng.uniform(0.25, 0.75)  # light source
    dist = np.sqrt((yy - hy) ** 2 + (xx - hx) ** 2)
    shade = np.clip(1.15 - 0.75 * dist, 0.35, 1.15)[..., None]
    rgb = np.clip(base * shade + 90.0 * np.exp(-((dist / 0.12) ** 2))[..., None], 0, 255)
    return np.asarray(m), rgb


def _render_crate(rng, h, w):
    mask = np.full((h, w), 255, np.uint8)
    base = _class_colour(rng, (205.0, 235.0), sat=(0.55, 0.95), val=(0.5, 0.9))
    rgb = _solid(h, w, base).copy()
    yy, xx = _grid_yx(h, w)
    n = int(rng.integers(2, 5))  # grid cells per side
    line = 0.06
    grid = (np.abs(((yy * n) % 1.0) - 0.5) > 0.5 - line) | (
        np.abs(((xx * n) % 1.0) - 0.5) > 0.5 - line
    )
    rgb[grid] = np.clip(base * 0.5 + 140.0, 0, 255)
    rim = (yy < 0.06) | (yy > 0.94) | (xx < 0.06) | (xx > 0.94)
    rgb[rim] = base * 0.35
    return mask, rgb


def _star_points(cx, cy, rx, ry, rotation, inner=0.45, points=5):
    pts = []
    for k in range(2 * points):
        r = 1.0 if k % 2 == 0 else inner
        a = rotation + math.pi * k / points
        pts.append((cx + rx * r * math.sin(a), cy - ry * r * math.cos(a)))
    return pts


def _render_star(rng, h, w):
    m, d = _new_mask(h, w)
    pts = _star_points(
        w / 2, h / 2, w / 2, h / 2, rng.uniform(0, 2 * math.pi / 5), rng.uniform(0.4, 0.55)
    )
    d.polygon(pts, fill=255)
    base = _class_colour(rng, (46.0, 60.0), sat=(0.7, 1.0), val=(0.85, 1.0))
    rim_colour = _class_colour(rng, (22.0, 34.0), sat=(0.8, 1.0), val=(0.6, 0.85))
    rim_img = Image.new("L", (w, h), 0)
    ImageDraw.Draw(rim_img).line(pts + pts[:1], fill=255, width=max(2, int(0.07 * min(h, w))))
    rgb = _solid(h, w, base).copy()
    rgb[np.asarray(rim_img) > 0] = rim_colour
    return np.asarray(m), rgb


def _render_ring(rng, h, w):
    m, d = _new_mask(h, w)
    d.ellipse([0, 0, w - 1, h - 1], fill=255)
    hole = rng.uniform(0.45, 0.62)
    iy, ix = h * (1 - hole) / 2, w * (1 - hole) / 2
    d.ellipse([ix, iy, w - 1 - ix, h - 1 - iy], fill=0)
    base = _class_colour(rng, (170.0, 192.0), sat=(0.65, 1.0), val=(0.7, 1.0))
    light = np.array([245.0, 245.0, 240.0], np.float32)
    yy, xx = _grid_yx(h, w)
    angle = np.arctan2(yy - 0.5, xx - 0.5) + rng.uniform(0, math.pi)
    sectors = (np.floor(angle / (math.pi / 4)) % 2).astype(bool)  # 8 alternating sectors
    rgb = np.where(sectors[..., None], base, light).astype(np.float32)
    return np.asarray(m), rgb


def _render_blob(rng, h, w):
    m, d = _new_mask(h, w)
    theta = np.linspace(0, 2 * math.pi, 48, endpoint=False)
    r = np.ones_like(theta)
    for k in (2, 3, 4, 5):
        r += rng.uniform(0.0, 0.16 if k < 4 else 0.08) * np.cos(
            k * theta + rng.uniform(0, 2 * math.pi)
        )
    px, py = r * np.cos(theta), r * np.sin(theta)
    # Stretch the outline to fill the patch exactly, so the patch is the shape's box.
    px = (px - px.min()) / (px.max() - px.min()) * (w - 1)
    py = (py - py.min()) / (py.max() - py.min()) * (h - 1)
    d.polygon(list(zip(px.tolist(), py.tolist())), fill=255)
    base = _class_colour(rng, (95.0, 140.0), sat=(0.55, 0.95), val=(0.5, 0.9))
    rgb = _solid(h, w, base).copy()
    spots = Image.new("L", (w, h), 0)
    sd = ImageDraw.Draw(spots)
    n_spots = int(rng.integers(4, 12))
    for _ in range(n_spots):
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        rr = rng.uniform(0.04, 0.1) * min(h, w) + 1
        sd.ellipse([cx - rr, cy - rr, cx + rr, cy + rr], fill=255)
    rgb[np.asarray(spots) > 0] = base * 0.45
    return np.asarray(m), rgb


def _render_snake(rng, h, w):
    vertical = h > w
    L, T = (h, w) if vertical else (w, h)  # length along the body, thickness across the box
    body = rng.uniform(0.45, 0.65) * T  # band thickness; the rest of T is the wave's swing
    amp = (T - body) / 2
    freq = rng.uniform(0.7, 1.6)
    phase = rng.uniform(0, 2 * math.pi)
    t = np.linspace(body / 2, L - body / 2, 40)
    s = T / 2 + amp * np.sin(2 * math.pi * freq * t / L + phase)
    m, d = _new_mask(T, L)
    pts = list(zip(t.tolist(), s.tolist()))
    width = max(2, int(round(body)))
    d.line(pts, fill=255, width=width, joint="curve")
    for x, y in (pts[0], pts[-1]):
        rr = body / 2
        d.ellipse([x - rr, y - rr, x + rr, y + rr], fill=255)
    base = _class_colour(rng, (282.0, 318.0), sat=(0.55, 0.95), val=(0.6, 0.95))
    period = rng.uniform(0.5, 1.0) * body + 2
    xx = np.arange(L, dtype=np.float32)[None, :] + rng.uniform(0, period)
    band = (np.floor(xx / period) % 2).astype(bool)
    band = np.broadcast_to(band, (T, L))
    rgb = np.where(band[..., None], base * 0.35, base).astype(np.float32)
    mask = np.asarray(m)
    if vertical:
        mask, rgb = mask.T, np.transpose(rgb, (1, 0, 2))
    return np.ascontiguousarray(mask), np.ascontiguousarray(rgb)


_RENDERERS: dict = {
    "ball": _render_ball,
    "crate": _render_crate,
    "star": _render_star,
    "ring": _render_ring,
    "blob": _render_blob,
    "snake": _render_snake,
}


def _class_aspect(rng, name: str) -> float:
    """Box aspect ratio w / h of a new object of the class."""
    if name in ("ball", "star"):
        return float(np.exp(rng.uniform(-0.05, 0.05)))
    if name == "crate":
        return float(np.exp(rng.uniform(math.log(0.75), math.log(1.33))))
    if name == "ring":
        return float(np.exp(rng.uniform(math.log(0.7), math.log(1.4))))
    if name == "blob":
        return float(np.exp(rng.uniform(math.log(0.6), math.log(1.6))))
    a = rng.uniform(2.5, 4.0)  # snake
    return float(a if rng.uniform() < 0.5 else 1.0 / a)


# ----------------------------------------------------------------------------- background &
# distractors


def _background(rng, h, w) -> np.ndarray:
    """Low-saturation textured clutter, float32 [h, w, 3] in 0..255."""
    c0 = _hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.3), rng.uniform(0.25, 0.8))
    c1 = _hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.3), rng.uniform(0.25, 0.8))
    ys = ((np.arange(h, dtype=np.float32) + 0.5) / h)[:, None]  # [h, 1]
    xs = ((np.arange(w, dtype=np.float32) + 0.5) / w)[None, :]  # [1, w]
    a = rng.uniform(0, 2 * math.pi)
    t = np.clip(
        0.5 + np.float32(math.cos(a)) * (xs - 0.5) + np.float32(math.sin(a)) * (ys - 0.5), 0, 1
    )
    # Grey-level modulation shared by the three channels, built as one [h, w] field.
    # Value noise: a coarse random field upsampled smoothly.
    gh, gw = int(rng.integers(4, 16)), int(rng.integers(4, 16))
    coarse = (rng.uniform(-1, 1, (gh, gw)) * 127 + 128).astype(np.uint8)
    field = np.asarray(Image.fromarray(coarse).resize((w, h), Image.BICUBIC), np.float32) - 128.0
    field *= np.float32(rng.uniform(0.1, 0.35))
    kind = rng.integers(0, 3)
    if kind == 1:  # faint stripes
        period = rng.uniform(6, 30)
        b = math.cos(rng.uniform(0, math.pi))
        s = math.sqrt(1.0 - b * b)
        phase = (xs * np.float32(w * b) + ys * np.float32(h * s)) * np.float32(2 * math.pi / period)
        field += 12.0 * np.sin(phase)
    elif kind == 2:  # faint checker
        cell = rng.uniform(10, 40)
        chk = ((np.floor(xs * (w / cell)) + np.floor(ys * (h / cell))) % 2) * 2 - 1
        field += 10.0 * chk
    field += rng.standard_normal((h, w), dtype=np.float32) * 4.0  # sensor-like grain
    c0, c1 = c0.astype(np.float32), c1.astype(np.float32)
    img = c0 + t[..., None] * (c1 - c0) + field[..., None]
    pil = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(pil)
    side = min(h, w)
    for _ in range(int(rng.integers(15, 45))):  # clutter: muted shapes of all kinds
        col = tuple(
            int(v) for v in _hsv(rng.uniform(0, 360), rng.uniform(0.0, 0.35), rng.uniform(0.2, 0.9))
        )
        cx, cy = rng.uniform(0, w), rng.uniform(0, h)
        r = rng.uniform(0.02, 0.15) * side
        kind = rng.integers(0, 4)
        if kind == 0:
            draw.rectangle([cx - r, cy - r * rng.uniform(0.3, 1.5), cx + r, cy + r], fill=col)
        elif kind == 1:
            draw.ellipse([cx - r, cy - r * rng.uniform(0.3, 1.0), cx + r, cy + r], fill=col)
        elif kind == 2:
            draw.line(
                [cx, cy, cx + rng.uniform(-3, 3) * r, cy + rng.uniform(-3, 3) * r],
                fill=col,
                width=int(rng.integers(1, 5)),
            )
        else:
            pts = [
                (cx + r * rng.uniform(-1, 1), cy + r * rng.uniform(-1, 1))
                for _ in range(int(rng.integers(3, 6)))
            ]
            draw.polygon(pts, fill=col)
    if rng.uniform() < 0.5:
        pil = pil.filter(
            ImageFilter.BoxBlur(1)
        )  # soften the clutter edges (cheaper than a Gaussian)
    return np.asarray(pil, np.float32)


def _render_distractor(rng, h, w):
    """A shape of no class: triangle, cross, hexagon, arc, thick line or outlined frame."""
    m, d = _new_mask(h, w)
    kind = int(rng.integers(0, 6))
    if kind == 0:
        d.polygon([(rng.uniform(0, w), 0), (w - 1, h - 1), (0, h - 1)], fill=255)
    elif kind == 1:
        t = rng.uniform(0.2, 0.35)
        d.rectangle([w * (0.5 - t / 2), 0, w * (0.5 + t / 2), h - 1], fill=255)
        d.rectangle([0, h * (0.5 - t / 2), w - 1, h * (0.5 + t / 2)], fill=255)
    elif kind == 2:
        pts = [
            (w / 2 + (w / 2 - 1) * math.cos(a), h / 2 + (h / 2 - 1) * math.sin(a))
            for a in np.linspace(0, 2 * math.pi, 6, endpoint=False) + rng.uniform(0, 1)
        ]
        d.polygon(pts, fill=255)
    elif kind == 3:
        start = rng.uniform(0, 360)
        d.arc(
            [0, 0, w - 1, h - 1],
            start,
            start + rng.uniform(90, 200),
            fill=255,
            width=max(2, int(0.12 * min(h, w))),
        )
    elif kind == 4:
        d.line(
            [0, rng.uniform(0, h), w - 1, rng.uniform(0, h)], fill=255, width=max(2, int(0.15 * h))
        )
    else:
        d.rectangle([0, 0, w - 1, h - 1], outline=255, width=max(2, int(0.1 * min(h, w))))
    saturated = rng.uniform() < 0.35
    colour = _hsv(
        rng.uniform(0, 360),
        rng.uniform(0.6, 1.0) if saturated else rng.uniform(0.0, 0.3),
        rng.uniform(0.3, 0.95),
    )
    return np.asarray(m), _solid(h, w, colour)


# ----------------------------------------------------------------------------- composition


class _Canvas:
    """The image being composed, with a per-pixel owner map to track what stays visible."""

    def __init__(self, rgb: np.ndarray):
        self.rgb = rgb
        self.h, self.w = rgb.shape[:2]
        self.owner = np.full((self.h, self.w), -1, np.int16)  # object index, -1 = none
        self.total = []  # object index -> pixels of its full shape (inside and outside the image)
        self.visible = []  # object index -> pixels of it still visible

    def window(self, y0: int, x0: int, mh: int, mw: int):
        ys, xs = max(0, y0), max(0, x0)
        ye, xe = min(self.h, y0 + mh), min(self.w, x0 + mw)
        if ys >= ye or xs >= xe:
            return None
        return (slice(ys, ye), slice(xs, xe)), (slice(ys - y0, ye - y0), slice(xs - x0, xe - x0))

    def fits(self, mask: np.ndarray, y0: int, x0: int, min_visible: float, is_object: bool) -> bool:
        """Whether drawing ``mask`` at (y0, x0) keeps it and every object >= min_visible visible."""
        win = self.window(y0, x0, *mask.shape)
        if win is None:
            return False
        img_sl, m_sl = win
        inside = mask[m_sl] > 127
        if is_object and inside.sum() < min_visible * max(1, int((mask > 127).sum())):
            return False
        covered = self.owner[img_sl][inside]
        covered = covered[covered >= 0]
        if covered.size == 0:
            return True
        hidden = np.bincount(covered, minlength=len(self.total))
        for k in np.nonzero(hidden)[0]:
            if self.visible[k] - hidden[k] < min_visible * self.total[k]:
                return False
        return True

    def paste(self, mask: np.ndarray, rgb: np.ndarray, y0: int, x0: int, owner_id: int) -> None:
        win = self.window(y0, x0, *mask.shape)
        if win is None:
            return
        img_sl, m_sl = win
        alpha = (mask[m_sl].astype(np.float32) / 255.0)[..., None]
        self.rgb[img_sl] = self.rgb[img_sl] * (1 - alpha) + rgb[m_sl] * alpha
        inside = mask[m_sl] > 127
        owners = self.owner[img_sl]
        hidden = owners[inside]
        hidden = np.bincount(hidden[hidden >= 0], minlength=len(self.visible))
        for k in np.nonzero(hidden)[0]:
            self.visible[k] -= int(hidden[k])
        owners[inside] = owner_id
        if owner_id >= 0:
            self.visible[owner_id] += int(inside.sum())

    def add_object(self, mask, rgb, y0, x0) -> int:
        k = len(self.total)
        self.total.append(int((mask > 127).sum()))
        self.visible.append(0)
        self.paste(mask, rgb, y0, x0, k)
        return k


def _object_size(
    rng, cfg: SyntheticConfig, img_h, img_w, aspect, s_max, allow_small=True, min_short: float = 8.0
) -> tuple:
    """Box (h, w) in px: longer side = s x the image side along that axis."""
    lo = cfg.min_object_fraction
    if allow_small and rng.uniform() < cfg.small_object_share:
        s = math.exp(rng.uniform(math.log(lo), math.log(2 * lo)))
    elif rng.uniform() < 0.5:  # log-uniform: many medium-small objects
        s = math.exp(rng.uniform(math.log(min(2 * lo, s_max)), math.log(s_max)))
    else:  # uniform: large objects well represented
        s = rng.uniform(min(2 * lo, s_max), s_max)
    if aspect >= 1:
        bw = s * img_w
        bh = bw / aspect
    else:
        bh = s * img_h
        bw = bh * aspect
    shrink = min(1.0, 0.95 * img_h / bh, 0.95 * img_w / bw)
    bh, bw = bh * shrink, bw * shrink
    # Never below 12 px on the longer side or min_short px on the shorter (a thin 5% snake
    # would otherwise be 4 px thick: no detector sees that at the network's input resolution).
    grow = max(1.0, 12.0 / max(bh, bw), min_short / min(bh, bw))
    return int(round(bh * grow)), int(round(bw * grow))


def _place_free(rng, img_h, img_w, bh, bw):
    """Top-left corner anywhere, up to 40% of the box past the border (truncation)."""
    y0 = rng.uniform(-0.4 * bh, img_h - 0.6 * bh)
    x0 = rng.uniform(-0.4 * bw, img_w - 0.6 * bw)
    return int(round(y0)), int(round(x0))


def _place_next_to(rng, anchor, bh, bw):
    """Top-left corner of a box touching (gap 0) or overlapping the anchor box (y0, x0, h, w)."""
    ay, ax, ah, aw = anchor
    overlap = 0.0 if rng.uniform() < 0.4 else rng.uniform(0.0, 0.33) * min(bh, bw, ah, aw)
    side = int(rng.integers(0, 4))
    slide = rng.uniform(-0.3, 0.3)
    if side == 0:  # right of the anchor
        return int(round(ay + slide * ah)), int(round(ax + aw - overlap))
    if side == 1:  # left
        return int(round(ay + slide * ah)), int(round(ax - bw + overlap))
    if side == 2:  # below
        return int(round(ay + ah - overlap)), int(round(ax + slide * aw))
    return int(round(ay - bh + overlap)), int(round(ax + slide * aw))  # above


def _sample_image_size(rng, cfg: SyntheticConfig) -> tuple:
    long_side = rng.uniform(max(cfg.min_side, 0.7 * cfg.max_side), cfg.max_side)
    aspect = rng.uniform(1.0, cfg.max_aspect)
    short_side = max(cfg.min_side, long_side / aspect)
    h, w = (long_side, short_side) if rng.uniform() < 0.4 else (short_side, long_side)
    return int(round(h)), int(round(w))


def generate_image(rng: np.random.Generator, cfg: SyntheticConfig):
    """Draws one image and its annotations.

    Returns:
      (rgb uint8 [H, W, 3], list of SyntheticObject with visible boxes in image_yxyx).
    """
    h, w = _sample_image_size(rng, cfg)
    canvas = _Canvas(_background(rng, h, w))
    weights = np.asarray(cfg.count_weights, np.float64)
    count = int(rng.choice(len(weights), p=weights / weights.sum()))
    # Largest object side for this many objects: 0.9 alone, ~0.78 for two, ~0.45 for six.
    s_max = (
        cfg.max_object_fraction
        if count <= 1
        else min(cfg.max_object_fraction, 1.1 / math.sqrt(count))
    )

    # Plan: a same-class group first (2-3 objects), then independent objects.
    plan = []  # (class name, group id or None)
    if count >= 2 and rng.uniform() < cfg.group_probability:
        name = SYNTHETIC_CLASSES[int(rng.integers(len(SYNTHETIC_CLASSES)))]
        size = min(count, int(rng.integers(2, 4)))
        plan += [(name, 0)] * size
    while len(plan) < count:
        plan.append((SYNTHETIC_CLASSES[int(rng.integers(len(SYNTHETIC_CLASSES)))], None))

    # Background distractors (no class), drawn under the objects.
    n_distractors = int(rng.integers(1, 5))
    n_front = int(rng.integers(0, 2))
    for _ in range(n_distractors - n_front):
        dh, dw = (int(rng.uniform(0.06, 0.3) * h), int(rng.uniform(0.06, 0.3) * w))
        dm, drgb = _render_distractor(rng, max(dh, 6), max(dw, 6))
        y0, x0 = _place_free(rng, h, w, *dm.shape)
        canvas.paste(dm, drgb, y0, x0, -1)

    objects = []  # (name, object index, y0, x0, mh, mw)
    group_anchor = None
    group_size = None
    for name, group in plan:
        aspect = _class_aspect(rng, name)
        if group is not None and group_size is not None:
            bh, bw = group_size  # group members are about the same size
            jitter = math.exp(rng.uniform(-0.15, 0.15))
            bh, bw = max(3, int(bh * jitter)), max(3, int(bw * jitter))
            if name == "snake":  # keep the member's orientation random, size alike
                bh, bw = (bw, bh) if (aspect > 1) != (bw > bh) else (bh, bw)
        else:
            # A group's first member sets the members' size: at most 0.45 of the image so that
            # two or three fit, and not from the small-object tail, so that each member spans
            # several mask cells at the finest inference scale.
            group_s_max = s_max if group is None else min(s_max, 0.45)
            bh, bw = _object_size(
                rng,
                cfg,
                h,
                w,
                aspect,
                group_s_max,
                allow_small=group is None,
                min_short=MIN_SNAKE_THICKNESS if name == "snake" else 8.0,
            )
        mask, rgb = _RENDERERS[name](rng, bh, bw)
        for _attempt in range(12):
            if group is not None and group_anchor is not None:
                y0, x0 = _place_next_to(rng, group_anchor, bh, bw)
            else:
                y0, x0 = _place_free(rng, h, w, bh, bw)
            if canvas.fits(mask, y0, x0, cfg.min_visible, is_object=True):
                k = canvas.add_object(mask, rgb, y0, x0)
                objects.append((name, k, y0, x0, bh, bw))
                if group is not None:
                    group_anchor = (y0, x0, bh, bw)
                    group_size = group_size or (bh, bw)
                break

    # Foreground distractors: partial occluders that keep every object >= min_visible visible.
    for _ in range(n_front):
        dh, dw = (int(rng.uniform(0.05, 0.2) * h), int(rng.uniform(0.05, 0.2) * w))
        dm, drgb = _render_distractor(rng, max(dh, 6), max(dw, 6))
        for _attempt in range(6):
            y0, x0 = _place_free(rng, h, w, *dm.shape)
            if canvas.fits(dm, y0, x0, cfg.min_visible, is_object=False):
                canvas.paste(dm, drgb, y0, x0, -1)
                break

    annotations = []
    for name, k, y0, x0, bh, bw in objects:
        win = canvas.window(y0, x0, bh, bw)
        if win is None:
            continue
        (ys, xs), _ = win
        mine = canvas.owner[ys, xs] == k
        rows, cols = np.nonzero(mine.any(axis=1))[0], np.nonzero(mine.any(axis=0))[0]
        if rows.size == 0:
            continue
        box = (
            ys.start + int(rows[0]),
            xs.start + int(cols[0]),
            ys.start + int(rows[-1]) + 1,
            xs.start + int(cols[-1]) + 1,
        )
        truncated = y0 < 0 or x0 < 0 or y0 + bh > h or x0 + bw > w
        visible = float(mine.sum()) / max(1, canvas.total[k])
        annotations.append(SyntheticObject(name, box, bool(truncated), visible))
    return np.clip(canvas.rgb, 0, 255).astype(np.uint8), annotations


# ----------------------------------------------------------------------------- VOC writing


def voc_xml(
    filename: str,
    height: int,
    width: int,
    objects: Sequence[SyntheticObject],
    folder: str = "synthetic",
) -> str:
    """Pascal VOC annotation text; boxes written 1-based inclusive from continuous image_yxyx."""
    root = ET.Element("annotation")
    ET.SubElement(root, "folder").text = folder
    ET.SubElement(root, "filename").text = filename
    source = ET.SubElement(root, "source")
    ET.SubElement(source, "database").text = "dnet-tf synthetic"
    size = ET.SubElement(root, "size")
    ET.SubElement(size, "width").text = str(width)
    ET.SubElement(size, "height").text = str(height)
    ET.SubElement(size, "depth").text = "3"
    ET.SubElement(root, "segmented").text = "0"
    for obj in objects:
        # Continuous -> VOC 1-based inclusive (whole pixels: the visible pixels' box).
        voc = core_boxes.yxyx_to_voc(np.asarray(obj.box_image_yxyx, np.float64))
        o = ET.SubElement(root, "object")
        ET.SubElement(o, "name").text = obj.class_name
        ET.SubElement(o, "pose").text = "Unspecified"
        ET.SubElement(o, "truncated").text = str(int(obj.truncated))
        ET.SubElement(o, "difficult").text = "0"
        bb = ET.SubElement(o, "bndbox")
        for tag, value in zip(("xmin", "ymin", "xmax", "ymax"), voc):
            ET.SubElement(bb, tag).text = str(int(value))
    ET.indent(root, space="  ")
    return ET.tostring(root, encoding="unicode") + "\n"


def image_rng(seed: int, split: str, index: int) -> np.random.Generator:
    """The random stream of one image: independent of every other image and of generation order."""
    return np.random.default_rng([GENERATOR_VERSION, seed, _SPLIT_STREAM[split], index])


def _make_one(args) -> tuple:
    cfg, split, index = args
    rng = image_rng(cfg.seed, split, index)
    rgb, objects = generate_image(rng, cfg)
    quality = int(rng.integers(cfg.jpeg_quality[0], cfg.jpeg_quality[1] + 1))
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)
    image_id = f"{split}_{index:05d}"
    xml = voc_xml(f"{image_id}.jpg", rgb.shape[0], rgb.shape[1], objects)
    return image_id, buf.getvalue(), xml, len(objects)


def write_synthetic_voc(
    out_dir, cfg: SyntheticConfig | None = None, workers: int | None = None, progress: bool = True
) -> dict:
    """Writes the dataset as a VOC directory: JPEGImages/, Annotations/, ImageSets/Main/<split>.txt.

    Args:
      out_dir: target directory (created; files of the same names are overwritten).
      cfg: generator settings; defaults to SyntheticConfig().
      workers: processes drawing images; default min(2, cpu count). The output does not depend
        on it.
      progress: show a tqdm bar.
    Returns:
      summary dict: {"images": {split: n}, "objects": {split: n}, "classes": [...], "seed": ...},
      also written as <out_dir>/synthetic.json.
    """
    from tqdm import tqdm

    cfg = (cfg or SyntheticConfig()).validate()
    out = pathlib.Path(out_dir)
    for sub in ("JPEGImages", "Annotations", "ImageSets/Main"):
        (out / sub).mkdir(parents=True, exist_ok=True)
    jobs = [(cfg, split, i) for split in SPLITS for i in range(cfg.split_sizes()[split])]
    workers = workers or min(2, os.cpu_count() or 1)
    ids = {s: [] for s in SPLITS}
    n_obj = {s: 0 for s in SPLITS}

    def consume(results):
        for image_id, jpeg, xml, n in tqdm(
            results, total=len(jobs), disable=not progress, desc="synthetic", unit="img"
        ):
            (out / "JPEGImages" / f"{image_id}.jpg").write_bytes(jpeg)
            (out / "Annotations" / f"{image_id}.xml").write_text(xml)
            split = image_id.rsplit("_", 1)[0]
            ids[split].append(image_id)
            n_obj[split] += n

    if workers > 1 and len(jobs) > 1:
        with concurrent.futures.ProcessPoolExecutor(workers) as pool:
            consume(pool.map(_make_one, jobs, chunksize=8))
    else:
        consume(map(_make_one, jobs))
    for split in SPLITS:
        (out / "ImageSets" / "Main" / f"{split}.txt").write_text(
            "".join(f"{i}\n" for i in ids[split])
        )
    summary = {
        "generator_version": GENERATOR_VERSION,
        "seed": cfg.seed,
        "classes": list(SYNTHETIC_CLASSES),
        "images": {s: len(ids[s]) for s in SPLITS},
        "objects": n_obj,
        "config": {
            k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()
        },
    }
    (out / "synthetic.json").write_text(json.dumps(summary, indent=2, sort_keys=True) + "\n")
    return summary


def draw_preview(
    voc_dir, image_ids: Sequence[str], out_path, columns: int = 3, tile: int = 300
) -> None:
    """Saves a grid of images with their annotated boxes and class names (PNG).

    Args:
      voc_dir: a VOC directory; image_ids: which images; out_path: the PNG written.
      tile: px per grid cell side (images are scaled to fit); columns: grid width.
    """
    from dnet_tf.data.voc import parse_voc_xml

    root = pathlib.Path(voc_dir)
    rows = math.ceil(len(image_ids) / columns)
    sheet = Image.new("RGB", (columns * tile, rows * tile), (255, 255, 255))
    colours = {}
    palette = [
        (255, 255, 255),
        (255, 255, 0),
        (0, 255, 0),
        (255, 0, 255),
        (0, 255, 255),
        (255, 128, 0),
    ]
    for n, image_id in enumerate(image_ids):
        rec = parse_voc_xml(root / "Annotations" / f"{image_id}.xml", root / "JPEGImages")
        img = Image.open(rec.image_path).convert("RGB")
        scale = min(tile / img.width, tile / img.height) * 0.98
        img = img.resize((int(img.width * scale), int(img.height * scale)), Image.BILINEAR)
        draw = ImageDraw.Draw(img)
        for (ymin, xmin, ymax, xmax), name in zip(rec.boxes_image_yxyx, rec.class_names):
            col = colours.setdefault(name, palette[len(colours) % len(palette)])
            draw.rectangle(
                [xmin * scale, ymin * scale, xmax * scale - 1, ymax * scale - 1],
                outline=(0, 0, 0),
                width=3,
            )
            draw.rectangle(
                [xmin * scale, ymin * scale, xmax * scale - 1, ymax * scale - 1],
                outline=col,
                width=1,
            )
            draw.text(
                (xmin * scale + 2, ymin * scale + 1),
                name,
                fill=col,
                stroke_width=2,
                stroke_fill=(0, 0, 0),
            )
        r, c = divmod(n, columns)
        sheet.paste(img, (c * tile + (tile - img.width) // 2, r * tile + (tile - img.height) // 2))
    pathlib.Path(out_path).parent.mkdir(parents=True, exist_ok=True)
    # A 256-colour palette keeps the PNG small enough to commit (~4x smaller than RGB).
    sheet.quantize(256, method=Image.Quantize.FASTOCTREE, dither=Image.Dither.FLOYDSTEINBERG).save(
        out_path, optimize=True
    )
