"""Conversion: the Keras classifier as a frozen graph, TFLite networks
(float32 and quantized) and a .keras file's bytes."""

from __future__ import annotations

import os
import tempfile
import warnings

import numpy as np
import tensorflow as tf
from tensorflow.python.framework import convert_to_constants

from quickdraw import quantization, quiet, tflite_graph
from quickdraw.errors import QuickDrawError
from quickdraw.export.config import FINAL_TENSOR_NAME, INPUT_NAME, KERAS_MODEL


def serving_function(classifier, final_tensor_name: str):
  """The classifier as a frozen concrete function: `input` -> final tensor."""
  size = int(classifier.input_shape[1])
  spec = tf.TensorSpec([None, size, size, 3], tf.float32,
                       name=INPUT_NAME)

  @tf.function(input_signature=[spec], autograph=False)
  def serve(images):
    return tf.identity(classifier(images, training=False),
                       name=final_tensor_name)

  return convert_to_constants.convert_variables_to_constants_v2(
      serve.get_concrete_function())


def frozen_graph_bytes(frozen) -> bytes:
  """The serialized GraphDef of a frozen concrete function."""
  return frozen.graph.as_graph_def().SerializeToString()


def convert(converter: tf.lite.TFLiteConverter, what: str) -> bytes:
  """Runs the converter, which is given a `trackable_obj` (the functions it
  converts hold no variables: the frozen network's are constants).

  TensorFlow ops without a TFLite builtin are let through as Flex ops only
  to be named by `check_builtin_ops` afterwards, which says more than the
  converter's own error.
  """
  converter.target_spec.supported_ops = list(
      converter.target_spec.supported_ops) + [tf.lite.OpsSet.SELECT_TF_OPS]
  try:
    with warnings.catch_warnings(), quiet.native_stderr_silenced():
      # int8 calibration warns that the float input has no statistics: by
      # design, the input stays float32.
      warnings.filterwarnings("ignore", "Statistics for quantized inputs")
      model = converter.convert()
  except Exception as e:  # the converter raises ConverterError and others
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e)
    raise QuickDrawError(f"cannot convert {what} to TFLite ({reason}); "
                         "please report this with your settings") from None
  tflite_graph.check_builtin_ops(model, what)
  return model


def tflite_bytes(frozen, mode: str = "float32",
                 representative: np.ndarray | None = None,
                 final_tensor_name: str = FINAL_TENSOR_NAME, *,
                 value_range: tuple[float, float]) -> bytes:
  """Converts the network (a frozen function) to TFLite, without metadata.

  Args:
    frozen: From `serving_function`.
    mode: "float32", "dynamic" (int8 weights), "float16" (float16 weights)
      or "int8" (int8 weights and activations, calibrated on
      `representative`; input and output stay float32).
    representative: uint8 drawings (N, 784) for int8 calibration.
    final_tensor_name: The output tensor's name.
    value_range: The network's input range (`backbones`).

  Returns:
    The model, its input named `input` and its output `final_tensor_name`,
    with a `serving_default` signature.

  Raises:
    QuickDrawError: conversion failed, or needs non-builtin ops.
  """
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [frozen], trackable_obj=tf.Module())
  if mode != "float32":
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  if mode == "float16":
    converter.target_spec.supported_types = [tf.float16]
  if mode == "int8":
    if representative is None or not len(representative):
      raise ValueError("int8 needs representative drawings")
    converter.representative_dataset = quantization.representative_dataset(
        representative, int(frozen.inputs[0].shape[1]),
        value_range=value_range)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
  model = convert(converter, f"the {mode} network")
  return tflite_graph.name_io(model, INPUT_NAME, final_tensor_name)


def int8_bytes(frozen, representative: np.ndarray, held_out: np.ndarray,
               held_out_labels: np.ndarray, float_network: bytes,
               loss_target: float,
               final_tensor_name: str = FINAL_TENSOR_NAME, *,
               value_range: tuple[float, float]
               ) -> quantization.Int8Result:
  """The int8 network, its worst layers kept in float (see `quantization`).

  Args:
    frozen: From `serving_function`.
    representative: uint8 training drawings (N, 784) for calibration.
    held_out: uint8 drawings not trained on, and `held_out_labels` their
      classes: where layers are ranked and the loss is measured.
    float_network: The float32 network (`tflite_bytes`), the reference.
    loss_target: Points of top-1 on `held_out` int8 may lose.
    final_tensor_name: The output tensor's name.
    value_range: The network's input range (`backbones`).

  Returns:
    The result, its `model` named and signed like `tflite_bytes`' models.

  Raises:
    QuickDrawError: conversion failed, or needs non-builtin ops.
  """
  size = int(frozen.inputs[0].shape[1])
  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [frozen], trackable_obj=tf.Module())
  float_classes = quantization.predictions(float_network, held_out,
                                          value_range=value_range)
  try:
    result = quantization.int8_network(
        converter, size, representative, held_out, held_out_labels,
        float_classes, loss_target, tflite_graph.layer_costs(float_network),
        value_range=value_range)
  except Exception as e:  # the converter raises ConverterError and others
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e)
    raise QuickDrawError(f"cannot convert the int8 network to TFLite "
                         f"({reason}); please report this with your "
                         "settings") from None
  tflite_graph.check_builtin_ops(result.model, "the int8 network")
  result.model = tflite_graph.name_io(result.model, INPUT_NAME,
                                      final_tensor_name)
  return result


def keras_bytes(classifier) -> bytes:
  """`classifier` as a .keras file's bytes (saved without its optimizer)."""
  with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, KERAS_MODEL)
    classifier.save(path, include_optimizer=False)
    with open(path, "rb") as f:
      return f.read()
