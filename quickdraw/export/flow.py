"""The export's flow: calibrate, convert, write under temporary names, check,
then rename every file into place together (the package docstring says
which files)."""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Sequence

import numpy as np
from absl import logging

from quickdraw import (atomic_files, backbones, calibration, inference,
                       litert_features, run_files, splits, visualize)
from quickdraw import others as others_lib
from quickdraw.config import DataConfig
from quickdraw.data_source import (QuickDrawSource, drawings_from_split,
                                   positions_from_split)
from quickdraw.export import canvas, checks, contracts, convert
from quickdraw.export.config import (ASSET_GRAPH, ASSET_LABELS, ASSET_MODEL,
                                     JOURNAL, KERAS_MODEL, MODEL_INFO, MODES,
                                     REPORT, THRESHOLD_PLOT, ExportConfig)
from quickdraw.splits import Split


def export_model(classifier, categories: Sequence[str], config: ExportConfig,
                 check_drawings: np.ndarray, check_labels: np.ndarray,
                 representative: np.ndarray | None = None,
                 held_out: tuple[np.ndarray, np.ndarray] | None = None,
                 unknown: tuple[np.ndarray, Sequence[str]] | None = None,
                 cache_dir: str | None = None) -> dict:
  """Writes, checks and publishes every artifact (`quickdraw.export` lists
  them).

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
    unknown: (uint8 drawings, category names) of other categories that no
      training batch used (`others`): the threshold is chosen on both
      sides, these to refuse and `held_out` to answer.
    cache_dir: Where calibration and the checks keep the drawings they
      re-draw as app canvases for the next run (the bottleneck cache); None
      keeps them in memory only.

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
    calibrated = calibrate(classifier, *held_out, unknown=unknown,
                           unknown_recall=config.unknown_recall,
                           canvases_each=config.check_canvases,
                           cache_dir=cache_dir)
  with (calibration.temperature_folded(classifier, calibrated["temperature"])
        if calibrated else contextlib.nullcontext()):
    return _export(classifier, categories, config, check_drawings,
                   check_labels, representative, held_out, calibrated,
                   cache_dir)


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
    logging.warning(
        "The last export into %s was killed while renaming its files; "
        "finished it (%d files), so every file is from that export",
        report_dir, finished)
  return finished


def calibrate(classifier, drawings: np.ndarray, labels: np.ndarray,
              unknown: tuple[np.ndarray, Sequence[str]] | None = None,
              unknown_recall: float | None = None,
              canvases_each: int = 300,
              cache_dir: str | None = None) -> dict:
  """Fits the temperature on held-out drawings, and chooses the score
  threshold as the app sees them: on those drawings re-drawn as the app's
  canvases (`checks.as_the_app_sees`), whose scores run lower than a
  QuickDraw bitmap's, and on `canvases_each` of the `unknown` doodles of
  other categories re-drawn likewise. The default threshold gives up at
  most `calibration.RIGHT_GIVEN_UP` of the right answers on the canvases;
  `unknown_recall` places it to refuse that share of the unknown doodles
  instead (`calibration.report`'s figures). The re-drawn
  drawings are kept in `cache_dir` when given (`checks.seen_by_the_app`)."""
  predictor = litert_features.predictor(classifier)
  before = inference.predict_drawings(predictor, drawings)
  labels = np.asarray(labels, np.int64)
  temperature = calibration.fit_temperature(before, labels)
  after = calibration.rescale(before, temperature)

  def scores(seen):
    return calibration.rescale(inference.predict_drawings(predictor, seen),
                               temperature)
  # On bitmaps a head is right more often, with higher scores, than on
  # the canvases the app meets: a threshold chosen there gives up more of
  # the app's right answers than it says, and one chosen on canvases
  # refused more unseen doodles and junk (scripts/README.md, "The
  # threshold").
  rows, seen = checks.seen_by_the_app(drawings, len(drawings),
                                      THRESHOLD_CANVAS_SIDE, seed=2,
                                      folder=cache_dir)
  canvas = (scores(seen), labels[rows])
  others, names = None, ()
  if unknown is not None and len(unknown[0]):
    others = scores(checks.seen_by_the_app(
        unknown[0], canvases_each, THRESHOLD_CANVAS_SIDE, seed=3,
        folder=cache_dir)[1])
    names = tuple(unknown[1])
  threshold = calibration.score_threshold(*canvas, others,
                                          unknown_recall=unknown_recall)
  return calibration.report(before, after, labels, temperature, threshold,
                            others, names, unknown_recall,
                            canvas_scores=canvas)


def _export(classifier, categories, config, check_drawings, check_labels,
            representative, held_out, calibrated, cache_dir):
  """`export_model`'s work, the classifier calibrated already."""
  image_size = int(classifier.input_shape[1])
  value_range = backbones.input_range_of(classifier)
  architecture = backbones.find_architecture(classifier)
  architecture = architecture.name if architecture else None
  check_drawings = np.asarray(check_drawings, np.uint8).reshape(-1, 784)
  check_labels = np.asarray(check_labels, np.int64)
  frozen = convert.serving_function(classifier, config.final_tensor_name)
  name = config.final_tensor_name
  preprocess = canvas.canvas_preprocessing_bytes(
      config.canvas_size, image_size, value_range=value_range)
  nothing_drawn = canvas.nothing_drawn_bytes(len(categories), image_size,
                                             value_range=value_range)
  contents = {config.output_graph: convert.frozen_graph_bytes(frozen),
              config.output_labels: inference.labels_text(
                  categories).encode()}
  networks, int8 = {}, None
  # The threshold also travels inside each model (TFLite metadata), for an
  # app, or a predict run, that has no model_info.json beside it.
  threshold = calibrated["score_threshold"] if calibrated else None
  for mode in config.modes:
    logging.info("Converting to TFLite (%s)", mode)
    if mode == "int8":
      if representative is None or held_out is None:
        raise ValueError("int8 needs representative and held-out drawings")
      int8 = convert.int8_bytes(
          frozen, representative, *held_out, networks["float32"],
          config.max_quantization_loss / 2, name, value_range=value_range)
      networks[mode] = int8.model
    else:
      networks[mode] = convert.tflite_bytes(
          frozen, mode, final_tensor_name=name, value_range=value_range)
    contents[config.tflite_path(mode)] = contracts.with_metadata(
        networks[mode], categories, canvas=False, size=image_size,
        final_tensor_name=name, value_range=value_range,
        score_threshold=threshold)
    contents[config.tflite_path(mode, canvas=True)] = contracts.with_metadata(
        canvas.canvas_model_bytes(preprocess, networks[mode], name,
                                  nothing_drawn),
        categories,
        canvas=True, size=config.canvas_size, final_tensor_name=name,
        value_range=None, score_threshold=threshold)
  if calibrated:
    # The Keras model with the same calibrated scores as every other
    # artifact, so that model_info.json's threshold means the same for it.
    keras_path = os.path.join(config.report_dir, KERAS_MODEL)
    contents[keras_path] = convert.keras_bytes(classifier)
    contents[os.path.join(config.report_dir, THRESHOLD_PLOT)] = (
        visualize.png_bytes(visualize.threshold_curve_image(
            calibrated["curve"], calibrated["score_threshold"])))
  contents[os.path.join(config.report_dir, MODEL_INFO)] = (json.dumps(
      contracts.model_info(config, categories, image_size,
                           value_range=value_range,
                           architecture=architecture,
                           calibrated=calibrated), indent=2) + "\n").encode()
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
      report, reference = checks.check_artifacts(
          classifier, config, temps, check_drawings, check_labels,
          image_size, value_range=value_range, cache_dir=cache_dir)
      report["architecture"] = architecture
      if calibrated:
        report["calibration"] = dict(calibrated, **checks.calibration_on_test(
            reference, check_labels, calibrated["temperature"]))
      if int8 is not None:
        report["int8_float_layers"] = {
            "layers": int8.float_layers,
            "held_out_drawings": int(len(held_out[0])),
            "held_out_loss_points": int8.held_out_loss,
            "layer_errors": int8.layer_errors}
      if assets:
        variant = checks.app_variant(config, report)
        sources = {ASSET_MODEL: config.tflite_path(variant, canvas=True),
                   ASSET_GRAPH: config.output_graph,
                   **{n: config.output_labels for n in ASSET_LABELS}}
        for target, asset in assets.items():
          data = (contents[sources[asset]] if asset in sources else
                  (json.dumps(contracts.assets_info(
                      config, categories, image_size, variant,
                      value_range=value_range, architecture=architecture,
                      calibrated=calibrated), indent=2) + "\n").encode())
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


# Calibration and int8's float layers use this many held-out drawings.
HELD_OUT_DRAWINGS = 1000
# The side of the canvases the threshold is chosen on (the preprocessing
# frames any size alike; pens are a share of the side).
THRESHOLD_CANVAS_SIDE = 256


def check_destinations(config: ExportConfig) -> None:
  """Fails now, creating nothing, if the export could not write its files:
  quickdraw-train calls it before training, not after an hour of it.

  Raises:
    QuickDrawError: a destination folder is not writable, in one line.
  """
  folders = {
      "output_graph": os.path.dirname(os.path.abspath(config.output_graph)),
      "output_tflite": os.path.dirname(os.path.abspath(config.output_tflite))}
  if config.android_assets_dir:
    folders["android_assets_dir"] = os.path.expanduser(
        config.android_assets_dir)
  for flag, folder in folders.items():
    atomic_files.check_writable_folder(folder, f"--{flag}")


def export_run(data: DataConfig, config: ExportConfig,
               model_path: str | None = None, classifier=None,
               source: QuickDrawSource | None = None,
               others: others_lib.OtherDrawings | None = None,
               cache_dir: str | None = None,
               bottlenecks: dict[str, np.ndarray] | None = None) -> dict:
  """Exports a trained classifier, checked on the test split.

  Args:
    data: The run's data settings (for the check and calibration drawings).
    config: Where and how to export.
    model_path: A saved `model.keras`, when `classifier` is not given.
    classifier: The Keras model itself.
    source: The opened data, if already at hand.
    others: The run's other categories' drawings, if already at hand; their
      held-out categories take part in choosing the score threshold.
    cache_dir: The bottleneck cache, where the canvases of calibration and
      the checks are kept for the next run (see `export_model`).
    bottlenecks: The run's split features by split name
      (`training.TrainResult`): the checks' and calibration's drawings of
      those splits take theirs instead of computing them again.

  Returns:
    The export report (see `export_model`).
  """
  if classifier is None:
    classifier = run_files.load_model(model_path)
    if cache_dir:  # a re-export: the run's kept LiteRT backbone, if any
      litert_features.load_kept(classifier, cache_dir)
  source = source or QuickDrawSource.open(data)

  def drawings_of(split, count):
    drawings, labels = drawings_from_split(source, split, count)
    features = (bottlenecks or {}).get(Split(split).value)
    if features is not None:
      litert_features.keep_features(classifier, drawings, features[
          positions_from_split(source, split, count)])
    return drawings, labels

  # Drawings, upsampled a chunk at a time inside the export's checks.
  drawings, labels = drawings_of(Split.TEST, config.check_drawings)
  representative = None
  if "int8" in config.quantize:
    representative = drawings_from_split(
        source, Split.TRAIN, config.representative_drawings)[0]
  # Where the scores are calibrated and int8 picks the layers it keeps in
  # float: drawings the model was not trained on, never the test drawings
  # it is judged on.
  held_out = drawings_of(
      Split.VALIDATION if source.split_size(Split.VALIDATION)
      else Split.TRAIN, HELD_OUT_DRAWINGS)
  if others is None:
    others = others_lib.open_others(data, exposure=False)
  unknown = None
  if len(others.held_out):
    # Spread over the categories, as many as the known side has at most.
    unknown = (others.held_out[splits.spread(len(others.held_out),
                                             HELD_OUT_DRAWINGS)],
               others.held_out_categories)
  return export_model(classifier, source.categories, config, drawings,
                      labels, representative, held_out, unknown,
                      cache_dir=cache_dir)
