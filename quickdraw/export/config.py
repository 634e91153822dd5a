"""Where and how to export: `ExportConfig`, and the names of the files and
tensors that the export writes and apps look for.

One frozen object holds every export default; quickdraw-export and
quickdraw-train build their flags from its fields.
"""

from __future__ import annotations

import dataclasses
import os

from quickdraw.errors import QuickDrawError

INPUT_NAME = "input"  # every artifact's input tensor (retrain.py's)
FINAL_TENSOR_NAME = "final_result"  # the output's default name (retrain.py's)
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
MODEL_INFO = "model_info.json"  # the contracts, beside the models
REPORT = "export_report.json"
# The run's Keras model (run_files.MODEL_FILENAME), written again calibrated.
KERAS_MODEL = "model.keras"
CANVAS_TENSOR = "canvas"  # the app model's input, before it is renamed
PREPROCESSED_TENSOR = "preprocessed"  # where preprocessing meets the network
# The app's canvas side: MediaPipe resizes the app's bitmap to it. Large
# enough that strokes of a phone-sized canvas survive that resize, small
# enough that the model's own preprocessing stays a fraction of its cost.
DEFAULT_CANVAS_SIZE = 256
ASSET_MODEL = "model.tflite"
ASSET_LABELS = ("labels.txt", "retrained_labels.txt")
ASSET_GRAPH = "retrained_graph.pb"
# The calibration's trade-off curve, beside the report.
THRESHOLD_PLOT = "threshold_curve.png"
# Lists the files an export is renaming into place (`atomic_files.staged`).
JOURNAL = ".export.journal"


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
    unknown_recall: The share of held-out other categories' doodles the
      score threshold refuses (a point on `calibration.threshold_curve`);
      None for the default point, under which at most
      `calibration.RIGHT_GIVEN_UP` of the right answers fall, on the
      held-out drawings re-drawn as the app's canvases.
  """
  output_graph: str
  output_labels: str
  output_tflite: str
  report_dir: str
  quantize: tuple[str, ...] = ()
  final_tensor_name: str = FINAL_TENSOR_NAME
  android_assets_dir: str = ""
  android_model: str = "float32"
  android_graph: bool = True
  canvas_size: int = DEFAULT_CANVAS_SIZE
  max_quantization_loss: float = 1.0
  check_drawings: int = 1000
  check_canvases: int = 300
  representative_drawings: int = 300
  float_tolerance: float = FLOAT_TOLERANCE
  unknown_recall: float | None = None

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
    if self.unknown_recall is not None and not (
        0 <= self.unknown_recall <= 1):
      raise QuickDrawError(
          f"--unknown_recall={self.unknown_recall} is outside [0, 1]; pass "
          "the share of other doodles to refuse, such as 0.6")
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
