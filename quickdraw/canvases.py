"""Pictures of doodles as apps hand them over, and pictures from files.

An Android app classifies its drawing canvas: a picture far larger than
28x28, usually dark ink on white, strokes several pixels wide, the doodle
anywhere on it. `redraw` makes such canvases from QuickDraw's 28x28
drawings (for the export's checks and the benchmarks); `read_picture` reads
a PNG or JPEG as an app's opaque RGB canvas (an alpha channel composited
over white, as an Android ARGB canvas must be before classifying); and
`fit_canvas` brings any picture to a canvas model's fixed input size.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from quickdraw.errors import QuickDrawError


def composite_over_white(picture: np.ndarray) -> np.ndarray:
  """(H, W, C) uint8 with C = 2 (grey, alpha) or 4 (RGBA) -> opaque pixels.

  Transparent pixels become white, the colour an empty canvas shows: black
  ink on a transparent canvas reads as black ink on white. Pictures without
  alpha are returned as they are.
  """
  if picture.shape[-1] not in (2, 4):
    return picture
  alpha = picture[..., -1:].astype(np.float32) / 255.0
  colour = picture[..., :-1].astype(np.float32)
  return np.round(colour * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)


def read_picture(path: str) -> np.ndarray:
  """A PNG, JPEG, GIF or BMP file as opaque (H, W, 1 or 3) uint8 pixels.

  Raises:
    QuickDrawError: the file is not a picture.
  """
  try:
    picture = tf.io.decode_image(tf.io.read_file(path),
                                 expand_animations=False).numpy()
  except tf.errors.OpError:
    raise QuickDrawError(f"{path}: not a PNG or JPEG image") from None
  return composite_over_white(picture)


def fit_canvas(picture: np.ndarray, height: int, width: int) -> np.ndarray:
  """A picture as a canvas model's (height, width, 3) uint8 input.

  Padded to the input's aspect ratio with its border's colour first, so the
  doodle keeps its shape (stretching, as MediaPipe does with a canvas of
  another shape, would distort it), then resized with antialiasing.
  """
  picture = np.asarray(picture)
  if picture.ndim == 2:
    picture = picture[..., None]
  if picture.shape[-1] == 1:
    picture = np.repeat(picture, 3, -1)
  h, w = picture.shape[:2]
  target_h = max(h, int(np.ceil(w * height / width)))
  target_w = max(w, int(np.ceil(h * width / height)))
  if (target_h, target_w) != (h, w):
    border = np.concatenate([picture[0], picture[-1], picture[:, 0],
                             picture[:, -1]]).mean(0)
    padded = np.empty((target_h, target_w, 3), np.uint8)
    padded[:] = np.round(border).astype(np.uint8)
    top, left = (target_h - h) // 2, (target_w - w) // 2
    padded[top:top + h, left:left + w] = picture
    picture = padded
  if picture.shape[:2] == (height, width):
    return picture
  resized = tf.image.resize(picture, (height, width), antialias=True)
  return np.clip(np.round(resized.numpy()), 0, 255).astype(np.uint8)


def redraw(drawings: np.ndarray, size: int, seed: int = 0) -> np.ndarray:
  """QuickDraw drawings re-drawn as app canvases, as a user might draw them.

  Each 28x28 drawing is upscaled to 35% to 80% of the canvas and made a
  crisp pen line again (the upscaled ink above half strength: a phone's
  canvas has no 28-pixel blur), its strokes thickened by up to 2% of its
  size, and placed anywhere on a `size` x `size` canvas; three in four come
  out dark ink on white (what drawing apps make), the rest light on black.

  Args:
    drawings: uint8 (N, 784) or (N, 28, 28), light ink on black.
    size: The canvas side.
    seed: Seeds the sizes, strokes, places and polarities.

  Returns:
    uint8 (N, size, size, 3) RGB canvases.
  """
  drawings = np.asarray(drawings, np.uint8).reshape(-1, 28, 28, 1)
  rng = np.random.default_rng(seed)
  canvases = np.zeros((len(drawings), size, size, 3), np.uint8)
  for i, drawing in enumerate(drawings):
    extent = int(rng.uniform(0.35, 0.8) * size)
    big = tf.image.resize(drawing.astype(np.float32), (extent, extent))
    radius = int(rng.integers(0, int(0.02 * extent) + 1))
    if radius:
      big = tf.nn.max_pool2d(big[None], 2 * radius + 1, 1, "SAME")[0]
    ink = big.numpy()[..., 0] >= 128
    top, left = rng.integers(0, size - extent + 1, 2)
    canvas = np.zeros((size, size), np.uint8)
    canvas[top:top + extent, left:left + extent] = np.where(ink, 255, 0)
    if rng.uniform() < 0.75:
      canvas = 255 - canvas
    canvases[i] = canvas[..., None]
  return canvases
