"""Drawing doodles again with an app's pen: no TensorFlow, so that worker
processes can draw.

A QuickDraw drawing's centre line (`centre_lines`) is drawn again with a
round, anti-aliased pen (`draw_with_pen`) and painted in an app's theme
(`paint`, `THEMES`). Drawing is the slow part of every pen-drawn canvas
(about 3 ms each at 128 px, in Python, numpy, scikit-image and PIL, mostly
holding the GIL), and a run draws thousands: the training pool's re-draws
(`redraws`), calibration's and the checks' canvases (`canvases.pen_suite`).
`draw` spreads them over the machine's cores in forked worker processes,
which run this module's code alone, never TensorFlow's.
"""

from __future__ import annotations

import collections
import dataclasses
import multiprocessing
import os
import sys
from collections.abc import Iterator, Sequence
from concurrent import futures

import numpy as np
from absl import logging


@dataclasses.dataclass(frozen=True)
class Theme:
  """How an app paints its canvas: paper and ink colours (RGB), and how much
  darker a shadow or vignette makes the corners (0: none)."""
  paper: tuple[int, int, int]
  ink: tuple[int, int, int]
  vignette: float = 0.0


def _hex(colour: str) -> tuple[int, int, int]:
  return tuple(int(colour[i:i + 2], 16) for i in (1, 3, 5))


# Canvases apps paint: Android's light and dark themes, grey themes, a pen
# on coloured paper, and a photographed page's vignette.
THEMES = {
    "white": Theme(_hex("#FFFFFF"), _hex("#000000")),
    "dark": Theme(_hex("#121212"), _hex("#FFFFFF")),
    "light_grey": Theme(_hex("#E0E0E0"), _hex("#202020")),
    "dark_grey": Theme(_hex("#303030"), _hex("#E0E0E0")),
    "blue_on_cream": Theme(_hex("#FFF8E1"), _hex("#1E4FC8")),
    "blue_on_yellow": Theme(_hex("#FFF176"), _hex("#283593")),
    "red_on_black": Theme(_hex("#000000"), _hex("#E53935")),
    "vignette": Theme(_hex("#F5F5F5"), _hex("#202020"), vignette=0.3),
}


def paint(ink: np.ndarray, theme: Theme, levels: int | None = None
          ) -> np.ndarray:
  """Ink coverage (H, W) in [0, 1] -> uint8 (H, W, 3) canvas in `theme`.

  Partial coverage blends the colours, as an anti-aliased pen does.
  `levels`: the coverage is a multiple of 1 / levels (`draw_with_pen`'s
  is of 1 / supersample**2); each level's colour is then computed once,
  by the same arithmetic, and looked up (a fifth of the time at 256 px).
  """
  ink = np.asarray(ink, np.float32)
  if levels and not theme.vignette:
    table = _blend(np.arange(levels + 1, dtype=np.float32) / levels, theme)
    return table[np.rint(ink * levels).astype(np.intp)]
  return _blend(ink, theme)


def _blend(ink: np.ndarray, theme: Theme) -> np.ndarray:
  ink = ink[..., None]
  paper = np.asarray(theme.paper, np.float32)
  canvas = paper * (1 - ink) + np.asarray(theme.ink, np.float32) * ink
  if theme.vignette:
    h, w = ink.shape[:2]
    y, x = np.meshgrid(np.linspace(-1, 1, h), np.linspace(-1, 1, w),
                       indexing="ij")
    canvas *= (1 - theme.vignette * (x * x + y * y) / 2)[..., None]
  return np.clip(np.round(canvas), 0, 255).astype(np.uint8)


def upsample(drawing: np.ndarray, upscale: int) -> np.ndarray:
  """float32 (28, 28) -> (28 * upscale,) * 2, bilinear with half-pixel
  centres: `tf.image.resize`'s arithmetic, float32 step by step (at
  upscale 4 every value is a multiple of 1/64 below 256, so exact; the
  tests compare it with TensorFlow's)."""
  side = drawing.shape[0] * upscale
  scale = np.float32(drawing.shape[0]) / np.float32(side)
  source = (np.arange(side, dtype=np.float32) + np.float32(0.5)) * scale - (
      np.float32(0.5))
  floor = np.floor(source)
  lerp = (source - floor).astype(np.float32)
  low = np.maximum(floor, 0).astype(np.intp)
  high = np.minimum(np.ceil(source), drawing.shape[0] - 1).astype(np.intp)
  top, bottom = drawing[low], drawing[high]
  x = lerp[None, :]
  top = top[:, low] + (top[:, high] - top[:, low]) * x
  bottom = bottom[:, low] + (bottom[:, high] - bottom[:, low]) * x
  return top + (bottom - top) * lerp[:, None]


def centre_lines(drawing: np.ndarray, upscale: int = 4) -> np.ndarray:
  """A 28x28 drawing's strokes as the centre line a pen traced.

  The drawing is upsampled, its ink (above 35% of full strength) thinned
  to a one-pixel skeleton (scikit-image), and each pair of neighbouring
  skeleton pixels becomes a segment; a lone pixel becomes a dot.

  Args:
    drawing: uint8 (784,) or (28, 28), light ink on black.
    upscale: How finely the centre line follows the strokes.

  Returns:
    float32 (n, 4) segments (y0, x0, y1, x1) in the drawing's pixel units
    (0 to 28), n >= 0.
  """
  from skimage.morphology import skeletonize  # only for pen-drawn canvases
  big = upsample(np.asarray(drawing, np.float32).reshape(28, 28), upscale)
  skeleton = skeletonize(big >= 0.35 * 255)
  ys, xs = np.nonzero(skeleton)
  segments = []
  padded = np.pad(skeleton, 1)
  # Each neighbour pair once: right, down, and both downward diagonals.
  for dy, dx in ((0, 1), (1, 0), (1, 1), (1, -1)):
    linked = padded[ys + 1 + dy, xs + 1 + dx]
    segments.append(np.stack([ys[linked], xs[linked], ys[linked] + dy,
                              xs[linked] + dx], 1))
  lone = ~(padded[ys, xs] | padded[ys, xs + 1] | padded[ys, xs + 2]
           | padded[ys + 1, xs] | padded[ys + 1, xs + 2] | padded[ys + 2, xs]
           | padded[ys + 2, xs + 1] | padded[ys + 2, xs + 2])
  segments.append(np.stack([ys[lone], xs[lone], ys[lone], xs[lone]], 1))
  return (np.concatenate(segments).astype(np.float32) + 0.5) / upscale


# `draw_with_pen`'s coverage levels at its default supersampling.
PEN_LEVELS = 16


def draw_with_pen(segments: np.ndarray, size: int, pen: float,
                  box: tuple[float, float, float],
                  supersample: int = 4) -> np.ndarray:
  """Ink coverage of centre lines drawn as an app's pen draws them.

  Round caps and joins, anti-aliased (drawn at `supersample` times the
  size, then averaged down), the pen's width fixed in canvas pixels
  whatever the drawing's size, as on a phone.

  Args:
    segments: `centre_lines`' output.
    size: The square canvas's side.
    pen: The pen's width in canvas pixels.
    box: (top, left, side): where the centre lines' bounding box goes, its
      longer side scaled to `side` pixels, the shorter one centred.

  Returns:
    float32 (size, size) coverage in [0, 1], a multiple of
    1 / supersample**2 (`paint`'s `levels`).
  """
  from PIL import Image, ImageDraw  # only for pen-drawn canvases
  k = supersample
  # Each covered sub-pixel counts 1 in a k x k block's mean: drawn with
  # k * k, the block's mean (PIL's reduce, in C) is the whole number of
  # covered sub-pixels, exactly.
  ink = k * k
  if ink > 255:
    raise ValueError(f"supersample={k} is over 15")
  image = Image.new("L", (size * k, size * k), 0)
  if len(segments):
    draw = ImageDraw.Draw(image)
    points = segments.reshape(-1, 2)
    low, high = points.min(0), points.max(0)
    top, left, side = box
    scale = side / max(float((high - low).max()), 1e-6)
    offset = np.array([top, left]) + (side - (high - low) * scale) / 2
    canvas_points = ((points - low) * scale + offset) * k
    width = max(1.0, pen * k)
    radius = width / 2
    # (Python floats: numpy scalars cost more per call than the drawing.)
    line_width = round(width)
    for y0, x0, y1, x1 in canvas_points.reshape(-1, 4).tolist():
      if (y0, x0) != (y1, x1):
        draw.line([(x0, y0), (x1, y1)], fill=ink, width=line_width)
    for y, x in np.unique(canvas_points.round(1), axis=0).tolist():
      draw.ellipse([x - radius, y - radius, x + radius, y + radius],
                   fill=ink)
  return np.asarray(image.reduce(k), np.float32) / ink


# A pen-drawn canvas: (28x28 uint8 drawing, canvas side, pen width in
# canvas pixels, (top, left, side) of its box, theme name).
Canvas = tuple[np.ndarray, int, float, tuple[float, float, float], str]
# Below this many canvases, forking workers costs about what it saves.
MIN_PARALLEL = 200
_CHUNK = 50


def _draw_chunk(canvases: Sequence[Canvas]) -> np.ndarray:
  return np.stack([
      paint(draw_with_pen(centre_lines(drawing), size, pen, box),
            THEMES[theme], PEN_LEVELS)
      for drawing, size, pen, box, theme in canvases])


def cores() -> int:
  """The CPUs this process may run on."""
  try:
    return len(os.sched_getaffinity(0))
  except AttributeError:  # not Linux
    return os.cpu_count() or 1


def _workers(count: int) -> int:
  """Processes to draw `count` canvases in: the cores this process may
  use, where fork is safe (Linux; macOS forks badly under native
  libraries) and enough canvases repay it; 0 draws here."""
  if count < MIN_PARALLEL or not sys.platform.startswith("linux"):
    return 0
  available = cores()
  return available if available > 1 else 0


def draw(canvases: Sequence[Canvas]) -> Iterator[np.ndarray]:
  """Draws `canvases`, yielding uint8 (n, side, side, 3) batches of them in
  order (about 50 at a time, so that a caller reads each batch back while
  the next ones are drawn, and a large pool never sits in memory whole).

  Forked workers draw when it pays (`_workers`): they inherit the parent's
  memory and run numpy, scikit-image and PIL on it, never TensorFlow,
  whose threads did not come along. The bytes are the same either way.
  """
  chunks = [canvases[i:i + _CHUNK] for i in range(0, len(canvases), _CHUNK)]
  workers = _workers(len(canvases))
  if not workers:
    for chunk in chunks:
      yield _draw_chunk(chunk)
    return
  # Imported here before forking, so that no worker imports them.
  import PIL.ImageDraw  # noqa: F401
  import skimage.morphology  # noqa: F401
  given = 0
  try:
    with futures.ProcessPoolExecutor(
        workers, mp_context=multiprocessing.get_context("fork")) as pool:
      # A few chunks ahead of the reader, not all: bounded memory.
      pending = collections.deque()
      for chunk in chunks:
        pending.append(pool.submit(_draw_chunk, chunk))
        if len(pending) > 2 * workers:
          yield pending.popleft().result()
          given += 1
      while pending:
        yield pending.popleft().result()
        given += 1
  except futures.process.BrokenProcessPool:
    # A worker died (the system ran short of memory, say): this process
    # draws the rest, the same bytes, more slowly.
    logging.warning("A process drawing pen canvases died; drawing the "
                    "other %d here", len(canvases) - given * _CHUNK)
    for chunk in chunks[given:]:
      yield _draw_chunk(chunk)
