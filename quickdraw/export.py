"""Export: the trained classifier as the files an Android app loads.

`export_model(classifier, categories, config, drawings, labels, ...)` writes

  --output_graph    frozen GraphDef (retrain.py's retrained_graph.pb): input
                    node `input` float32 [batch, S, S, 3] in the backbone's
                    input range ([-1, 1] for MobileNet v1 and v2, as
                    retrain.py's; 0..255 for V3 and EfficientNet, which
                    rescale inside), output node `final_result` (softmax);
                    loads with `tf.compat.v1.import_graph_def` alone
  --output_labels   one category per line, in output order
  --output_tflite   the network as TFLite (`model.tflite`): the same input
                    and output as the graph; with --quantize,
                    `model_<mode>.tflite` per mode (dynamic, float16, int8:
                    full-integer inside, float32 at the edges)
  model_canvas[_<mode>].tflite
                    the app's model: input `input` uint8 [1, H, W, 3], the
                    canvas as the app shows it; the drawing's preprocessing
                    (`preprocessing.canvas_to_drawings`, then upsampling) in
                    float32, followed by the network of that variant
  model_info.json   the contracts and which file is which, for an app
  export_report.json  sizes, parity with Keras and accuracy of each

Every artifact is calibrated (`calibration`): a temperature fitted on
held-out drawings is folded into the softmax layer, and model_info.json
gives the score above which 95% of answers were right. The canvas models
answer a canvas with nothing to classify (blank, or too little ink: the
preprocessing makes an all-black drawing of it) with equal scores.

Every `.tflite` carries TFLite metadata (`tflite_metadata`) with the labels
inside, which MediaPipe Tasks' ImageClassifier needs, and uses TFLite
builtin ops only. With --android_assets_dir the app's files go there too:
the canvas model of --android_model as `model.tflite`.

Every file, the assets included, is first written under a temporary name
beside its destination, the checks run on those very files, and only when
all pass are they renamed into place together (`atomic_files.staged`): a
failed export leaves every previous file as it was.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import time
import warnings
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow.python.framework import convert_to_constants

from quickdraw import (__version__, atomic_files, backbones, calibration,
                       canvases, inference, preprocessing, quantization, quiet,
                       tflite_graph, tflite_metadata)
from quickdraw.errors import QuickDrawError

QUANTIZATIONS = ("dynamic", "float16", "int8")
MODES = ("float32",) + QUANTIZATIONS
# Float artifacts compute what Keras computes, in another order: their
# probabilities may differ by float rounding, never by more than this.
FLOAT_TOLERANCE = 1e-3
# canvas_to_drawings ends in whole grey levels, and a value within float
# rounding of a half may round up in TensorFlow and down in TFLite: one
# level (2/255 in [-1, 1] units) at a pixel, which upsampling spreads but
# never grows. Seen once on a CI machine (0.0069). A framing error moves
# whole strokes: differences near 1.
PREPROCESSING_TOLERANCE = 2 / 255 + FLOAT_TOLERANCE
MODEL_INFO = inference.MODEL_INFO
REPORT = "export_report.json"
# The run's Keras model (training.MODEL_FILENAME), written again calibrated.
KERAS_MODEL = "model.keras"
CANVAS_TENSOR = "canvas"  # the app model's input, before it is renamed
PREPROCESSED_TENSOR = "preprocessed"  # where preprocessing meets the network
# The app's canvas side: MediaPipe resizes the app's bitmap to it. Large
# enough that strokes of a phone-sized canvas survive that resize, small
# enough that the model's own preprocessing stays a fraction of its cost.
DEFAULT_CANVAS_SIZE = 256


@dataclasses.dataclass(frozen=True)
class ExportConfig:
  """Where and how to export.

  Attributes:
    output_graph: The frozen graph's path.
    output_labels: The labels file's path.
    output_tflite: The float32 network's TFLite path; the other `.tflite`
      files go beside it (see `tflite_path`).
    report_dir: Where `model_info.json` and `export_report.json` go.
    quantize: Quantized variants to write: any of "dynamic", "float16",
      "int8".
    final_tensor_name: The output's name (retrain.py's flag).
    android_assets_dir: If set, an Android app's `src/main/assets` folder to
      receive the canvas model, labels, frozen graph and model_info.json.
    android_model: Which variant the app receives ("float32" or a
      quantized mode, written even if not in `quantize`).
    android_graph: Put the frozen graph into the assets too, for apps
      that still load it with TensorFlow Mobile; an app using MediaPipe
      needs only the TFLite model. Without it an old graph there is
      removed, so the folder never holds one that disagrees with the model.
    canvas_size: The app model's input side H = W, in pixels.
    max_quantization_loss: Points of test top-1 a quantized variant may
      lose against float32; one that loses more is reported and never
      given to the app.
    check_drawings: Held-out test drawings run through every artifact.
    check_canvases: How many of them are also re-drawn as app canvases and
      run through every canvas model.
    representative_drawings: Training drawings that calibrate int8.
    float_tolerance: How far a float artifact's probabilities may stray
      from Keras' (float rounding in another order). Random-weight
      networks, as in tests, amplify rounding more than trained ones.
  """
  output_graph: str
  output_labels: str
  output_tflite: str
  report_dir: str
  quantize: tuple[str, ...] = ()
  final_tensor_name: str = inference.FINAL_TENSOR_NAME
  android_assets_dir: str = ""
  android_model: str = "float32"
  android_graph: bool = True
  canvas_size: int = DEFAULT_CANVAS_SIZE
  max_quantization_loss: float = 1.0
  check_drawings: int = 1000
  check_canvases: int = 300
  representative_drawings: int = 300
  float_tolerance: float = FLOAT_TOLERANCE

  def __post_init__(self):
    quantize = tuple(q for q in self.quantize if q != "none")
    for q in quantize:
      if q not in QUANTIZATIONS:
        raise QuickDrawError(
            f"--quantize={q} is not a mode; use none, dynamic, float16 or "
            "int8 (comma-separated for several)")
    if self.android_model not in MODES:
      raise QuickDrawError(
          f"--android_model={self.android_model} is not a variant; use "
          "float32, float16, dynamic or int8")
    if self.android_model != "float32" and self.android_model not in quantize:
      quantize += (self.android_model,)  # the app's variant is always made
    object.__setattr__(self, "quantize", tuple(
        m for m in QUANTIZATIONS if m in quantize))
    if not 32 <= self.canvas_size <= 2048:
      raise QuickDrawError(
          f"--canvas_size={self.canvas_size} is outside [32, 2048]; pass the "
          f"side of the app's canvas model's input (default "
          f"{DEFAULT_CANVAS_SIZE})")
    if not self.max_quantization_loss >= 0:
      raise QuickDrawError(
          f"--max_quantization_loss={self.max_quantization_loss} is "
          "negative; pass points of top-1, such as 1")

  @property
  def modes(self) -> tuple[str, ...]:
    return ("float32",) + self.quantize

  def tflite_path(self, mode: str = "float32", canvas: bool = False) -> str:
    """`model[_canvas][_<mode>].tflite` beside --output_tflite."""
    stem, ext = os.path.splitext(self.output_tflite)
    suffix = ("_canvas" if canvas else "") + (
        "" if mode == "float32" else f"_{mode}")
    return f"{stem}{suffix}{ext or '.tflite'}"


def serving_function(classifier, final_tensor_name: str):
  """The classifier as a frozen concrete function: `input` -> final tensor."""
  size = int(classifier.input_shape[1])
  spec = tf.TensorSpec([None, size, size, 3], tf.float32,
                       name=inference.INPUT_NAME)

  @tf.function(input_signature=[spec], autograph=False)
  def serve(images):
    return tf.identity(classifier(images, training=False),
                       name=final_tensor_name)

  return convert_to_constants.convert_variables_to_constants_v2(
      serve.get_concrete_function())


def frozen_graph_bytes(frozen) -> bytes:
  """The serialized GraphDef of a frozen concrete function."""
  return frozen.graph.as_graph_def().SerializeToString()


def _convert(converter: tf.lite.TFLiteConverter, what: str) -> bytes:
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
                 final_tensor_name: str = inference.FINAL_TENSOR_NAME,
                 value_range: tuple[float, float] = preprocessing.SIGNED_RANGE
                 ) -> bytes:
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
        representative, int(frozen.inputs[0].shape[1]), value_range)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
  model = _convert(converter, f"the {mode} network")
  return tflite_graph.name_io(model, inference.INPUT_NAME, final_tensor_name)


def int8_bytes(frozen, representative: np.ndarray, held_out: np.ndarray,
               held_out_labels: np.ndarray, float_network: bytes,
               loss_target: float,
               final_tensor_name: str = inference.FINAL_TENSOR_NAME,
               value_range: tuple[float, float] = preprocessing.SIGNED_RANGE
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
                                          value_range)
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
  result.model = tflite_graph.name_io(result.model, inference.INPUT_NAME,
                                      final_tensor_name)
  return result


def canvas_preprocessing_bytes(
    canvas_size: int, image_size: int,
    value_range: tuple[float, float] = preprocessing.SIGNED_RANGE) -> bytes:
  """The app model's first part, in float32: a uint8 [1, H, W, 3] canvas ->
  the network's [1, S, S, 3] input in `value_range`
  (`preprocessing.canvas_to_drawings`, then
  `preprocessing.upsample_to_rgb`, as in training)."""
  spec = tf.TensorSpec([1, canvas_size, canvas_size, 3], tf.uint8,
                       name=CANVAS_TENSOR)

  @tf.function(input_signature=[spec], autograph=False)
  def preprocess(canvas):
    drawings = preprocessing.canvas_to_drawings(canvas)
    return tf.identity(preprocessing.upsample_to_rgb(
        drawings[..., tf.newaxis], image_size, value_range),
                       name=PREPROCESSED_TENSOR)

  converter = tf.lite.TFLiteConverter.from_concrete_functions(
      [preprocess.get_concrete_function()], trackable_obj=tf.Module())
  return _convert(converter, "the canvas preprocessing")


# A network input whose brightest value is under this share of its range
# is an all-black drawing: nothing to classify.
NOTHING_DRAWN_BELOW = 0.05


def nothing_drawn_bytes(classes: int, image_size: int,
                        value_range: tuple[float, float]) -> bytes:
  """The app model's last part, in float32: (probabilities, the network's
  input) -> the probabilities, or equal scores where the input is an
  all-black drawing (`canvas_to_drawings` makes one of a blank canvas or
  too little ink), which no score threshold lets through."""
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
  return _convert(converter, "the canvas model's blank check")


def canvas_model_bytes(preprocessing_model: bytes, network: bytes,
                       final_tensor_name: str = inference.FINAL_TENSOR_NAME,
                       nothing_drawn: bytes | None = None) -> bytes:
  """The app's model: the float32 preprocessing, then `network` unchanged,
  then (if given) `nothing_drawn_bytes`' float32 check.

  The tensor where preprocessing and network meet is named `preprocessed`,
  so a check can read what the network was given.
  """
  model = tflite_graph.chain(preprocessing_model, network,
                             join_name=PREPROCESSED_TENSOR)
  if nothing_drawn is not None:
    model = tflite_graph.chain(
        model, nothing_drawn,
        more_inputs={PREPROCESSED_TENSOR: PREPROCESSED_TENSOR})
  return tflite_graph.name_io(model, inference.INPUT_NAME, final_tensor_name)


def drawing_contract(image_size: int,
                     value_range: tuple[float, float] = preprocessing.SIGNED_RANGE
                     ) -> dict:
  """The network's input: what `model.tflite` and the frozen graph take."""
  mean, std = preprocessing.normalization(value_range)
  low, high = value_range
  return {
      "name": inference.INPUT_NAME,
      "shape": [1, image_size, image_size, 3],
      "dtype": "float32",
      "value_range": [low, high],
      "mean": mean,
      "std": std,
      "normalization": (
          f"value = (pixel - {mean:g}) / {std:g}, in [{low:g}, {high:g}]"
          if (mean, std) != (0.0, 1.0) else
          "value = pixel, 0 to 255 (the network rescales inside)"),
      "channels": "RGB, all three equal (grey drawings)",
      "ink": "light ink (255) on black (0), like QuickDraw's bitmaps",
      "drawing": "the ink's bounding box padded to a square, its long "
                 "side spanning 26 of 28 pixels, centred, then resized "
                 f"bilinearly to {image_size}x{image_size}",
  }


def canvas_contract(canvas_size: int) -> dict:
  """The app model's input: the canvas as the app shows it."""
  return {
      "name": inference.INPUT_NAME,
      "shape": [1, canvas_size, canvas_size, 3],
      "dtype": "uint8",
      "pixels": "RGB, 0 to 255, as on screen (no normalization)",
      "canvas": "opaque: composite a transparent canvas over its "
                "background colour first",
      "ink": "any theme: the paper's colour is the median of the border, "
             "and ink is what differs from it in any channel",
      "too_little_ink": "a blank canvas, or ink spanning under "
                        f"{preprocessing.MIN_INK_EXTENT:.0%} of the "
                        "canvas's shorter side, gets equal scores",
      "drawing": "anywhere on the canvas, of any size; the model crops it "
                 "to its ink, frames it as QuickDraw's drawings are and "
                 "upsamples it",
      "resizing": f"MediaPipe resizes the app's bitmap to {canvas_size}x"
                  f"{canvas_size}; pad a non-square canvas to a square "
                  "with its background colour first, or it is stretched",
  }


def output_contract(categories: Sequence[str], final_tensor_name: str,
                    calibrated: dict | None = None) -> dict:
  contract = {
      "name": final_tensor_name,
      "shape": [1, len(categories)],
      "dtype": "float32",
      "activation": "softmax",
      "order": list(categories),
      "nothing_drawn": "equal scores (1 / categories) for an all-black "
                       "drawing: a blank canvas or too little ink",
  }
  if calibrated:
    contract.update(
        score_threshold=calibrated["score_threshold"],
        score_threshold_note=_threshold_note(calibrated),
        temperature=calibrated["temperature"])
  return contract


def _threshold_note(calibrated: dict) -> str:
  precision = calibrated["precision_above_threshold"]
  held_out = calibrated["drawings"]
  if precision is None:
    return (f"none of {held_out} held-out drawings reached "
            f"{calibrated['target_precision']:.0%} precision at any score; "
            "train longer")
  return (f"{calibrated['answered_above_threshold']:.1%} of {held_out} "
          f"held-out drawings scored at or above it, and {precision:.1%} of "
          "those were right; below it, say 'not sure' (MediaPipe: "
          "setScoreThreshold)")


def model_info(config: ExportConfig, categories: Sequence[str],
               image_size: int,
               value_range: tuple[float, float] = preprocessing.SIGNED_RANGE,
               architecture: str | None = None,
               calibrated: dict | None = None) -> dict:
  """Which file is which and what each takes, for `report_dir`."""
  def rel(path):
    return os.path.relpath(path, config.report_dir)
  return {
      "architecture": architecture,
      "labels": rel(config.output_labels),
      "canvas_models": {m: rel(config.tflite_path(m, canvas=True))
                        for m in config.modes},
      "canvas_input": canvas_contract(config.canvas_size),
      "drawing_models": {
          **{m: rel(config.tflite_path(m)) for m in config.modes},
          "frozen_graph": rel(config.output_graph)},
      "drawing_input": drawing_contract(image_size, value_range),
      "output": output_contract(categories, config.final_tensor_name,
                                calibrated),
  }


ASSET_MODEL = "model.tflite"
ASSET_LABELS = ("labels.txt", "retrained_labels.txt")
ASSET_GRAPH = "retrained_graph.pb"


def assets_info(config: ExportConfig, categories: Sequence[str],
                image_size: int, variant: str,
                value_range: tuple[float, float] = preprocessing.SIGNED_RANGE,
                architecture: str | None = None,
                calibrated: dict | None = None) -> dict:
  """model_info.json as the assets folder holds it: its own files."""
  info = {
      "architecture": architecture,
      "tflite": ASSET_MODEL,
      "variant": f"canvas model, {variant}",
      "input": canvas_contract(config.canvas_size),
      "output": output_contract(categories, config.final_tensor_name,
                                calibrated),
      "labels": list(ASSET_LABELS),
      "labels_note": "the same lines in both files, and inside "
                     f"{ASSET_MODEL} as its metadata's label file",
      "frozen_graph": {"file": ASSET_GRAPH,
                       "input": drawing_contract(image_size, value_range),
                       "output": config.final_tensor_name},
  }
  if not config.android_graph:
    del info["frozen_graph"]
  return info


def _description(categories: Sequence[str]) -> tflite_metadata.ModelDescription:
  shown = ", ".join(categories[:5]) + (", ..." if len(categories) > 5 else "")
  return tflite_metadata.ModelDescription(
      name="quickdraw doodle classifier",
      description=(f"Recognises {len(categories)} QuickDraw categories "
                   f"({shown}) in a doodle. Made by quickdraw-train."),
      version=f"quickdraw {__version__}", author="quickdraw",
      license="Apache-2.0")


def with_metadata(model: bytes, categories: Sequence[str], *, canvas: bool,
                  size: int, final_tensor_name: str,
                  value_range: tuple[float, float] = preprocessing.SIGNED_RANGE
                  ) -> bytes:
  """`model` with the TFLite metadata MediaPipe needs, labels inside."""
  if canvas:
    image = tflite_metadata.ImageInput(
        inference.INPUT_NAME,
        "The app's drawing canvas, opaque RGB, either ink polarity, the "
        "doodle anywhere on it.", size, size)
  else:
    mean, std = preprocessing.normalization(value_range)
    image = tflite_metadata.ImageInput(
        inference.INPUT_NAME,
        "A QuickDraw drawing (light ink on black, framed as QuickDraw's "
        "28x28 bitmaps) upsampled to the input size.", size, size,
        mean=mean, std=std, value_min=value_range[0],
        value_max=value_range[1])
  metadata = tflite_metadata.metadata_buffer(
      _description(categories), image, final_tensor_name,
      "Probabilities of the categories, in the label file's order.")
  return tflite_metadata.with_metadata(model, metadata, categories)


def _compare(reference: np.ndarray, probabilities: np.ndarray,
             labels: np.ndarray) -> dict:
  return {
      "top1_agreement": float(np.mean(
          probabilities.argmax(1) == reference.argmax(1))),
      "max_probability_difference": float(np.max(np.abs(
          probabilities - reference))),
      "test_top1": float(np.mean(probabilities.argmax(1) == labels)),
  }


def _float_failure(path: str, difference: float, against: str,
                   tolerance: float) -> QuickDrawError:
  return QuickDrawError(
      f"{path} disagrees with {against} (probabilities differ by up to "
      f"{difference:.2g}, tolerance {tolerance:g}); nothing was "
      "replaced. Please report this with the model")


def export_model(classifier, categories: Sequence[str], config: ExportConfig,
                 check_drawings: np.ndarray, check_labels: np.ndarray,
                 representative: np.ndarray | None = None,
                 held_out: tuple[np.ndarray, np.ndarray] | None = None
                 ) -> dict:
  """Writes, checks and publishes every artifact (see the module docstring).

  Args:
    classifier: The trained Keras model, images in its backbone's input
      range (`backbones.input_range_of`) -> probabilities.
    categories: Names in output order.
    config: Paths and options.
    check_drawings: Held-out test drawings, uint8 (N, 784), light on black.
    check_labels: Their true classes.
    representative: Training drawings, uint8 (N, 784), for int8
      calibration (needed only with int8).
    held_out: (uint8 drawings, labels) not trained on, such as the
      validation split: the scores are calibrated on them and int8
      chooses its float layers on them (without them the scores are left
      uncalibrated, and int8 cannot be made).

  Returns:
    The export report: per artifact its path, size and figures against
    Keras on the check drawings (and, for canvas models, on those drawings
    re-drawn as app canvases), the quantized variants' loss against
    float32, and which variant the Android assets received.

  Raises:
    QuickDrawError: a float artifact disagrees with Keras beyond
      FLOAT_TOLERANCE, a canvas model's preprocessing differs from
      `preprocessing.canvas_to_drawings`, a path cannot be written, or a
      model needs ops TFLite does not build in; nothing is replaced.
  """
  finish_interrupted_export(config.report_dir)
  calibrated = None
  if held_out is not None and calibration.softmax_layer(classifier):
    logging.info("Calibrating on %d held-out drawings", len(held_out[0]))
    calibrated = calibrate(classifier, *held_out)
  with (calibration.temperature_folded(classifier, calibrated["temperature"])
        if calibrated else contextlib.nullcontext()):
    return _export(classifier, categories, config, check_drawings,
                   check_labels, representative, held_out, calibrated)


JOURNAL = ".export.journal"


def _keras_bytes(classifier) -> bytes:
  """`classifier` as a .keras file's bytes (saved without its optimizer)."""
  import tempfile
  with tempfile.TemporaryDirectory() as folder:
    path = os.path.join(folder, KERAS_MODEL)
    classifier.save(path, include_optimizer=False)
    with open(path, "rb") as f:
      return f.read()


def finish_interrupted_export(report_dir: str) -> int:
  """Completes an export killed while renaming its files into place (its
  journal in `report_dir` lists them), and says so: the run's files are
  then all from that export, never a mix of two.

  Returns:
    How many files were still to rename (0: nothing was interrupted).
  """
  finished = atomic_files.finish_interrupted(os.path.join(report_dir,
                                                          JOURNAL))
  if finished:
    print(f"quickdraw: the last export into {report_dir} was killed while "
          f"renaming its files; finished it ({finished} files), so every "
          "file is from that export")
  return finished


def calibrate(classifier, drawings: np.ndarray, labels: np.ndarray) -> dict:
  """Fits the temperature and the score threshold on held-out drawings
  (`calibration.report`'s figures)."""
  before = inference.predict_drawings(
      inference.KerasPredictor("", classifier), drawings)
  labels = np.asarray(labels, np.int64)
  temperature = calibration.fit_temperature(before, labels)
  after = calibration.rescale(before, temperature)
  return calibration.report(before, after, labels, temperature,
                            calibration.score_threshold(after, labels))


def _export(classifier, categories, config, check_drawings, check_labels,
            representative, held_out, calibrated):
  """`export_model`'s work, the classifier calibrated already."""
  image_size = int(classifier.input_shape[1])
  value_range = backbones.input_range_of(classifier)
  architecture = backbones.find_architecture(classifier)
  architecture = architecture.name if architecture else None
  check_drawings = np.asarray(check_drawings, np.uint8).reshape(-1, 784)
  check_labels = np.asarray(check_labels, np.int64)
  frozen = serving_function(classifier, config.final_tensor_name)
  name = config.final_tensor_name
  preprocess = canvas_preprocessing_bytes(config.canvas_size, image_size,
                                          value_range)
  nothing_drawn = nothing_drawn_bytes(len(categories), image_size,
                                      value_range)
  contents = {config.output_graph: frozen_graph_bytes(frozen),
              config.output_labels: inference.labels_text(
                  categories).encode()}
  networks, int8 = {}, None
  for mode in config.modes:
    logging.info("Converting to TFLite (%s)", mode)
    if mode == "int8":
      if representative is None or held_out is None:
        raise ValueError("int8 needs representative and held-out drawings")
      int8 = int8_bytes(frozen, representative, *held_out,
                        networks["float32"],
                        config.max_quantization_loss / 2, name, value_range)
      networks[mode] = int8.model
    else:
      networks[mode] = tflite_bytes(frozen, mode, final_tensor_name=name,
                                    value_range=value_range)
    contents[config.tflite_path(mode)] = with_metadata(
        networks[mode], categories, canvas=False, size=image_size,
        final_tensor_name=name, value_range=value_range)
    contents[config.tflite_path(mode, canvas=True)] = with_metadata(
        canvas_model_bytes(preprocess, networks[mode], name, nothing_drawn),
        categories,
        canvas=True, size=config.canvas_size, final_tensor_name=name)
  if calibrated:
    # The Keras model with the same calibrated scores as every other
    # artifact, so that model_info.json's threshold means the same for it.
    contents[os.path.join(config.report_dir, KERAS_MODEL)] = _keras_bytes(
        classifier)
  contents[os.path.join(config.report_dir, MODEL_INFO)] = (json.dumps(
      model_info(config, categories, image_size, value_range, architecture,
                 calibrated), indent=2) + "\n").encode()
  report_path = os.path.join(config.report_dir, REPORT)
  assets = {}
  if config.android_assets_dir:
    folder = os.path.expanduser(config.android_assets_dir)
    assets = {os.path.join(folder, n): n for n in (
        ASSET_MODEL, *ASSET_LABELS, MODEL_INFO,
        *([ASSET_GRAPH] if config.android_graph else []))}

  # On a full disk nothing is replaced: the temporaries go with the block.
  with atomic_files.disk_full_is_an_error(
      config.report_dir, "the export's files",
      2 * sum(len(data) for data in contents.values())):
    # Variants an earlier export wrote and this one does not (another
    # --quantize) would sit beside the new model, of another model: gone
    # in the same transaction. So is the assets' graph with
    # --noandroid_graph.
    stale = [config.tflite_path(mode, canvas)
             for mode in MODES if mode not in config.modes
             for canvas in (False, True)]
    if config.android_assets_dir and not config.android_graph:
      stale.append(os.path.join(
          os.path.expanduser(config.android_assets_dir), ASSET_GRAPH))
    with atomic_files.staged([*contents, report_path, *assets],
                             journal=os.path.join(config.report_dir, JOURNAL),
                             removed=stale) as temps:
      for path, data in contents.items():
        with open(temps[path], "wb") as f:
          f.write(data)
      report, reference = _check(classifier, categories, config, temps,
                                 check_drawings, check_labels, image_size,
                                 value_range)
      report["architecture"] = architecture
      if calibrated:
        report["calibration"] = dict(calibrated, **_test_calibration(
            reference, check_labels, calibrated["temperature"]))
      if int8 is not None:
        report["int8_float_layers"] = {
            "layers": int8.float_layers,
            "held_out_drawings": int(len(held_out[0])),
            "held_out_loss_points": int8.held_out_loss,
            "layer_errors": int8.layer_errors}
      if assets:
        variant = _app_variant(config, report)
        sources = {ASSET_MODEL: config.tflite_path(variant, canvas=True),
                   ASSET_GRAPH: config.output_graph,
                   **{n: config.output_labels for n in ASSET_LABELS}}
        for target, asset in assets.items():
          data = (contents[sources[asset]] if asset in sources else
                  (json.dumps(assets_info(config, categories, image_size,
                                          variant, value_range, architecture,
                                          calibrated),
                              indent=2) + "\n").encode())
          with open(temps[target], "wb") as f:
            f.write(data)
        report["android_assets"] = {
            "folder": os.path.expanduser(config.android_assets_dir),
            "asked": config.android_model, "given": variant}
      with open(temps[report_path], "w") as f:
        f.write(json.dumps(report, indent=2) + "\n")
    if assets:
      logging.info("Wrote the app's files into %s", config.android_assets_dir)
  return report


def _check(classifier, categories, config: ExportConfig, temps: dict,
           drawings: np.ndarray, labels: np.ndarray, image_size: int,
           value_range: tuple[float, float]) -> dict:
  """Runs every written artifact (from its temporary file) against Keras.

  Network artifacts take the check drawings; canvas models take the first
  `check_canvases` of them re-drawn as app canvases, and the network input
  their preprocessing made is compared with `canvas_to_drawings`' exactly.

  Returns:
    (the report, Keras' probabilities for the check drawings).
  """
  keras_model = inference.KerasPredictor("", classifier)
  reference = inference.predict_drawings(keras_model, drawings)
  report = {"check_drawings": int(len(drawings)),
            "float_tolerance": config.float_tolerance,
            "max_quantization_loss": config.max_quantization_loss,
            "keras": {"test_top1": float(np.mean(
                reference.argmax(1) == labels))},
            "artifacts": {}}
  artifacts = report["artifacts"]
  frozen = inference.FrozenGraphPredictor(temps[config.output_graph],
                                          config.final_tensor_name,
                                          value_range)
  figures = _compare(reference, inference.predict_drawings(frozen, drawings),
                     labels)
  artifacts["frozen_graph"] = dict(figures, path=config.output_graph,
                                   bytes=os.path.getsize(
                                       temps[config.output_graph]))
  if figures["max_probability_difference"] > config.float_tolerance:
    raise _float_failure(config.output_graph,
                         figures["max_probability_difference"],
                         "the Keras model", config.float_tolerance)

  count = min(len(drawings), config.check_canvases)
  # Spread over the check drawings, which are sorted by class.
  chosen = np.unique(np.linspace(0, len(drawings) - 1, count).round()
                     .astype(np.int64))
  # Drawn again with a pen, as an app's canvas: every pen, theme and place
  # of the quality gate's suite.
  pictures = canvases.pen_suite(drawings[chosen], config.canvas_size)[0]
  seen = preprocessing.canvas_to_drawings(pictures).numpy().astype(np.uint8)
  canvas_labels = labels[chosen]
  count = len(chosen)
  canvas_reference = inference.predict_drawings(keras_model, seen)
  report["keras"]["canvas_top1"] = float(np.mean(
      canvas_reference.argmax(1) == canvas_labels))
  report["check_canvases"] = count

  for mode in config.modes:
    path = config.tflite_path(mode)
    # Every core: checking 1,000 drawings is batch work.
    network = inference.TFLitePredictor(temps[path],
                                        num_threads=os.cpu_count())
    if network.input_range != value_range:
      raise QuickDrawError(
          f"{path}'s metadata says its input is in {network.input_range}, "
          f"not {value_range}; nothing was replaced. Please report this")
    figures = _compare(reference,
                       inference.predict_drawings(network, drawings), labels)
    figures.update(path=path, bytes=os.path.getsize(temps[path]))
    artifacts[f"tflite_{mode}"] = figures
    if mode == "float32" and (figures["max_probability_difference"] >
                              config.float_tolerance):
      raise _float_failure(path, figures["max_probability_difference"],
                           "the Keras model", config.float_tolerance)

    path = config.tflite_path(mode, canvas=True)
    app = inference.TFLitePredictor(temps[path], num_threads=os.cpu_count(),
                                    keep_tensor=PREPROCESSED_TENSOR)
    probabilities = app(pictures)
    # In [-1, 1] units whatever the range, so one tolerance fits all.
    geometry = float(np.max(np.abs(
        app.kept - inference.to_model_input(seen, image_size, value_range))
                            ) * 2 / (value_range[1] - value_range[0]))
    figures = _compare(canvas_reference, probabilities, canvas_labels)
    figures = {"canvas_top1": figures["test_top1"],
               "canvas_top1_agreement": figures["top1_agreement"],
               "max_probability_difference":
                   figures["max_probability_difference"],
               "preprocessing_difference": geometry,
               "path": path, "bytes": os.path.getsize(temps[path])}
    artifacts[f"canvas_{mode}"] = figures
    if geometry > PREPROCESSING_TOLERANCE:
      raise QuickDrawError(
          f"{path}'s preprocessing differs from canvas_to_drawings' by "
          f"{geometry:.2g}; nothing was replaced. Please report this")
    if mode == "float32" and (figures["max_probability_difference"] >
                              config.float_tolerance):
      raise _float_failure(path, figures["max_probability_difference"],
                           "the Keras model on the same canvases",
                           config.float_tolerance)

  base = artifacts["tflite_float32"]["test_top1"]
  canvas_base = artifacts["canvas_float32"]["canvas_top1"]
  for mode in config.quantize:
    loss = 100 * (base - artifacts[f"tflite_{mode}"]["test_top1"])
    # Each row's own loss; whether the app may have the variant is judged
    # on the network's check drawings, more of them than canvases.
    own = {"tflite": loss, "canvas": 100 * (
        canvas_base - artifacts[f"canvas_{mode}"]["canvas_top1"])}
    for kind in ("tflite", "canvas"):
      artifacts[f"{kind}_{mode}"]["loss_points"] = own[kind]
      artifacts[f"{kind}_{mode}"]["within_loss_limit"] = (
          loss <= config.max_quantization_loss)
    if loss > config.max_quantization_loss:
      logging.warning(
          "%s loses %.2f points of test top-1 against float32, more than "
          "--max_quantization_loss=%g; it is written but never given to the "
          "app. A fine-tuned model quantizes far better (configs/"
          "accurate.flags: 0.3 points lost where a frozen head lost 8.6, "
          "scripts/README.md)", config.tflite_path(mode), loss,
          config.max_quantization_loss)
  return report, reference


def _test_calibration(calibrated: np.ndarray, labels: np.ndarray,
                      temperature: float) -> dict:
  """Calibration error on the test drawings, which calibration never saw."""
  before = calibration.rescale(calibrated, 1.0 / temperature)
  return {"test_drawings": int(len(labels)),
          "test_ece_before": calibration.expected_calibration_error(
              before, labels),
          "test_ece_after": calibration.expected_calibration_error(
              calibrated, labels)}


def _app_variant(config: ExportConfig, report: dict) -> str:
  """--android_model, or float32 if that variant loses too much."""
  asked = config.android_model
  if asked == "float32" or report["artifacts"][f"tflite_{asked}"][
      "within_loss_limit"]:
    return asked
  logging.warning(
      "--android_model=%s loses more than --max_quantization_loss=%g points; "
      "the app's assets receive the float32 canvas model instead",
      asked, config.max_quantization_loss)
  return "float32"


def format_report(report: dict) -> str:
  """The export report as a small table."""
  lines = [f"Export check, every artifact against the Keras model: "
           f"tflite_* rows (the network) on {report['check_drawings']} test "
           f"drawings as stored (Keras top-1 "
           f"{report['keras']['test_top1']:.4f}); canvas_* rows (the app's "
           f"model) on {report.get('check_canvases', 0)} of them re-drawn "
           "with a pen as app canvases (pens of 1.5% to 6% of the canvas, "
           "light, dark and grey themes, centred, off-centre and small; "
           f"Keras top-1 {report['keras'].get('canvas_top1', 0):.4f}). "
           "loss: points of top-1 lost against float32 on the row's own "
           "inputs.",
           f"  {'artifact':<16} {'size':>10} {'top-1':>7} {'agree':>8} "
           f"{'max |dp|':>9} {'loss':>7}"]
  for name, a in report["artifacts"].items():
    top1 = a.get("test_top1", a.get("canvas_top1"))
    agree = a.get("top1_agreement", a.get("canvas_top1_agreement"))
    loss = (f"{a['loss_points']:+6.2f}{'' if a['within_loss_limit'] else '!'}"
            if "loss_points" in a else "")
    lines.append(f"  {name:<16} {a['bytes'] / 1e6:8.2f} MB {top1:7.4f}"
                 f" {agree:8.4f} {a['max_probability_difference']:9.2g} "
                 f"{loss:>7}")
  if "android_assets" in report:
    given = report["android_assets"]
    lines.append(f"app model in {given['folder']}: canvas {given['given']}"
                 + ("" if given["given"] == given["asked"] else
                    f" (asked for {given['asked']}: over the loss limit)"))
  return "\n".join(lines)


def tflite_latency(path: str, runs: int = 50) -> float:
  """Median seconds of one single-input TFLite inference on one thread:
  a drawing's model input, or for a canvas model a re-drawn canvas."""
  predictor = inference.TFLitePredictor(path, batch_size=1, num_threads=1)
  if predictor.takes_canvas:
    from quickdraw import synthetic
    x = canvases.redraw(synthetic.make_drawings(0, 1),
                        predictor.canvas_shape[0])
  else:
    x = np.random.default_rng(0).uniform(
        *predictor.input_range,
        (1, predictor.image_size, predictor.image_size, 3)).astype(np.float32)
  predictor(x)
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    predictor(x)
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def inputs_from_split(
    source, split, count: int, image_size: int,
    value_range: tuple[float, float] = preprocessing.SIGNED_RANGE
) -> tuple[np.ndarray, np.ndarray]:
  """Up to `count` drawings spread evenly over a split, as model inputs.

  Returns:
    (float32 (n, S, S, 3) images in `value_range`, int (n,) labels).
  """
  drawings, labels = drawings_from_split(source, split, count)
  return inference.to_model_input(drawings, image_size, value_range), labels


def drawings_from_split(source, split,
                        count: int) -> tuple[np.ndarray, np.ndarray]:
  """Up to `count` drawings spread evenly over a split.

  Returns:
    (uint8 (n, 784) drawings, int (n,) labels).
  """
  size = source.split_size(split)
  n = min(count, size)
  positions = np.linspace(0, size - 1, n).round().astype(np.int64)
  drawings, labels = source.read_positions(split, np.unique(positions))
  return drawings, labels.astype(np.int64)
