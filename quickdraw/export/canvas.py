"""The app's model: a uint8 canvas in, through the drawing's preprocessing
in float32, then the network, then a check that something was drawn."""

from __future__ import annotations

import functools

import tensorflow as tf

from quickdraw import preprocessing, tflite_graph
from quickdraw.export.config import (CANVAS_TENSOR, FINAL_TENSOR_NAME,
                                     INPUT_NAME, PREPROCESSED_TENSOR)
from quickdraw.export.convert import convert


def canvas_preprocessing_bytes(
    canvas_size: int, image_size: int, *,
    value_range: tuple[float, float]) -> bytes:
  """The app model's first part, in float32: a uint8 [1, H, W, 3] canvas ->
  the network's [1, S, S, 3] input in `value_range`
  (`preprocessing.canvas_to_drawings`, then
  `preprocessing.upsample_to_rgb`, as in training).

  The same for every model of these sizes and range: converted once per
  process (half a second), for a process that exports again.
  """
  # Keyed by the functions too: a stand-in (a test's) is converted anew.
  return _canvas_preprocessing(int(canvas_size), int(image_size),
                               preprocessing.canvas_to_drawings,
                               preprocessing.upsample_to_rgb,
                               value_range=tuple(map(float, value_range)))


@functools.lru_cache(maxsize=8)
def _canvas_preprocessing(canvas_size: int, image_size: int, to_drawings,
                          upsample, *, value_range: tuple[float, float]
                          ) -> bytes:
  spec = tf.TensorSpec([1, canvas_size, canvas_size, 3], tf.uint8,
                       name=CANVAS_TENSOR)

  @tf.function(input_signature=[spec], autograph=False)
  def preprocess(canvas):
    drawings = to_drawings(canvas)
    return tf.identity(upsample(drawings[..., tf.newaxis], image_size,
                                value_range), name=PREPROCESSED_TENSOR)

  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [preprocess.get_concrete_function()], trackable_obj=tf.Module())
  return convert(converter, "the canvas preprocessing")


# A network input whose brightest value is under this share of its range
# is an all-black drawing: nothing to classify.
NOTHING_DRAWN_BELOW = 0.05


def nothing_drawn_bytes(classes: int, image_size: int, *,
                        value_range: tuple[float, float]) -> bytes:
  """The app model's last part, in float32: (probabilities, the network's
  input) -> the probabilities, or equal scores where the input is an
  all-black drawing (`canvas_to_drawings` makes one of a blank canvas or
  too little ink), which no score threshold lets through. Converted once
  per process for these sizes and range, like the preprocessing."""
  return _nothing_drawn(int(classes), int(image_size),
                        value_range=tuple(map(float, value_range)))


@functools.lru_cache(maxsize=8)
def _nothing_drawn(classes: int, image_size: int, *,
                   value_range: tuple[float, float]) -> bytes:
  low, high = value_range
  specs = [tf.TensorSpec([1, classes], tf.float32, name="probabilities"),
           tf.TensorSpec([1, image_size, image_size, 3], tf.float32,
                         name=PREPROCESSED_TENSOR)]

  @tf.function(input_signature=specs, autograph=False)
  def gate(probabilities, images):
    drawn = (tf.reduce_max(images, axis=[1, 2, 3])[:, None]
             > low + NOTHING_DRAWN_BELOW * (high - low))
    return tf.where(drawn, probabilities,
                    tf.fill(tf.shape(probabilities), 1.0 / classes))

  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [gate.get_concrete_function()], trackable_obj=tf.Module())
  return convert(converter, "the canvas model's blank check")


def canvas_model_bytes(preprocessing_model: bytes, network: bytes,
                       final_tensor_name: str = FINAL_TENSOR_NAME,
                       nothing_drawn: bytes | None = None) -> bytes:
  """The app's model: the float32 preprocessing, then `network` unchanged,
  then (if given) `nothing_drawn_bytes`' float32 check.

  The tensor where preprocessing and network meet is named `preprocessed`,
  so a check can read what the network was given.
  """
  # Edited as objects throughout: one unpacking of each part, one write.
  model = tflite_graph.chain(preprocessing_model, network,
                             join_name=PREPROCESSED_TENSOR, serialize=False)
  if nothing_drawn is not None:
    model = tflite_graph.chain(
        model, nothing_drawn,
        more_inputs={PREPROCESSED_TENSOR: PREPROCESSED_TENSOR},
        serialize=False)
  return tflite_graph.name_io(model, INPUT_NAME, final_tensor_name)
