"""Pure TensorFlow ops that bring drawings to the backbone's input.

Each op takes and returns tensors, holds no state, and works the same eagerly,
inside `tf.data.Dataset.map` and inside a Keras model (tests check all three
where it matters). Leading dimensions are free: a single image or a batch.
"""

from __future__ import annotations

import tensorflow as tf

DRAWING_SIZE = 28


def rows_to_images(rows: tf.Tensor) -> tf.Tensor:
  """Reshapes flat drawings (..., 784) to images (..., 28, 28, 1), same dtype."""
  rows = tf.convert_to_tensor(rows)
  shape = tf.concat([tf.shape(rows)[:-1], [DRAWING_SIZE, DRAWING_SIZE, 1]], 0)
  return tf.reshape(rows, shape)


def scale_to_unit_range(images: tf.Tensor) -> tf.Tensor:
  """Maps pixel values [0, 255] to MobileNet's [-1, 1] as float32."""
  return tf.cast(images, tf.float32) * (1.0 / 127.5) - 1.0


def interpolation_matrix(in_size: int, out_size: int) -> tf.Tensor:
  """The (out_size, in_size) matrix M with M @ x == bilinear resize of x.

  Bilinear resizing is separable, so resizing the columns of an identity matrix
  yields its weights exactly as `tf.image.resize` computes them (half-pixel
  centres, no antialiasing).
  """
  eye = tf.eye(in_size, dtype=tf.float32)[:, :, tf.newaxis]
  return tf.image.resize(eye, (out_size, in_size), method="bilinear")[:, :, 0]


def upsample_to_rgb(images: tf.Tensor, image_size: int) -> tf.Tensor:
  """Bilinearly resizes 28x28 grayscale drawings to RGB backbone inputs.

  Equal (to float rounding) to `grayscale_to_rgb(resize(x) / 127.5 - 1)`, but
  about twice as fast on a CPU: the resize is two small matrix products, the
  scaling is done at 28x28 (the weights of each output pixel sum to one), and
  the second product writes the three channels directly (the row matrix is
  repeated three times, so reshaping its output to (..., S, S, 3) is free).

  Args:
    images: uint8 or float (..., 28, 28, 1) in [0, 255].
    image_size: The output side S.

  Returns:
    float32 (..., S, S, 3) in [-1, 1].
  """
  images = tf.convert_to_tensor(images)
  x = scale_to_unit_range(images)[..., 0]
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
                           shift: tf.Tensor) -> tf.Tensor:
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

  Returns:
    float32 (B, S, S, 3) in [-1, 1].
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
  return tf.image.grayscale_to_rgb(scale_to_unit_range(warped))


MAX_ROTATION_DEGREES = 10.0
MAX_SCALE_CHANGE = 0.1
MAX_SHIFT = 2.0  # in 28x28 pixels


def distorted_upsample_to_rgb(images: tf.Tensor, image_size: int,
                              draws: tf.Tensor) -> tf.Tensor:
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

  Returns:
    float32 (B, S, S, 3) in [-1, 1].
  """
  rotation = draws[:, 0] * (MAX_ROTATION_DEGREES * 3.141592653589793 / 180)
  scale = 1.0 + draws[:, 1] * MAX_SCALE_CHANGE
  return affine_upsample_to_rgb(images, image_size, rotation, scale,
                                draws[:, 2:] * MAX_SHIFT)


def random_affine_upsample_to_rgb(images: tf.Tensor, image_size: int,
                                  seed: tf.Tensor) -> tf.Tensor:
  """`distorted_upsample_to_rgb` with draws from a stateless seed.

  Args:
    images: uint8 (B, 28, 28, 1).
    image_size: The output side.
    seed: int (2,) stateless seed; give each batch its own.

  Returns:
    float32 (B, S, S, 3) in [-1, 1].
  """
  draws = tf.random.stateless_uniform([tf.shape(images)[0], 4], seed, -1.0,
                                      1.0)
  return distorted_upsample_to_rgb(images, image_size, draws)
