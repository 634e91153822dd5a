"""Generated official-format files, for tests and benchmarks with no network.

Each class is a distinct figure (circle, square, triangle, lines, cross,
star, polygons...) drawn as light strokes on black at a random scale, shift
and slight rotation per drawing, so classes differ visibly and a small model
can tell them apart, while no two drawings of a class are identical.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from quickdraw.npy_files import IMAGE_SIZE, PIXELS

_POINTS_PER_UNIT = 40  # Stroke samples per unit length; dense enough at 28 px.


def _polygon(n: int, phase: float = 0.0, star: bool = False) -> np.ndarray:
  angles = phase + np.linspace(0, 2 * np.pi, n + 1)
  radius = np.ones_like(angles)
  if star:
    angles = phase + np.linspace(0, 2 * np.pi, 2 * n + 1)
    radius = np.where(np.arange(2 * n + 1) % 2 == 0, 1.0, 0.45)
  return np.stack([radius * np.cos(angles), radius * np.sin(angles)], -1)


def _strokes(class_id: int) -> list[np.ndarray]:
  """The figure of a class, as polylines in [-1, 1]^2."""
  fixed = [
      [_polygon(48)],                                   # circle
      [_polygon(4, np.pi / 4) * 1.1],                   # square
      [_polygon(3, np.pi / 2)],                         # triangle
      [np.array([[-1.0, 0.0], [1.0, 0.0]])],            # horizontal line
      [np.array([[0.0, -1.0], [0.0, 1.0]])],            # vertical line
      [np.array([[-1.0, -1.0], [1.0, 1.0]]),            # X
       np.array([[-1.0, 1.0], [1.0, -1.0]])],
      [np.array([[-1.0, 0.0], [1.0, 0.0]]),             # plus
       np.array([[0.0, -1.0], [0.0, 1.0]])],
      [_polygon(5, np.pi / 2, star=True)],              # star
  ]
  if class_id < len(fixed):
    return fixed[class_id]
  k = class_id - len(fixed)
  sides = 3 + k % 6
  phase = 0.37 * (k // 6)
  outer = _polygon(sides, phase, star=bool((k // 6) % 2))
  inner = _polygon(3 + (k // 12) % 5, -phase) * 0.4
  return [outer, inner]


def figure_strokes(class_id: int) -> list[np.ndarray]:
  """Class `class_id`'s figure as polylines in [-1, 1]^2 (x right, y down,
  as in the drawings), e.g. for drawing it with a pointer in a browser."""
  return [np.asarray(line, np.float64) for line in _strokes(class_id)]


def _sample_points(strokes: list[np.ndarray]) -> np.ndarray:
  points = []
  for line in strokes:
    for a, b in zip(line[:-1], line[1:]):
      steps = max(2, int(np.linalg.norm(b - a) * _POINTS_PER_UNIT))
      t = np.linspace(0, 1, steps)[:, None]
      points.append(a + t * (b - a))
  return np.concatenate(points)


def make_drawings(class_id: int, num: int, seed: int = 0) -> np.ndarray:
  """Generates `num` drawings of class `class_id`.

  Args:
    class_id: Which figure; any non-negative int gives a distinct one.
    num: How many drawings.
    seed: Seeds the per-drawing jitter.

  Returns:
    uint8 (num, 784): light ink (255) on black (0), like the official files.
  """
  rng = np.random.default_rng([seed, class_id])
  points = _sample_points(_strokes(class_id))  # (P, 2)
  theta = rng.uniform(-0.2, 0.2, num)
  stretch = rng.uniform(0.85, 1.15, (num, 1, 2))
  rot = np.stack([np.stack([np.cos(theta), -np.sin(theta)], -1),
                  np.stack([np.sin(theta), np.cos(theta)], -1)], -2)
  xy = np.einsum("nij,pj->npi", rot, points) * stretch
  # A hand's wobble, so that no two drawings come out alike.
  xy = xy + rng.normal(0, 0.03, xy.shape)
  # Framed like the official bitmaps: the longer side of the ink's box spans
  # 26 of the 28 pixels (24 plus the stamp below), centred.
  low, high = xy.min(1, keepdims=True), xy.max(1, keepdims=True)
  side = np.maximum((high - low).max(-1, keepdims=True), 1e-6)
  xy = (xy - (low + high) / 2) * (24 / side) + (IMAGE_SIZE - 1) / 2 - 0.5
  images = np.zeros((num, IMAGE_SIZE, IMAGE_SIZE), dtype=np.uint8)
  drawing = np.repeat(np.arange(num), len(points))
  # A 2x2 stamp per point gives strokes about as thick as the official ones.
  for dy in (0, 1):
    for dx in (0, 1):
      x = np.clip(np.round(xy[..., 0]).astype(int) + dx, 0, IMAGE_SIZE - 1)
      y = np.clip(np.round(xy[..., 1]).astype(int) + dy, 0, IMAGE_SIZE - 1)
      images[drawing, y.ravel(), x.ravel()] = 255
  return images.reshape(num, PIXELS)


def write_category_files(data_dir: str, categories: Sequence[str],
                         rows_per_class: int | Sequence[int], *,
                         seed: int = 0, layout: str = "official",
                         variants: int | None = None) -> list[str]:
  """Writes official-format `.npy` files for `categories`.

  Args:
    data_dir: Folder to write into (created if missing).
    categories: Names; class i gets figure i.
    rows_per_class: Rows per file, one count or one per category.
    seed: Seeds the drawings.
    layout: "official" names files `<name>.npy`; "gsutil" names them
      `full_numpy_bitmap_<name>.npy`.
    variants: If set, only this many distinct drawings are generated per
      class and repeated to fill the file: large benchmark files in seconds.

  Returns:
    The paths written, in `categories` order.
  """
  if isinstance(rows_per_class, int):
    rows_per_class = [rows_per_class] * len(categories)
  prefix = {"official": "", "gsutil": "full_numpy_bitmap_"}[layout]
  os.makedirs(data_dir, exist_ok=True)
  paths = []
  for class_id, (name, rows) in enumerate(zip(categories, rows_per_class)):
    path = os.path.join(data_dir, f"{prefix}{name}.npy")
    out = np.lib.format.open_memmap(path + ".tmp.npy", mode="w+",
                                    dtype=np.uint8, shape=(rows, PIXELS))
    block = make_drawings(class_id, min(rows, variants or rows), seed)
    for start in range(0, rows, len(block)):
      out[start:start + len(block)] = block[:rows - start]
    out.flush()
    del out
    os.replace(path + ".tmp.npy", path)
    paths.append(path)
  return paths


def render_canvas(class_id: int, size: int, stroke_width: float,
                  extent: float, centre: tuple[float, float],
                  dark_on_light: bool = True, seed: int = 0) -> np.ndarray:
  """Draws class `class_id`'s figure as an app's canvas would hold it.

  The figure's strokes (the ones `make_drawings` rasterises at 28x28) are
  drawn at the canvas's own resolution with round pens of `stroke_width`
  pixels, so a test can feed the canvas model what a phone would: any
  canvas size, stroke width, position and ink polarity.

  Args:
    class_id: Which figure.
    size: Canvas side in pixels.
    stroke_width: Pen width in pixels.
    extent: The figure's longer side, in pixels.
    centre: (x, y) of the figure's centre, in pixels.
    dark_on_light: Black ink on white (True) or white on black.
    seed: Seeds the hand's jitter.

  Returns:
    uint8 (size, size, 3) RGB.
  """
  rng = np.random.default_rng([seed, class_id, 7])
  strokes = _strokes(class_id)
  # Dense enough that round pens overlap into a continuous line.
  spacing = max(stroke_width / 3, 0.5) / extent * 2
  points = []
  for line in strokes:
    for a, b in zip(line[:-1], line[1:]):
      steps = max(2, int(np.linalg.norm(b - a) / spacing))
      t = np.linspace(0, 1, steps)[:, None]
      points.append(a + t * (b - a))
  xy = np.concatenate(points)
  theta = rng.uniform(-0.2, 0.2)
  rot = np.array([[np.cos(theta), -np.sin(theta)],
                  [np.sin(theta), np.cos(theta)]])
  xy = xy @ rot.T
  low, high = xy.min(0), xy.max(0)
  xy = (xy - (low + high) / 2) * (extent / max((high - low).max(), 1e-6))
  xy = xy + np.asarray(centre, np.float64)
  radius = stroke_width / 2
  r = int(np.ceil(radius))
  dy, dx = np.mgrid[-r:r + 1, -r:r + 1]
  disc = dx ** 2 + dy ** 2 <= max(radius, 0.5) ** 2
  dy, dx = dy[disc], dx[disc]
  ink = np.zeros((size, size), bool)
  x = np.round(xy[:, 0]).astype(int)[:, None] + dx[None]
  y = np.round(xy[:, 1]).astype(int)[:, None] + dy[None]
  keep = (x >= 0) & (x < size) & (y >= 0) & (y < size)
  ink[y[keep], x[keep]] = True
  canvas = np.where(ink, 0 if dark_on_light else 255,
                    255 if dark_on_light else 0).astype(np.uint8)
  return np.repeat(canvas[..., None], 3, -1)
