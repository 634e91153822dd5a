"""Pictures of doodles as apps hand them over, and pictures from files.

An Android app classifies its drawing canvas: a picture far larger than
28x28, usually dark ink on white, strokes several pixels wide, the doodle
anywhere on it. `pen_suite` makes such canvases from QuickDraw's 28x28
drawings by drawing each one's centre line again with an app's round pen,
in several widths, themes and places (the export's check and the quality
gate); `redraw` upscales and thickens them instead (the theme benchmarks);
`read_picture` reads a PNG or JPEG as an app's opaque RGB canvas (an alpha
channel composited over white, or the canvas's own colour, as an Android
ARGB canvas must be before classifying); and `fit_canvas` brings any
picture to a canvas model's fixed input size.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from quickdraw import pens, preprocessing
from quickdraw.errors import QuickDrawError
from quickdraw.pens import THEMES, Theme, paint


def composite_over_white(picture: np.ndarray,
                         background: tuple[int, int, int] = (255, 255, 255)
                         ) -> np.ndarray:
  """(H, W, C) uint8 with C = 2 (grey, alpha) or 4 (RGBA) -> opaque pixels.

  Transparent pixels become `background`, by default white, the colour an
  empty canvas shows: black ink on a transparent canvas reads as black ink
  on white (a dark theme's white ink needs its dark background). Pictures
  without alpha are returned as they are.
  """
  if picture.shape[-1] not in (2, 4):
    return picture
  alpha = picture[..., -1:].astype(np.float32) / 255.0
  colour = picture[..., :-1].astype(np.float32)
  paper = np.asarray(background, np.float32)
  if colour.shape[-1] == 1:  # grey: the background's grey level
    paper = paper.mean(keepdims=True)
  return np.round(colour * alpha + paper * (1.0 - alpha)).astype(np.uint8)


def parse_colour(text: str) -> tuple[int, int, int]:
  """`#RRGGBB`, `RRGGBB`, `#RGB` or a name (white, black) -> RGB.

  Raises:
    QuickDrawError: not a colour.
  """
  names = {"white": "#FFFFFF", "black": "#000000"}
  value = names.get(text.strip().lower(), text.strip()).lstrip("#")
  if len(value) == 3:
    value = "".join(c * 2 for c in value)
  try:
    if len(value) != 6:
      raise ValueError
    return tuple(int(value[i:i + 2], 16) for i in (0, 2, 4))
  except ValueError:
    raise QuickDrawError(f"--background={text}: not a colour; pass #RRGGBB "
                         "(e.g. #121212), white or black") from None


def read_picture(path: str,
                 background: tuple[int, int, int] = (255, 255, 255)
                 ) -> np.ndarray:
  """A PNG, JPEG, GIF, BMP or WebP file as opaque (H, W, 1 or 3) uint8
  pixels, a transparent one composited over `background`.

  Raises:
    QuickDrawError: the file is not a picture.
  """
  return decode_picture(tf.io.read_file(path), path, background)


def decode_picture(data, name: str,
                   background: tuple[int, int, int] = (255, 255, 255)
                   ) -> np.ndarray:
  """`read_picture` of a file's bytes (`name` only for the error).

  Raises:
    QuickDrawError: the bytes are not a picture.
  """
  try:
    picture = tf.io.decode_image(data, expand_animations=False).numpy()
  except (tf.errors.OpError, ValueError):
    raise QuickDrawError(f"{name}: not a PNG, JPEG, GIF, BMP or WebP image"
                         ) from None
  if picture.ndim != 3 or min(picture.shape[:2]) < 1:
    raise QuickDrawError(f"{name}: holds no pixels")
  return composite_over_white(picture, background)


# A picture whose padded square would be longer than this is shrunk first
# (with antialiasing): a 60000x8 strip padded to a square would need
# gigabytes. Phone canvases are far smaller and go as the app sends them.
MAX_SQUARE_SIDE = 8192


def resize_as_mediapipe(picture: np.ndarray, height: int,
                        width: int) -> np.ndarray:
  """(H, W, 3) uint8 -> (height, width, 3) uint8, resized as MediaPipe's
  ImageClassifier resizes an app's bitmap to the model's input: bilinear,
  with pixel corners aligned at the origin and no antialiasing (OpenCV's
  warpAffine; TensorFlow's ResizeBilinear without half-pixel centres)."""
  resized = tf.raw_ops.ResizeBilinear(
      images=tf.cast(picture[None], tf.float32), size=[height, width],
      align_corners=False, half_pixel_centers=False)[0]
  return np.clip(np.round(resized.numpy()), 0, 255).astype(np.uint8)


def fit_canvas(picture: np.ndarray, height: int, width: int) -> np.ndarray:
  """A picture as a canvas model's (height, width, 3) uint8 input, as an
  app hands it to MediaPipe.

  Padded to the input's aspect ratio with its border's colour first (the
  README's Kotlin pads the same way: stretching, as MediaPipe does with a
  canvas of another shape, would distort the doodle), then resized as
  MediaPipe resizes (`resize_as_mediapipe`), so that a score here is the
  app's: on pen-drawn canvases of 512 and 1080 px the scores matched
  MediaPipe's within 0.002 (an antialiased resize was up to 0.28 off, and
  changed 7% of the answers).
  """
  picture = np.asarray(picture)
  if picture.ndim == 2:
    picture = picture[..., None]
  if picture.shape[-1] == 1:
    picture = np.repeat(picture, 3, -1)
  h, w = picture.shape[:2]
  if max(h, w) > MAX_SQUARE_SIDE:
    scale = MAX_SQUARE_SIDE / max(h, w)
    size = (max(1, round(h * scale)), max(1, round(w * scale)))
    picture = np.clip(np.round(tf.image.resize(
        picture, size, antialias=True).numpy()), 0, 255).astype(np.uint8)
    h, w = size
  target_h = max(h, int(np.ceil(w * height / width)))
  target_w = max(w, int(np.ceil(h * width / height)))
  if (target_h, target_w) != (h, w):
    # The paper's colour as the model finds it (a median: a stroke that
    # runs off the edge does not tint the padding).
    border = preprocessing.background_colour(picture[None]).numpy()[0]
    padded = np.empty((target_h, target_w, 3), np.uint8)
    padded[:] = np.round(border).astype(np.uint8)
    top, left = (target_h - h) // 2, (target_w - w) // 2
    padded[top:top + h, left:left + w] = picture
    picture = padded
  if picture.shape[:2] == (height, width):
    return picture
  return resize_as_mediapipe(picture, height, width)


def read_back(pictures: np.ndarray, batch: int = 100) -> np.ndarray:
  """What the app's model makes of canvases of one size: uint8 (N, 28, 28)
  drawings, by `preprocessing.canvas_to_drawings` `batch` at a time
  (`preprocessing.canvas_reader`: traced when there are enough)."""
  read = preprocessing.canvas_reader(len(pictures))
  return np.concatenate([
      np.asarray(read(pictures[i:i + batch]))
      for i in range(0, len(pictures), batch)] or [
          np.zeros((0, 28, 28))]).astype(np.uint8)


def redraw(drawings: np.ndarray, size: int, seed: int = 0,
           theme: Theme | str | None = None,
           extent: tuple[float, float] = (0.35, 0.8)) -> np.ndarray:
  """QuickDraw drawings re-drawn as app canvases, as a user might draw them.

  Each 28x28 drawing is upscaled to a share of the canvas drawn from
  `extent` and made a pen line again (the upscaled ink above half strength:
  a phone's canvas has no 28-pixel blur), its strokes thickened by up to 2%
  of its size, and placed anywhere on a `size` x `size` canvas. Without a
  theme, three in four come out crisp dark ink on white (what drawing apps
  make), the rest light on black; with one, every canvas is painted in it
  with anti-aliased edges. The same seed gives the same sizes, strokes and
  places in every theme.

  Args:
    drawings: uint8 (N, 784) or (N, 28, 28), light ink on black.
    size: The canvas side.
    seed: Seeds the sizes, strokes, places and polarities.
    theme: A `Theme` or a name in THEMES.
    extent: The range of the drawing's side, as a share of the canvas's.

  Returns:
    uint8 (N, size, size, 3) RGB canvases.
  """
  if isinstance(theme, str):
    theme = THEMES[theme]
  drawings = np.asarray(drawings, np.uint8).reshape(-1, 28, 28, 1)
  rng = np.random.default_rng(seed)
  canvases = np.zeros((len(drawings), size, size, 3), np.uint8)
  # Anti-aliased edges: drawn at twice the size, then averaged down.
  scale = 1 if theme is None else 2
  for i, drawing in enumerate(drawings):
    side = max(2, int(rng.uniform(*extent) * size))
    big = tf.image.resize(drawing.astype(np.float32),
                          (side * scale, side * scale))
    radius = int(rng.integers(0, int(0.02 * side) + 1))
    if radius:
      big = tf.nn.max_pool2d(big[None], 2 * radius * scale + 1, 1,
                             "SAME")[0]
    ink = (big >= 128).numpy().astype(np.float32)
    if scale > 1:
      ink = tf.nn.avg_pool2d(ink[None], scale, scale, "VALID")[0].numpy()
    top, left = rng.integers(0, size - side + 1, 2)
    coverage = np.zeros((size, size), np.float32)
    coverage[top:top + side, left:left + side] = ink[..., 0]
    light_on_dark = rng.uniform() >= 0.75
    if theme is None:
      canvases[i] = np.where(coverage[..., None] > 0,
                             255 if light_on_dark else 0,
                             0 if light_on_dark else 255)
    else:
      canvases[i] = paint(coverage, theme)
  return canvases


# The pen-drawn canvas suite's axes (`pen_suite`): pen widths as a share of
# the canvas's side, themes, and where and how large the doodle is drawn
# (the share of the canvas its box spans, and whether it is centred).
SUITE_PENS = {"thin": 0.015, "medium": 0.03, "thick": 0.06}
SUITE_THEMES = ("white", "dark", "light_grey")
SUITE_PLACES = {"centred": (0.5, 0.75, True), "off_centre": (0.35, 0.5, False),
                "small": (0.2, 0.3, False)}


def pen_suite(drawings: np.ndarray, size: int, seed: int = 0
              ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
  """QuickDraw drawings re-drawn with a pen, as app canvases of every kind.

  Each drawing's centre line (`pens.centre_lines`) is drawn again with a
  round, anti-aliased pen (`pens.draw_with_pen`), in worker processes where
  there are enough (`pens.draw`). The pens, themes and places of
  SUITE_PENS, SUITE_THEMES and SUITE_PLACES are crossed and dealt out in
  turn (drawing i gets pen i % 3, theme i // 3 % 3, place i // 9 % 3), so
  that every class meets every kind of canvas and each axis can be read
  on its own. Sizes and positions within a place are drawn from `seed`.

  Args:
    drawings: uint8 (N, 784) or (N, 28, 28), light ink on black.
    size: The canvas side.
    seed: Seeds the sizes and positions.

  Returns:
    (uint8 (N, size, size, 3) RGB canvases, {"pen", "theme", "place"}:
    each an (N,) array of the canvas's kind on that axis).
  """
  drawings = np.asarray(drawings, np.uint8).reshape(-1, 28, 28)
  rng = np.random.default_rng(seed)
  pen_names, places = list(SUITE_PENS), list(SUITE_PLACES)
  wanted = []
  kinds = {"pen": [], "theme": [], "place": []}
  for i, drawing in enumerate(drawings):
    pen = pen_names[i % 3]
    theme = SUITE_THEMES[i // 3 % 3]
    place = places[i // 9 % 3]
    low, high, centred = SUITE_PLACES[place]
    width = SUITE_PENS[pen] * size
    side = rng.uniform(low, high) * size
    # The box holds the centre line; the pen's half-width goes round it.
    room = size - side - width
    if centred:
      top, left = room / 2 + rng.uniform(-0.05, 0.05, 2) * size
    else:
      # Towards a corner: within a fifth of the free room from two edges.
      near = rng.uniform(0, 0.2 * room, 2)
      top, left = np.where(rng.uniform(size=2) < 0.5, near, room - near)
    wanted.append((drawing, size, width,
                   (top + width / 2, left + width / 2, side), theme))
    for axis, kind in (("pen", pen), ("theme", theme), ("place", place)):
      kinds[axis].append(kind)
  pictures = np.empty((len(drawings), size, size, 3), np.uint8)
  done = 0
  for batch in pens.draw(wanted):
    pictures[done:done + len(batch)] = batch
    done += len(batch)
  return pictures, {axis: np.array(k) for axis, k in kinds.items()}


JUNK_KINDS = ("noise", "gradient", "texture", "scribble", "text")


def junk(kind: str, count: int, size: int, seed: int = 0) -> np.ndarray:
  """Pictures that are not doodles, as users and cameras send them.

  noise: random pixels, grey or coloured; gradient: linear or radial
  blends of two colours (a photo's sky, a shadow); texture: smoothed noise
  over several scales, coloured (paper, fabric, foliage in a photo);
  scribble: a random pen path over most of the canvas; text: lines of
  random letters in a pen colour.

  Returns:
    uint8 (count, size, size, 3).
  """
  from PIL import Image, ImageDraw, ImageFont  # only for scribbles and text
  if kind not in JUNK_KINDS:
    raise ValueError(f"no junk kind {kind!r}; use one of {JUNK_KINDS}")
  rng = np.random.default_rng([seed, JUNK_KINDS.index(kind)])
  out = np.empty((count, size, size, 3), np.uint8)
  y, x = np.mgrid[0:size, 0:size] / size
  for i in range(count):
    a, b = rng.integers(0, 256, (2, 3)).astype(np.float32)
    if kind == "noise":
      channels = 3 if rng.uniform() < 0.5 else 1
      picture = rng.integers(0, 256, (size, size, channels))
      picture = np.broadcast_to(picture, (size, size, 3))
    elif kind == "gradient":
      if rng.uniform() < 0.5:
        angle = rng.uniform(0, 2 * np.pi)
        t = x * np.cos(angle) + y * np.sin(angle)
      else:
        cy, cx = rng.uniform(0, 1, 2)
        t = np.hypot(x - cx, y - cy)
      t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
      picture = a * (1 - t[..., None]) + b * t[..., None]
    elif kind == "texture":
      t = np.zeros((size, size), np.float32)
      for octave in range(2, 7):
        cells = 2 ** octave
        grid = rng.normal(size=(cells, cells, 1)).astype(np.float32)
        t += tf.image.resize(grid, (size, size)).numpy()[..., 0] / octave
      t = (t - t.min()) / max(float(np.ptp(t)), 1e-6)
      picture = a * (1 - t[..., None]) + b * t[..., None]
    else:
      paper, pen = (255, 0) if rng.uniform() < 0.7 else (0, 255)
      image = Image.new("RGB", (size, size), (paper,) * 3)
      draw = ImageDraw.Draw(image)
      width = max(2, int(rng.uniform(0.01, 0.04) * size))
      if kind == "scribble":
        points = [tuple(rng.uniform(0.1, 0.9, 2) * size)]
        for _ in range(int(rng.integers(15, 60))):
          step = rng.normal(0, 0.15 * size, 2)
          points.append(tuple(np.clip(np.add(points[-1], step), 0.05 * size,
                                      0.95 * size)))
        draw.line(points, fill=(pen,) * 3, width=width, joint="curve")
      else:
        font = ImageFont.load_default(size=int(rng.uniform(0.06, 0.14)
                                                * size))
        letters = "abcdefghijklmnopqrstuvwxyz   "
        top = rng.uniform(0.05, 0.3) * size
        for _ in range(int(rng.integers(1, 5))):
          line = "".join(rng.choice(list(letters), int(rng.integers(5, 14))))
          draw.text((0.05 * size, top), line, fill=(pen,) * 3, font=font)
          top += font.size * 1.3
      picture = np.asarray(image)
    out[i] = np.clip(np.round(picture), 0, 255).astype(np.uint8)
  return out
