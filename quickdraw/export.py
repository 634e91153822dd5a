"""Export: the trained classifier as the files an Android app loads.

`export_model(classifier, categories, config, check_drawings, ...)` writes

  --output_graph    frozen GraphDef (retrain.py's retrained_graph.pb): input
                    node `input` float32 [batch, S, S, 3] in [-1, 1], output
                    node `final_result` (softmax); loads with
                    `tf.compat.v1.import_graph_def` and nothing else
  --output_labels   one category per line, in output order
  --output_tflite   float32 TFLite, same input and output; with --quantize,
                    `<name>_<mode>.tflite` for each mode (dynamic, float16,
                    int8: full-integer inside, float32 at the edges so the
                    contract stays the same)
  model_info.json   the contract, for an app to read
  export_report.json  sizes, parity with Keras and test accuracy of each

and, with --android_assets_dir, copies of the app's files there.

Every file is first written under a temporary name beside its destination,
the checks run on those very files, and only when all pass are they renamed
into place: a failed export leaves the previous one intact.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
from collections.abc import Iterator, Sequence

import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow.python.framework import convert_to_constants

from quickdraw import atomic_files, inference
from quickdraw.errors import QuickDrawError

QUANTIZATIONS = ("dynamic", "float16", "int8")
# Float artifacts compute what Keras computes, in another order: their
# probabilities may differ by float rounding, never by more than this.
FLOAT_TOLERANCE = 1e-3
MODEL_INFO = "model_info.json"
REPORT = "export_report.json"


@dataclasses.dataclass(frozen=True)
class ExportConfig:
  """Where and how to export.

  Attributes:
    output_graph: The frozen graph's path.
    output_labels: The labels file's path.
    output_tflite: The float32 TFLite file's path; quantized variants go
      beside it as `<stem>_<mode>.tflite`.
    report_dir: Where `model_info.json` and `export_report.json` go.
    quantize: Quantized variants to write: any of "dynamic", "float16",
      "int8".
    final_tensor_name: The output node's name (retrain.py's flag).
    android_assets_dir: If set, an Android app's `src/main/assets` folder to
      receive the TFLite model, labels, frozen graph and model_info.json.
    check_drawings: Held-out test drawings run through every artifact.
    representative_drawings: Training drawings that calibrate int8.
  """
  output_graph: str
  output_labels: str
  output_tflite: str
  report_dir: str
  quantize: tuple[str, ...] = ()
  final_tensor_name: str = inference.FINAL_TENSOR_NAME
  android_assets_dir: str = ""
  check_drawings: int = 1000
  representative_drawings: int = 300

  def __post_init__(self):
    object.__setattr__(self, "quantize", tuple(
        q for q in self.quantize if q != "none"))
    for q in self.quantize:
      if q not in QUANTIZATIONS:
        raise QuickDrawError(
            f"--quantize={q} is not a mode; use none, dynamic, float16 or "
            "int8 (comma-separated for several)")

  def tflite_path(self, mode: str = "float32") -> str:
    if mode == "float32":
      return self.output_tflite
    stem, ext = os.path.splitext(self.output_tflite)
    return f"{stem}_{mode}{ext or '.tflite'}"


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


def tflite_bytes(frozen, mode: str = "float32",
                 representative: np.ndarray | None = None) -> bytes:
  """Converts a frozen function to TFLite.

  Args:
    frozen: From `serving_function`.
    mode: "float32", "dynamic" (int8 weights), "float16" (float16 weights)
      or "int8" (int8 weights and activations, calibrated on
      `representative`; input and output stay float32).
    representative: model inputs or uint8 drawings (as `export_model`)
      for int8 calibration.
  """
  converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen])
  if mode != "float32":
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
  if mode == "float16":
    converter.target_spec.supported_types = [tf.float16]
  if mode == "int8":
    if representative is None or not len(representative):
      raise ValueError("int8 needs representative inputs")
    size = int(frozen.inputs[0].shape[1])
    converter.representative_dataset = lambda: (
        [x[None]] for chunk in model_input_chunks(representative, size)
        for x in chunk)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
  return converter.convert()


def model_info(categories: Sequence[str], image_size: int,
               final_tensor_name: str, tflite_name: str) -> dict:
  """The input/output contract, stated for an app."""
  return {
      "tflite": tflite_name,
      "labels": "retrained_labels.txt",
      "input": {
          "name": inference.INPUT_NAME,
          "shape": [1, image_size, image_size, 3],
          "dtype": "float32",
          "normalization": "value = (pixel - 127.5) / 127.5, in [-1, 1]",
          "channels": "RGB, all three equal (grey drawings)",
          "ink": "light ink (255) on black (0), like QuickDraw's bitmaps; "
                 "invert a dark-on-light canvas first",
          "drawing": "crop the canvas to the ink's bounding box, pad to a "
                     "square, shrink to 28x28, then resize bilinearly to "
                     f"{image_size}x{image_size}",
      },
      "output": {
          "name": final_tensor_name,
          "shape": [1, len(categories)],
          "dtype": "float32",
          "activation": "softmax",
          "order": list(categories),
      },
  }


@contextlib.contextmanager
def _staged(paths: Sequence[str]) -> Iterator[dict[str, str]]:
  """Temporary files beside each destination; renamed in only on success."""
  temps: dict[str, str] = {}
  try:
    for path in paths:
      temps[path] = atomic_files.temp_beside(path)
    yield temps
    for path, tmp in temps.items():
      os.replace(tmp, path)
    temps.clear()
  finally:
    for tmp in temps.values():
      with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)


def _compare(reference: np.ndarray, probabilities: np.ndarray,
             labels: np.ndarray) -> dict:
  return {
      "top1_agreement": float(np.mean(
          probabilities.argmax(1) == reference.argmax(1))),
      "max_probability_difference": float(np.max(np.abs(
          probabilities - reference))),
      "test_top1": float(np.mean(probabilities.argmax(1) == labels)),
  }


def model_input_chunks(inputs: np.ndarray, image_size: int,
                       chunk: int = 256) -> Iterator[np.ndarray]:
  """float32 model inputs, `chunk` at a time, from model inputs or from
  uint8 drawings (upsampled here, so that only a chunk is ever held)."""
  for i in range(0, len(inputs), chunk):
    part = np.asarray(inputs[i:i + chunk])
    if part.dtype == np.uint8:
      part = inference.to_model_input(part, image_size)
    yield part


def _predict(predictor: inference.Predictor, inputs: np.ndarray) -> np.ndarray:
  return np.concatenate([predictor(x) for x in model_input_chunks(
      inputs, predictor.image_size)])


def export_model(classifier, categories: Sequence[str], config: ExportConfig,
                 check_images: np.ndarray, check_labels: np.ndarray,
                 representative: np.ndarray | None = None) -> dict:
  """Writes, checks and publishes every artifact (see the module docstring).

  Args:
    classifier: The trained Keras model, [-1, 1] images -> probabilities.
    categories: Names in output order.
    config: Paths and options.
    check_images: Held-out test inputs: float32 (N, S, S, 3) model inputs,
      or uint8 (N, 784) drawings, upsampled a chunk at a time (1,000 inputs
      at 224 px would take 600 MB at once).
    check_labels: Their true classes.
    representative: Training inputs for int8 calibration, in either form
      (needed only with int8).

  Returns:
    The export report: per artifact its path, size and figures against
    Keras on the check images.

  Raises:
    QuickDrawError: a float artifact disagrees with Keras beyond
      FLOAT_TOLERANCE, or a path cannot be written; nothing is replaced.
  """
  image_size = int(classifier.input_shape[1])
  frozen = serving_function(classifier, config.final_tensor_name)
  modes = ("float32",) + config.quantize
  contents = {config.output_graph: frozen_graph_bytes(frozen),
              config.output_labels: inference.labels_text(
                  categories).encode()}
  for mode in modes:
    logging.info("Converting to TFLite (%s)", mode)
    contents[config.tflite_path(mode)] = tflite_bytes(
        frozen, mode, representative if mode == "int8" else None)
  app_tflite = config.tflite_path(
      "int8" if "int8" in config.quantize else "float32")
  info = model_info(categories, image_size, config.final_tensor_name,
                    os.path.basename(app_tflite))
  contents[os.path.join(config.report_dir, MODEL_INFO)] = (
      json.dumps(info, indent=2) + "\n").encode()

  reference = _predict(inference.KerasPredictor("", classifier), check_images)
  report = {"check_drawings": int(len(check_images)),
            "float_tolerance": FLOAT_TOLERANCE,
            "keras": {"test_top1": float(np.mean(
                reference.argmax(1) == check_labels))},
            "artifacts": {}}
  with _staged(list(contents)) as temps:
    for path, data in contents.items():
      with open(temps[path], "wb") as f:
        f.write(data)
    checks = [("frozen_graph", config.output_graph)] + [
        (f"tflite_{m}", config.tflite_path(m)) for m in modes]
    for name, path in checks:
      predictor = (inference.FrozenGraphPredictor(temps[path],
                                                  config.final_tensor_name)
                   if path.endswith(".pb") else
                   # Every core: checking 1,000 drawings is batch work.
                   inference.TFLitePredictor(temps[path],
                                             num_threads=os.cpu_count()))
      figures = _compare(reference, _predict(predictor, check_images),
                         check_labels)
      figures.update(path=path, bytes=len(contents[path]))
      report["artifacts"][name] = figures
      is_float = name in ("frozen_graph", "tflite_float32")
      if is_float and figures["max_probability_difference"] > FLOAT_TOLERANCE:
        raise QuickDrawError(
            f"{path} disagrees with the Keras model (probabilities differ by "
            f"up to {figures['max_probability_difference']:.2g}, tolerance "
            f"{FLOAT_TOLERANCE}); nothing was replaced. Please report this "
            "with the model")
  report_path = os.path.join(config.report_dir, REPORT)
  atomic_files.write_text(report_path, json.dumps(report, indent=2) + "\n")

  if config.android_assets_dir:
    copy_to_android_assets(config, app_tflite)
  return report


def copy_to_android_assets(config: ExportConfig, app_tflite: str) -> None:
  """Copies the app's files into its assets folder, each atomically.

  The folder receives `model.tflite` (the int8 variant when one was made,
  else float32), `retrained_labels.txt`, `labels.txt` (the same lines, the
  name TFLite examples use), the legacy `retrained_graph.pb` and
  `model_info.json`.
  """
  folder = os.path.expanduser(config.android_assets_dir)
  sources = {
      "model.tflite": app_tflite,
      "retrained_labels.txt": config.output_labels,
      "labels.txt": config.output_labels,
      "retrained_graph.pb": config.output_graph,
      MODEL_INFO: os.path.join(config.report_dir, MODEL_INFO),
  }
  targets = {os.path.join(folder, name): src for name, src in sources.items()}
  with _staged(list(targets)) as temps:
    for target, src in targets.items():
      shutil.copyfile(src, temps[target])
  logging.info("Copied the app's files into %s", folder)


def format_report(report: dict) -> str:
  """The export report as a small table."""
  lines = [f"export check on {report['check_drawings']} test drawings "
           f"(Keras top-1 {report['keras']['test_top1']:.4f}):",
           f"  {'artifact':<16} {'size':>10} {'top-1':>7} {'agree':>8} "
           f"{'max |dp|':>9}"]
  for name, a in report["artifacts"].items():
    lines.append(f"  {name:<16} {a['bytes'] / 1e6:8.2f} MB {a['test_top1']:7.4f}"
                 f" {a['top1_agreement']:8.4f} {a['max_probability_difference']:9.2g}")
  return "\n".join(lines)


def tflite_latency(path: str, image_size: int, runs: int = 50) -> float:
  """Median seconds of one single-drawing TFLite inference."""
  predictor = inference.TFLitePredictor(path, batch_size=1)
  x = np.random.default_rng(0).uniform(
      -1, 1, (1, image_size, image_size, 3)).astype(np.float32)
  predictor(x)
  times = []
  for _ in range(runs):
    start = time.perf_counter()
    predictor(x)
    times.append(time.perf_counter() - start)
  return float(np.median(times))


def inputs_from_split(source, split, count: int,
                      image_size: int) -> tuple[np.ndarray, np.ndarray]:
  """Up to `count` drawings spread evenly over a split, as model inputs.

  Returns:
    (float32 (n, S, S, 3) images, int (n,) labels).
  """
  drawings, labels = drawings_from_split(source, split, count)
  return inference.to_model_input(drawings, image_size), labels


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
