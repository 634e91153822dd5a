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
