"""Full-integer (int8) quantization that keeps what accuracy it can.

Quantizing every layer of an ImageNet MobileNet that now looks at doodles
can cost several points of top-1. TensorFlow's quantization debugger shows
where: frozen `mobilenet_0.25_224` on 22 categories loses 4.0 points, and
one layer, the third depthwise convolution, accounts for most of it. Three
of its channels carry ImageNet batch-norm gains 150 to 200 times the
median, which turn the input's rounding into flips of their ReLU6 outputs.
More calibration drawings change nothing. Keeping such layers in float
(selective quantization) recovers most of the loss at little cost in size
or speed, since depthwise layers hold few weights.

Which layers those are depends on the model, so `int8_network` measures it
for each export: it takes the layers with the largest quantization error as
suspects, then keeps in float, one at a time, the suspect that brings int8
closest to float32 on held-out drawings, until int8 is within
`loss_target` points of float32 there. Some models stay above it: the
rest of the error is spread thinly over every early layer. The export's
gate (`--max_quantization_loss`) then keeps that variant from the app.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import os
import warnings
from collections.abc import Callable, Iterator

import numpy as np
import tensorflow as tf

from quickdraw import inference, quiet

# Ops whose quantization error is ranked (the ones with weights; pooling and
# softmax follow their inputs' scales).
_RANKED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
DEBUG_DRAWINGS = 200
# Agreements this close (in points) count as a tie, broken by cost: a
# thousand drawings measure no finer.
NEAR_TIE = 0.3


@dataclasses.dataclass
class Int8Result:
  """An int8 network and how it was chosen.

  Attributes:
    model: The TFLite model (float32 input and output).
    float_layers: Output tensors of the layers kept in float, in the order
      they were chosen.
    held_out_loss: Points of top-1 lost against float32 on the held-out
      drawings with 0, 1, ... of `float_layers` in float.
    layer_errors: Per suspect layer, its quantization error in quantization
      steps (root mean squared error over the output's scale); empty when
      every layer quantized was within the target (nothing was ranked).
  """
  model: bytes
  float_layers: list[str]
  held_out_loss: list[float]
  layer_errors: dict[str, float]


def representative_dataset(drawings: np.ndarray, image_size: int, *,
                           value_range: tuple[float, float]
                           ) -> Callable[[], Iterator[list[np.ndarray]]]:
  """A converter's representative-dataset factory: uint8 drawings as model
  inputs (in the network's `value_range`), one at a time."""
  def generate():
    for i in range(0, len(drawings), 64):
      batch = inference.to_model_input(drawings[i:i + 64], image_size,
                                       value_range=value_range)
      for x in batch:
        yield [x[None]]
  return generate


def _layer_errors(debugger) -> dict[str, float]:
  """{output tensor: RMSE / scale} for the ranked layers."""
  debugger.run()
  dump = io.StringIO()
  debugger.layer_statistics_dump(dump)
  dump.seek(0)
  errors = {}
  for row in csv.DictReader(dump):
    if row["op_name"] in _RANKED_OPS and float(row["scale"]) > 0:
      errors[row["tensor_name"]] = (float(row["mean_squared_error"]) ** 0.5
                                    / float(row["scale"]))
  return errors


def predictions(model: bytes, drawings: np.ndarray, *,
                value_range: tuple[float, float]) -> np.ndarray:
  """A TFLite network's top-1 class for each drawing."""
  predictor = inference.TFLitePredictor("", num_threads=os.cpu_count(),
                                        model_content=model,
                                        input_range=value_range)
  return inference.predict_drawings(predictor, drawings).argmax(1)


def int8_network(converter: tf.lite.TFLiteConverter, image_size: int,
                 representative: np.ndarray, held_out: np.ndarray,
                 held_out_labels: np.ndarray, float_classes: np.ndarray,
                 loss_target: float, costs: dict[str, int] | None = None,
                 candidates: int = 5, max_float_layers: int = 3, *,
                 value_range: tuple[float, float]) -> Int8Result:
  """Converts to int8, keeping the fewest layers in float that it needs.

  When every layer quantized is within the target, that model is the
  answer. Otherwise the `candidates` layers with the largest quantization
  error are the suspects (the error of each is measured with its own input
  quantized, so a layer can look bad and matter little). Layers are then
  kept in float one at a time, each time the suspect whose float version
  makes int8 agree most with float32 on the held-out drawings (agreement
  counts every changed answer, so it measures finer than the change in
  accuracy; of suspects within NEAR_TIE points of the best, the cheapest
  to keep in float: `tflite_graph.layer_costs`), until int8's top-1 there
  is at most `loss_target` points below float32's, or `max_float_layers`
  are float.

  Args:
    converter: A converter of the float network (not yet configured).
    image_size: The network's input side.
    representative: uint8 training drawings that calibrate the ranges.
    held_out: uint8 drawings the model was not trained on (validation),
      for ranking the layers and measuring the loss.
    held_out_labels: Their classes.
    float_classes: float32's top-1 class for each of `held_out`.
    loss_target: Stop once int8 is at most this many points below
      `float_top1` on `held_out`.
    costs: Cost of each layer in float (`tflite_graph.layer_costs`).
    candidates: Suspects, by quantization error.
    max_float_layers: The most layers kept in float.
    value_range: The network's input range (`backbones`).

  Returns:
    The first model within the target, or else the one with the smallest
    loss.
  """
  converter.optimizations = [tf.lite.Optimize.DEFAULT]
  converter.representative_dataset = representative_dataset(
      representative, image_size, value_range=value_range)
  # int8 kernels first; float kernels for the layers kept in float.
  converter.target_spec.supported_ops = [
      tf.lite.OpsSet.TFLITE_BUILTINS_INT8, tf.lite.OpsSet.TFLITE_BUILTINS]
  float_top1 = 100 * np.mean(float_classes == held_out_labels)

  def scored(model: bytes) -> tuple[float, float, bytes]:
    """(agreement with float32 and loss, in points; the model)."""
    classes = predictions(model, held_out, value_range=value_range)
    return (100 * np.mean(classes == float_classes),
            float_top1 - 100 * np.mean(classes == held_out_labels), model)

  # Every layer quantized first: when that is within the target, as it
  # often is, the debugger's ranking (a second calibration and a model
  # instrumented at every layer: several times the conversion's time for
  # EfficientNet) is not needed.
  with quiet.native_stderr_silenced():
    agreement, loss, model = scored(converter.convert())
  if loss <= loss_target:
    return Int8Result(model, [], [loss], {})
  with warnings.catch_warnings(), quiet.native_stderr_silenced():
    warnings.filterwarnings("ignore", "Statistics for quantized inputs")
    debugger = tf.lite.experimental.QuantizationDebugger(
        converter=converter,
        debug_dataset=representative_dataset(
            held_out[:DEBUG_DRAWINGS], image_size, value_range=value_range))
    errors = _layer_errors(debugger)
  suspects = sorted(errors, key=errors.get, reverse=True)[:candidates]

  def quantized(float_layers: list[str]) -> tuple[float, float, bytes]:
    with quiet.native_stderr_silenced():
      debugger.options = tf.lite.experimental.QuantizationDebugOptions(
          denylisted_nodes=float_layers or None)
      return scored(debugger.get_nondebug_quantized_model())

  chosen, losses = [], [loss]
  while loss > loss_target and len(chosen) < max_float_layers:
    trials = [(*quantized(chosen + [s]), s) for s in suspects
              if s not in chosen]
    if not trials:
      break
    highest = max(t[0] for t in trials)
    best = min((t for t in trials if t[0] >= highest - NEAR_TIE),
               key=lambda t: (costs or {}).get(t[3], 0))
    if best[0] <= agreement:
      break  # no suspect helps any more
    agreement, loss, model = best[:3]
    chosen.append(best[3])
    losses.append(loss)
  return Int8Result(model, chosen, losses,
                    {name: errors[name] for name in suspects})
