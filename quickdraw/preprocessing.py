"""Pure TensorFlow ops that bring drawings to the backbone's input.

Each op takes and returns tensors, holds no state, and works the same eagerly,
inside `tf.data.Dataset.map` and inside a Keras model (tests check all three
where it matters). Leading dimensions are free: a single image or a batch.
"""

from __future__ import annotations

import tensorflow as tf

DRAWING_SIZE = 28
# The values a backbone takes (see `backbones`): [-1, 1] for MobileNet v1
# and v2, pixel values for the families that rescale inside.
SIGNED_RANGE = (-1.0, 1.0)
PIXEL_RANGE = (0.0, 255.0)


def rows_to_images(rows: tf.Tensor) -> tf.Tensor:
  """Reshapes flat drawings (..., 784) to images (..., 28, 28, 1), same dtype."""
  rows = tf.convert_to_tensor(rows)
  shape = tf.concat([tf.shape(rows)[:-1], [DRAWING_SIZE, DRAWING_SIZE, 1]], 0)
  return tf.reshape(rows, shape)


def scale_to_unit_range(images: tf.Tensor) -> tf.Tensor:
  """Maps pixel values [0, 255] to MobileNet's [-1, 1] as float32."""
  return tf.cast(images, tf.float32) * (1.0 / 127.5) - 1.0


def scale_to_range(images: tf.Tensor,
                   value_range: tuple[float, float] = SIGNED_RANGE
                   ) -> tf.Tensor:
  """Maps pixel values [0, 255] linearly onto `value_range`, as float32."""
  low, high = value_range
  if (low, high) == SIGNED_RANGE:
    return scale_to_unit_range(images)
  if (low, high) == PIXEL_RANGE:
    return tf.cast(images, tf.float32)
  return tf.cast(images, tf.float32) * ((high - low) / 255.0) + low


def unscale_from_range(values, value_range: tuple[float, float] = SIGNED_RANGE
                       ):
  """`scale_to_range`'s inverse: model inputs back to pixel values (numpy
  or tensors; not clipped)."""
  low, high = value_range
  return (values - low) * (255.0 / (high - low))


def normalization(value_range: tuple[float, float]) -> tuple[float, float]:
  """(mean, std) with `(pixel - mean) / std` in `value_range`: what TFLite
  metadata's NormalizationOptions say about a float input."""
  low, high = value_range
  std = 255.0 / (high - low)
  return -low * std, std


def range_of_normalization(mean: float, std: float) -> tuple[float, float]:
  """`normalization`'s inverse: the range of `(pixel - mean) / std` for
  pixels 0 to 255 (rounded to 6 places: metadata holds float32)."""
  return (round(-mean / std, 6), round((255.0 - mean) / std, 6))


def interpolation_matrix(in_size: int, out_size: int) -> tf.Tensor:
  """The (out_size, in_size) matrix M with M @ x == bilinear resize of x.

  Bilinear resizing is separable, so resizing the columns of an identity matrix
  yields its weights exactly as `tf.image.resize` computes them (half-pixel
  centres, no antialiasing).
  """
  eye = tf.eye(in_size, dtype=tf.float32)[:, :, tf.newaxis]
  return tf.image.resize(eye, (out_size, in_size), method="bilinear")[:, :, 0]


def upsample_to_rgb(images: tf.Tensor, image_size: int,
                    value_range: tuple[float, float] = SIGNED_RANGE
                    ) -> tf.Tensor:
  """Bilinearly resizes 28x28 grayscale drawings to RGB backbone inputs.

  Equal (to float rounding) to `grayscale_to_rgb(resize(x) / 127.5 - 1)` (for
  the default range), but
  about twice as fast on a CPU: the resize is two small matrix products, the
  scaling is done at 28x28 (the weights of each output pixel sum to one), and
  the second product writes the three channels directly (the row matrix is
  repeated three times, so reshaping its output to (..., S, S, 3) is free).

  Args:
    images: uint8 or float (..., 28, 28, 1) in [0, 255].
    image_size: The output side S.
    value_range: The backbone's input range (`backbones`).

  Returns:
    float32 (..., S, S, 3) in `value_range`.
  """
  images = tf.convert_to_tensor(images)
  x = scale_to_range(images, value_range)[..., 0]
  rows = interpolation_matrix(DRAWING_SIZE, image_size)
  cols_rgb = tf.repeat(rows, 3, axis=0)  # (3S, 28): channel fastest.
  x = tf.einsum("ij,...jk,lk->...il", rows, x, cols_rgb)
  shape = tf.concat([tf.shape(images)[:-3], [image_size, image_size, 3]], 0)
  return tf.reshape(x, shape)


def invert(images: tf.Tensor) -> tf.Tensor:
  """Swaps ink polarity of uint8 images: light on dark <-> dark on light."""
  return tf.cast(255, images.dtype) - images


def affine_upsample_to_rgb(images: tf.Tensor, image_size: int,
                           rotation: tf.Tensor, scale: tf.Tensor,
                           shift: tf.Tensor,
                           value_range: tuple[float, float] = SIGNED_RANGE
                           ) -> tf.Tensor:
  """Upsamples drawings to RGB backbone inputs through an affine warp.

  One bilinear sampling pass does both the warp and the upsampling, so an
  augmented image costs about what a plain resize costs. With no rotation,
  unit scale and no shift it equals `upsample_to_rgb` except in the outermost
  half-pixel ring of the drawing, which blends with the black background here
  instead of repeating the edge pixel.

  Args:
    images: uint8 or float (B, 28, 28, 1) in [0, 255].
    image_size: The output side S.
    rotation: (B,) angles in radians, counter-clockwise.
    scale: (B,) zoom factors (above 1 enlarges the drawing).
    shift: (B, 2) offsets (x, y) in 28x28 pixels.
    value_range: The backbone's input range.

  Returns:
    float32 (B, S, S, 3) in `value_range`.
  """
  images = tf.cast(images, tf.float32)
  s = DRAWING_SIZE / image_size
  centre = (DRAWING_SIZE - 1) / 2.0
  cos = tf.cos(rotation) / scale
  sin = tf.sin(rotation) / scale
  # Output pixel (x, y) samples the drawing at
  #   R(-rotation)/scale @ (p - centre - shift) + centre,
  # where p = (x + 0.5) * s - 0.5 is the pixel's position in 28x28 units, as
  # in tf.image.resize's half-pixel convention (ImageProjectiveTransform
  # puts pixel centres on integer coordinates).
  px0 = 0.5 * s - 0.5 - centre - shift[:, 0]
  py0 = 0.5 * s - 0.5 - centre - shift[:, 1]
  a0, a1 = cos * s, sin * s
  b0, b1 = -sin * s, cos * s
  a2 = cos * px0 + sin * py0 + centre
  b2 = -sin * px0 + cos * py0 + centre
  zeros = tf.zeros_like(a0)
  transforms = tf.stack([a0, a1, a2, b0, b1, b2, zeros, zeros], axis=1)
  warped = tf.raw_ops.ImageProjectiveTransformV3(
      images=images, transforms=transforms,
      output_shape=tf.constant([image_size, image_size]),
      fill_value=tf.constant(0.0), interpolation="BILINEAR",
      fill_mode="CONSTANT")
  return tf.image.grayscale_to_rgb(scale_to_range(warped, value_range))


MAX_ROTATION_DEGREES = 10.0
MAX_SCALE_CHANGE = 0.1
MAX_SHIFT = 2.0  # in 28x28 pixels


def distorted_upsample_to_rgb(images: tf.Tensor, image_size: int,
                              draws: tf.Tensor,
                              value_range: tuple[float, float] = SIGNED_RANGE
                              ) -> tf.Tensor:
  """`affine_upsample_to_rgb` with doodle-sized distortions from `draws`.

  Small rotations, zooms and shifts keep a doodle recognisable (no flips:
  many doodles have a handedness people draw consistently). Whoever draws
  the randomness (a stateless seed in tf.data, a Keras seed generator in a
  layer) passes it here, so both apply the same distortions.

  Args:
    images: uint8 (B, 28, 28, 1).
    image_size: The output side.
    draws: float (B, 4) uniform in [-1, 1]: rotation (times
      MAX_ROTATION_DEGREES), zoom (1 + MAX_SCALE_CHANGE times), x and y
      shifts (times MAX_SHIFT pixels).
    value_range: The backbone's input range.

  Returns:
    float32 (B, S, S, 3) in `value_range`.
  """
  rotation = draws[:, 0] * (MAX_ROTATION_DEGREES * 3.141592653589793 / 180)
  scale = 1.0 + draws[:, 1] * MAX_SCALE_CHANGE
  return affine_upsample_to_rgb(images, image_size, rotation, scale,
                                draws[:, 2:] * MAX_SHIFT, value_range)


def random_affine_upsample_to_rgb(
    images: tf.Tensor, image_size: int, seed: tf.Tensor,
    value_range: tuple[float, float] = SIGNED_RANGE) -> tf.Tensor:
  """`distorted_upsample_to_rgb` with draws from a stateless seed.

  Args:
    images: uint8 (B, 28, 28, 1).
    image_size: The output side.
    seed: int (2,) stateless seed; give each batch its own.
    value_range: The backbone's input range.

  Returns:
    float32 (B, S, S, 3) in `value_range`.
  """
  draws = tf.random.stateless_uniform([tf.shape(images)[0], 4], seed, -1.0,
                                      1.0)
  return distorted_upsample_to_rgb(images, image_size, draws, value_range)


# QuickDraw frames every drawing alike: the longer side of the ink's
# bounding box spans 26 of the 28 pixels, centred, with a 1-pixel margin.
FRAMED_SIZE = 26
# Contrast below this share of the strongest is not ink: paper noise, JPEG
# ringing and what is left of a shadow after the floor is taken off.
NOISE_CUT = 0.1
# A pixel is ink for the bounding box when its contrast is at least this
# share of the strongest (after NOISE_CUT): anti-aliased fringes stay out.
INK_THRESHOLD = 0.2
# A canvas whose strongest contrast with its background is below this (in
# grey levels) is blank: it gives an all-black drawing rather than its
# noise stretched to full ink.
BLANK_BELOW = 32.0
# Ink whose bounding box spans less than this share of the canvas's shorter
# side is too little to classify (a dot, a tick): an all-black drawing. Real
# drawings drawn at 1/8 of the canvas span at least 0.12 of it (measured in
# scripts/bench_themes.py), twice this.
MIN_INK_EXTENT = 0.06
# The shadow floor is the least contrast in blocks of this share of the
# canvas's longer side (and their neighbours): far wider than a pen, far
# narrower than a vignette.
FLOOR_BLOCK = 0.125


def background_colour(pictures: tf.Tensor) -> tf.Tensor:
  """(B, C) float32: each picture's paper colour, the median of its border.

  The median, not the mean: a stroke that runs off the edge does not shift
  it, and any paper colour works (white, dark themes, cream, grey).
  """
  x = tf.cast(pictures, tf.float32)
  border = tf.concat([x[:, 0], x[:, -1], x[:, :, 0], x[:, :, -1]], axis=1)
  border = tf.transpose(border, [0, 2, 1])  # (B, C, L)
  length = border.shape[-1]
  if length is None:
    length = tf.shape(border)[-1]
  # TOPK_V2 is a TFLite builtin, a sort is not: the median is the last of
  # the top half.
  return tf.math.top_k(border, length // 2 + 1).values[..., -1]


def ink_contrast(pictures: tf.Tensor) -> tf.Tensor:
  """(B, H, W) float32: how far each pixel is from the paper, 0 to 255.

  The distance is the largest over the colour channels, so ink of any
  colour on paper of any colour counts (a blue pen on yellow paper differs
  most in blue). A slow shadow or vignette is followed: the paper's colour
  is the mean of the pixels that are not strong ink (within half the
  strongest contrast of the border's colour) in blocks of FLOOR_BLOCK of
  the canvas and their neighbours, smoothed over the canvas.
  """
  x = tf.cast(pictures, tf.float32)
  paper = background_colour(x)[:, None, None, :]
  contrast = tf.reduce_max(tf.abs(x - paper), axis=-1, keepdims=True)
  height, width = contrast.shape[1], contrast.shape[2]
  if height is None or width is None or max(height, width) < 32:
    return contrast[..., 0]  # a drawing already (too small for shadows)
  peak = tf.reduce_max(contrast, axis=[1, 2, 3], keepdims=True)
  weight = tf.cast(contrast < 0.5 * peak, tf.float32)
  block = max(1, int(round(FLOOR_BLOCK * max(height, width))))

  def pooled(values):  # block sums, then with their neighbours
    values = tf.nn.avg_pool2d(values, block, block, "SAME")
    return tf.nn.avg_pool2d(values, 3, 1, "SAME")

  # A block of solid ink borrows its neighbours' paper, or the border's.
  local = ((pooled(x * weight) + 1e-3 * paper) /
           (pooled(weight) + 1e-3))
  local = tf.image.resize(local, (height, width), method="bilinear")
  return tf.reduce_max(tf.abs(x - local), axis=-1)


def _first_and_last(present: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
  """First and last index along axis 1 where `present` (B, N) is 1.

  With none present: 0 and N - 1 (the whole axis).
  """
  n = tf.shape(present)[1]
  first = tf.argmax(present, axis=1, output_type=tf.int32)
  last = n - 1 - tf.argmax(tf.reverse(present, [1]), axis=1,
                           output_type=tf.int32)
  return first, last


def _shrink_weights(first: tf.Tensor, last: tf.Tensor, side: tf.Tensor,
                    size: int | tf.Tensor, longest: int | tf.Tensor
                    ) -> tf.Tensor:
  """(B, 26, size) weights that shrink one axis of the padded square.

  The square of `side` pixels is centred on the ink's span [first, last] of
  this axis, and everything outside the span is zero (the padding). Each of
  the 26 outputs is an antialiased (triangle-filter) average, as
  `tf.image.resize(..., antialias=True)` computes it: the filter widens by
  side / 26 when shrinking, and its weights are normalised over the square.

  Args:
    first, last: (B,) int32 ink span along this axis, inclusive.
    side: (B,) int32 side of the square.
    size: Pixels along this axis of the picture.
    longest: The picture's longer side (no square is longer).
  """
  side_f = tf.cast(side, tf.float32)[:, None, None]
  top = first - (side - (last - first + 1)) // 2  # the square's first pixel
  scale = FRAMED_SIZE / side_f
  step = tf.minimum(scale, 1.0)  # the filter's slope, in square pixels
  # Output pixel centres, in square coordinates (half-pixel convention).
  centres = ((tf.range(FRAMED_SIZE, dtype=tf.float32)[None, :, None] + 0.5)
             / scale - 0.5)

  def triangle(positions):
    return tf.maximum(1.0 - tf.abs(positions - centres) * step, 0.0)

  square = tf.range(longest, dtype=tf.float32)[None, None, :]
  norm = tf.reduce_sum(triangle(square) * tf.cast(square < side_f,
                                                  tf.float32), -1,
                       keepdims=True)
  pixels = tf.range(size, dtype=tf.int32)[None, None, :]
  inside = tf.logical_and(pixels >= first[:, None, None],
                          pixels <= last[:, None, None])
  offsets = tf.cast(pixels - top[:, None, None], tf.float32)
  return triangle(offsets) * tf.cast(inside, tf.float32) / norm


def canvas_to_drawings(canvases: tf.Tensor) -> tf.Tensor:
  """Pictures of doodles, as an app's canvas holds them -> QuickDraw drawings.

  The one definition of what an app must not re-implement: the canvas
  model exported for Android runs it first, and `quickdraw-predict` runs it
  on pictures, so the two cannot drift. Only ops that TFLite has as
  builtins, on fixed-size tensors (H and W must be known).

  1. The paper's colour (`background_colour`) and each pixel's contrast
     with it (`ink_contrast`): any theme, any ink colour, shadows taken off.
     Contrast under NOISE_CUT of the strongest is paper.
  2. The ink (contrast at INK_THRESHOLD of the strongest or above): its
     bounding box, padded to a square on the box's centre.
  3. The square shrunk (or grown) to 26x26 with an antialiasing filter,
     stretched back to full ink (thin strokes fade when shrunk a lot), in a
     1-pixel black frame: QuickDraw's framing.

  An all-black drawing (which the exported models answer with equal
  scores) when there is nothing to classify: a blank canvas (no contrast
  reaching BLANK_BELOW) or too little ink (its box under MIN_INK_EXTENT of
  the canvas: a dot, a tick). A 28x28 picture is taken as a drawing already
  framed: only its polarity is fixed.

  Args:
    canvases: (B, H, W, C) pictures, C = 1 (grey) or 3 (RGB), uint8 or
      float in [0, 255]. Composite any alpha channel first.

  Returns:
    float32 (B, 28, 28) drawings: whole numbers in [0, 255], light ink on
    black.
  """
  x = tf.cast(canvases, tf.float32)[..., :3]
  height, width = x.shape[1], x.shape[2]
  if height is None or width is None:
    raise ValueError("canvas_to_drawings needs pictures of a known size")
  contrast = ink_contrast(x)
  if height == DRAWING_SIZE and width == DRAWING_SIZE:
    return tf.clip_by_value(tf.round(contrast), 0.0, 255.0)

  longest = max(height, width)
  peak = tf.reduce_max(contrast, axis=[1, 2])
  strength = tf.nn.relu(contrast - NOISE_CUT * peak[:, None, None])
  ink = tf.cast(strength >= (INK_THRESHOLD * (1 - NOISE_CUT)) *
                tf.maximum(peak, 1.0)[:, None, None], tf.float32)
  row0, row1 = _first_and_last(tf.reduce_max(ink, axis=2))
  col0, col1 = _first_and_last(tf.reduce_max(ink, axis=1))
  side = tf.maximum(row1 - row0 + 1, col1 - col0 + 1)
  rows = _shrink_weights(row0, row1, side, height, longest)  # (B, 26, H)
  cols = _shrink_weights(col0, col1, side, width, longest)   # (B, 26, W)
  small = tf.matmul(tf.matmul(rows, strength), cols, transpose_b=True)
  brightest = tf.reduce_max(small, axis=[1, 2])
  enough = tf.logical_and(
      peak >= BLANK_BELOW,
      tf.cast(side, tf.float32) >= MIN_INK_EXTENT * min(height, width))
  gain = 255.0 / tf.maximum(brightest, 1e-3) * tf.cast(enough, tf.float32)
  small = small * gain[:, None, None]
  margin = (DRAWING_SIZE - FRAMED_SIZE) // 2
  framed = tf.pad(small, [[0, 0], [margin, margin], [margin, margin]])
  return tf.clip_by_value(tf.round(framed), 0.0, 255.0)


# `canvas_to_drawings` traced, once per batch shape: half its eager time
# (it is some 165 small ops a call), the same bytes.
compiled_canvas_to_drawings = tf.function(canvas_to_drawings)
# A trace costs 0.1 to 0.15 s, what the eager overhead of some five
# batches of canvases costs.
TRACED_FROM = 500


def canvas_reader(count: int):
  """`canvas_to_drawings` for reading back `count` canvases of one size in
  batches (pen re-draws, junk, the export's checks): traced when there are
  enough to repay the trace (`TRACED_FROM`), eager for a few (the tests'),
  or for pictures of many sizes (image folders), which would trace for
  each."""
  return (compiled_canvas_to_drawings if count >= TRACED_FROM
          else canvas_to_drawings)
