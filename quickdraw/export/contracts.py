"""The contracts: what each exported model takes and gives, written into
model_info.json and the TFLite metadata, and read back from them.

The writers (`model_info`, `assets_info`, `with_metadata`) and the readers
(`graph_input_range`, `score_threshold_for`) live together, so the file's
keys change in one place.
"""

from __future__ import annotations

import json
import os
import struct
from collections.abc import Sequence

from quickdraw import __version__, preprocessing, tflite_metadata
from quickdraw.export.config import (ASSET_GRAPH, ASSET_LABELS, ASSET_MODEL,
                                     INPUT_NAME, MODEL_INFO, ExportConfig)


def drawing_contract(image_size: int, *,
                     value_range: tuple[float, float]) -> dict:
  """The network's input: what `model.tflite` and the frozen graph take."""
  mean, std = preprocessing.normalization(value_range)
  low, high = value_range
  return {
      "name": INPUT_NAME,
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
      "name": INPUT_NAME,
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
      # losses.softmax_with_none.
      "activation": "softmax with a none class: the scores sum to at most "
                    "1, the rest is 'none of these'",
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
  held_out = calibrated.get("known_drawings", calibrated["drawings"])
  kind = ("drawings re-drawn as canvases"
          if calibrated.get("measured_on") == "canvases" else "drawings")
  note = (f"{calibrated['right_above_threshold']:.1%} of {held_out} "
          f"held-out {kind} were answered right at or above it "
          f"({calibrated['right_kept']:.1%} of the right answers)")
  unknown = calibrated.get("unknown")
  if unknown:
    note += (f", and {unknown['refused']:.1%} of {unknown['drawings']} "
             f"doodles of {len(unknown['categories'])} categories it never "
             "learned scored under it")
  return note + ("; below it, say 'not sure' (MediaPipe applies it from "
                 "the model's metadata, or setScoreThreshold)")


def model_info(config: ExportConfig, categories: Sequence[str],
               image_size: int, *, value_range: tuple[float, float],
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
      "drawing_input": drawing_contract(image_size, value_range=value_range),
      "output": output_contract(categories, config.final_tensor_name,
                                calibrated),
  }


def assets_info(config: ExportConfig, categories: Sequence[str],
                image_size: int, variant: str, *,
                value_range: tuple[float, float],
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
                       "input": drawing_contract(image_size,
                                                 value_range=value_range),
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
                  value_range: tuple[float, float] | None,
                  score_threshold: float | None = None) -> bytes:
  """`model` with the TFLite metadata MediaPipe needs, labels inside.

  `value_range` is the network's input range; None for a canvas model,
  whose uint8 input needs no normalization. `score_threshold` (the
  calibrated one) becomes the output's ScoreThresholdingOptions.
  """
  if canvas:
    image = tflite_metadata.ImageInput(
        INPUT_NAME,
        "The app's drawing canvas, opaque RGB, either ink polarity, the "
        "doodle anywhere on it.", size, size)
  else:
    mean, std = preprocessing.normalization(value_range)
    image = tflite_metadata.ImageInput(
        INPUT_NAME,
        "A QuickDraw drawing (light ink on black, framed as QuickDraw's "
        "28x28 bitmaps) upsampled to the input size.", size, size,
        mean=mean, std=std, value_min=value_range[0],
        value_max=value_range[1])
  metadata = tflite_metadata.metadata_buffer(
      _description(categories), image, final_tensor_name,
      "Probabilities of the categories, in the label file's order.",
      score_threshold)
  return tflite_metadata.with_metadata(model, metadata, categories)


def _read_info(model_path: str) -> dict:
  """The model_info.json beside `model_path` ({} if none or unreadable)."""
  path = os.path.join(os.path.dirname(os.path.abspath(model_path)),
                      MODEL_INFO)
  try:
    with open(path) as f:
      info = json.load(f)
  except (OSError, ValueError):
    return {}
  return info if isinstance(info, dict) else {}


def graph_input_range(path: str) -> tuple[float, float]:
  """What a frozen graph written by the export takes: the input range in
  the model_info.json beside it (the run's folder and the Android assets
  both have one); [-1, 1], retrain.py's contract, without one."""
  info = _read_info(path)
  contract = info.get("drawing_input") or info.get("frozen_graph", {}).get(
      "input", {})
  value_range = contract.get("value_range") if isinstance(
      contract, dict) else None
  if isinstance(value_range, list) and len(value_range) == 2:
    return float(value_range[0]), float(value_range[1])
  return preprocessing.SIGNED_RANGE


def score_threshold_for(model_path: str) -> float | None:
  """The score threshold the export recommends for a model: from the
  model_info.json beside it (a run's folder, or the app's assets), else
  from a .tflite model's own metadata (ScoreThresholdingOptions); None if
  neither has one."""
  output = _read_info(model_path).get("output", {})
  value = output.get("score_threshold") if isinstance(output, dict) else None
  if isinstance(value, (int, float)):
    return float(value)
  if model_path.endswith(".tflite"):
    try:
      with open(model_path, "rb") as f:
        return tflite_metadata.read_score_threshold(f.read())
    except (OSError, ValueError, IndexError, struct.error):
      return None  # unreadable metadata: no threshold, as without one
  return None
