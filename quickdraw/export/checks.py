"""Checks: every written artifact run against the Keras model, on drawings
and on pen-drawn app canvases, and the report they make."""

from __future__ import annotations

import os

import numpy as np
from absl import logging

from quickdraw import (atomic_files, calibration, canvases, inference,
                       litert_features, splits)
from quickdraw.errors import QuickDrawError
from quickdraw.export.config import (PREPROCESSED_TENSOR,
                                     PREPROCESSING_TOLERANCE, ExportConfig)


def compare(reference: np.ndarray, probabilities: np.ndarray,
            labels: np.ndarray) -> dict:
  """An artifact's `probabilities` against Keras' (`reference`)."""
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


# Check drawings the frozen graph is run on (of config.check_drawings).
GRAPH_CHECK_DRAWINGS = 250


# `seen_by_the_app`'s latest answers: (key) -> (rows, seen).
_SEEN: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def _key(drawings: np.ndarray, count: int, side: int, seed: int) -> str:
  return atomic_files.array_key(f"{count}\0{side}\0{seed}\0", drawings)


def seen_by_the_app(drawings: np.ndarray, count: int, side: int, seed: int,
                    folder: str | None = None
                    ) -> tuple[np.ndarray, np.ndarray]:
  """`as_the_app_sees` without the canvases: (rows, 28x28 drawings), kept
  for the process's next export of the same drawings and, given a
  `folder` (the bottleneck cache), on disk for the next run's: about 10 ms
  a drawing, the most of a cached rerun's calibration."""
  key = _key(drawings, count, side, seed)
  if key not in _SEEN:
    if len(_SEEN) >= 4:
      _SEEN.pop(next(iter(_SEEN)))
    make = lambda: as_the_app_sees(drawings, count, side, seed)[2]  # noqa: E731
    seen = (atomic_files.cached_npy(
        os.path.join(folder, f"canvases-{key}.npy"), make) if folder
            else make())
    _SEEN[key] = splits.spread(len(drawings), count), seen
  return _SEEN[key]


def as_the_app_sees(drawings: np.ndarray, count: int, side: int, seed: int,
                    folder: str | None = None
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
  """Up to `count` of `drawings` (spread over them) re-drawn with a pen as
  `side` px app canvases (`canvases.pen_suite`: every pen, theme and place
  of the quality gate's suite) and brought back by the app model's
  preprocessing; given a `folder` (the bottleneck cache), both are kept
  there for the next run's checks (the canvases compressed: about 1 MB for
  300 at 256 px, read in a tenth of a second where drawing them takes 2).

  Returns:
    (which rows, uint8 (n, side, side, 3) canvases, uint8 (n, 28, 28)
    drawings the network is given).
  """
  rows = splits.spread(len(drawings), count)

  def pictures():
    return canvases.pen_suite(np.asarray(drawings)[rows], side, seed=seed)[0]

  if folder is None:
    made = pictures()
    return rows, made, canvases.read_back(made)
  key = _key(drawings, count, side, seed)
  made = atomic_files.cached_npy(os.path.join(folder, f"pictures-{key}.npz"),
                                 pictures)
  return rows, made, atomic_files.cached_npy(
      os.path.join(folder, f"canvases-{key}.npy"),
      lambda: canvases.read_back(made))


def check_artifacts(classifier, config: ExportConfig, temps: dict,
                    drawings: np.ndarray, labels: np.ndarray,
                    image_size: int, *, value_range: tuple[float, float],
                    cache_dir: str | None = None
                    ) -> tuple[dict, np.ndarray]:
  """Runs every written artifact (from its temporary file) against Keras.

  Network artifacts take the check drawings; canvas models take the first
  `check_canvases` of them re-drawn as app canvases, and the network input
  their preprocessing made is compared with `canvas_to_drawings`' exactly.
  The canvases are kept in `cache_dir` (the bottleneck cache), if given,
  for the next run's checks.

  Returns:
    (the report, Keras' probabilities for the check drawings).
  """
  # A frozen backbone's reference runs the head on its LiteRT features
  # (checked against Keras when made) in a third of Keras' time.
  keras_model = litert_features.predictor(classifier)
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
  # The frozen graph is the float32 TFLite model's network (checked on
  # every drawing below) run by TensorFlow at Keras' speed, the slowest
  # check of a rerun: its parity is checked on a sample, spread over the
  # classes.
  rows = splits.spread(len(drawings), GRAPH_CHECK_DRAWINGS)
  figures = compare(reference[rows],
                    inference.predict_drawings(frozen, drawings[rows]),
                    labels[rows])
  artifacts["frozen_graph"] = dict(figures, path=config.output_graph,
                                   drawings=int(len(rows)),
                                   bytes=os.path.getsize(
                                       temps[config.output_graph]))
  if figures["max_probability_difference"] > config.float_tolerance:
    raise _float_failure(config.output_graph,
                         figures["max_probability_difference"],
                         "the Keras model", config.float_tolerance)

  # Spread over the check drawings, which are sorted by class.
  chosen, pictures, seen = as_the_app_sees(drawings, config.check_canvases,
                                           config.canvas_size, seed=0,
                                           folder=cache_dir)
  canvas_labels = labels[chosen]
  count = len(chosen)
  canvas_reference = inference.predict_drawings(keras_model, seen)
  report["keras"]["canvas_top1"] = float(np.mean(
      canvas_reference.argmax(1) == canvas_labels))
  report["check_canvases"] = count
  # What canvas_to_drawings' drawings become as network input.
  expected = inference.to_model_input(seen, image_size,
                                      value_range=value_range)

  float_network = None
  for mode in config.modes:  # float32 first
    path = config.tflite_path(mode)
    # Every core: checking 1,000 drawings is batch work.
    network = inference.TFLitePredictor(temps[path],
                                        num_threads=os.cpu_count())
    if network.input_range != value_range:
      raise QuickDrawError(
          f"{path}'s metadata says its input is in {network.input_range}, "
          f"not {value_range}; nothing was replaced. Please report this")
    figures = compare(reference,
                      inference.predict_drawings(network, drawings), labels)
    figures.update(path=path, bytes=os.path.getsize(temps[path]))
    artifacts[f"tflite_{mode}"] = figures
    if mode == "float32":
      if figures["max_probability_difference"] > config.float_tolerance:
        raise _float_failure(path, figures["max_probability_difference"],
                             "the Keras model", config.float_tolerance)
      float_network = network

    path = config.tflite_path(mode, canvas=True)
    app = inference.TFLitePredictor(temps[path], num_threads=os.cpu_count(),
                                    keep_tensor=PREPROCESSED_TENSOR)
    probabilities = app(pictures)
    # In [-1, 1] units whatever the range, so one tolerance fits all.
    geometry = float(np.max(np.abs(app.kept - expected))) * 2 / (
        value_range[1] - value_range[0])
    figures = compare(canvas_reference, probabilities, canvas_labels)
    # Float parity of the network inside, on the very input the canvas
    # model made: the preprocessing is held to PREPROCESSING_TOLERANCE
    # below, and a pixel one grey level off at a rounding boundary moves a
    # sharp model's scores more than float rounding does (end to end).
    # Against the float32 network, held to Keras' on the check drawings
    # just above: Keras itself takes these 300 images at 224 px in 3.5 s
    # (MobileNetV2 0.5), LiteRT in 0.5.
    same_input = np.abs(probabilities - float_network(app.kept))
    figures = {"canvas_top1": figures["test_top1"],
               "canvas_top1_agreement": figures["top1_agreement"],
               "max_probability_difference": float(same_input.max()),
               "end_to_end_difference":
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
                           "the float32 network on the same network input",
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


def calibration_on_test(calibrated: np.ndarray, labels: np.ndarray,
                      temperature: float) -> dict:
  """Calibration error on the test drawings, which calibration never saw."""
  before = calibration.rescale(calibrated, 1.0 / temperature)
  return {"test_drawings": int(len(labels)),
          "test_ece_before": calibration.expected_calibration_error(
              before, labels),
          "test_ece_after": calibration.expected_calibration_error(
              calibrated, labels)}


def app_variant(config: ExportConfig, report: dict) -> str:
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
           f"{report['keras']['test_top1']:.4f}), frozen_graph on "
           f"{report['artifacts'].get('frozen_graph', {}).get('drawings', 0)}"
           " of them; canvas_* rows (the app's "
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
