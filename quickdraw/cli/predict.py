"""quickdraw-predict: classify doodles with any exported artifact.

Prints the top --top_k categories and probabilities per input. Inputs are
pictures of any size (PNG, JPEG; a transparent canvas is composited over
white) in either ink polarity, or .npy files of QuickDraw rows (N, 784),
one prediction per row. A blank picture, or one with too little ink to
classify (a dot, a tick), gets a warning, not a guess; an answer whose
score is under the export's recommended threshold (model_info.json beside
the model; --score_threshold) is printed as "not sure".

Pictures go through the preprocessing that the app's canvas model holds
(preprocessing.canvas_to_drawings: polarity, crop to the ink, QuickDraw's
framing): a canvas model (model_canvas*.tflite, the assets' model.tflite)
runs it itself on the picture fitted to its input; for the others
(model*.tflite, retrained_graph.pb, model.keras) it runs here first.
--save_drawings writes the 28x28 drawings the model saw.

Labels come from --labels, else from inside a .tflite (its metadata), else
from retrained_labels.txt or labels.txt beside the model.

Examples:
  quickdraw-predict --model=runs/quickstart/model_canvas.tflite \\
      cat.png sketch.jpg rows.npy
  quickdraw-predict --model=runs/quickstart/retrained_graph.pb \\
      --labels=runs/quickstart/retrained_labels.txt --top_k=5 cat.png
"""

from __future__ import annotations

import dataclasses
import os
import sys
from collections.abc import Sequence

import numpy as np
from absl import flags

from quickdraw import canvases, inference, tflite_metadata, visualize
from quickdraw.cli import common
from quickdraw.errors import QuickDrawError
from quickdraw.export import contracts

FLAGS = flags.FLAGS
common.DEFINE_path("model", None,
                    "The artifact: .tflite (a canvas model or the network), "
                    ".pb (frozen graph) or .keras.")
common.DEFINE_path("labels", None,
                    "A labels file, one name per line in output order; "
                    "empty: the labels inside a .tflite, else "
                    "retrained_labels.txt or labels.txt beside --model.")
flags.DEFINE_integer("top_k", 3, "Categories printed per input.",
                     lower_bound=1)
flags.DEFINE_float("score_threshold", None,
                   "Answers scoring under this are printed as 'not sure'; "
                   "default: the threshold in model_info.json beside "
                   "--model (none: every answer is given). 0 turns it off.",
                   lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_string(
    "background", "white",
    "The colour a transparent picture is composited over: the app canvas's "
    "own, e.g. #121212 for a dark theme's light ink (#RRGGBB, white or "
    "black).")
common.DEFINE_path("save_drawings", None,
                    "A PNG file to write: the 28x28 drawings the model saw, "
                    "one per input, captioned with its answer.")

_LABEL_FILES = ("retrained_labels.txt", "labels.txt")


@dataclasses.dataclass
class Prediction:
  """One input's result.

  Attributes:
    name: The file, or `file[row]` for a `.npy` row.
    drawing: uint8 (28, 28): what the model saw.
    top: (category, probability) pairs, most probable first; empty for a
      blank picture (or too little ink), which is not classified.
    sure: Whether the best score reaches the score threshold.
  """
  name: str
  drawing: np.ndarray
  top: list[tuple[str, float]]
  sure: bool = True


def find_labels(model_path: str, labels_path: str | None) -> list[str]:
  """--labels, the labels inside a `.tflite`, or a labels file beside it.

  Raises:
    QuickDrawError: none found, or unreadable.
  """
  if labels_path:
    return inference.read_labels(labels_path)
  if model_path.lower().endswith(".tflite"):
    try:
      with open(model_path, "rb") as f:
        return tflite_metadata.read_labels(f.read())
    except (OSError, KeyError, ValueError):
      pass  # no labels inside: look beside it
  folder = os.path.dirname(os.path.abspath(model_path))
  for name in _LABEL_FILES:
    path = os.path.join(folder, name)
    if os.path.isfile(path):
      return inference.read_labels(path)
  raise QuickDrawError(
      f"no labels for {model_path}: none inside it and no "
      f"{' or '.join(_LABEL_FILES)} beside it; pass --labels=PATH")


def predict(model_path: str, labels_path: str | None, inputs: Sequence[str],
            top_k: int = 3,
            final_tensor_name: str = inference.FINAL_TENSOR_NAME,
            errors: list[str] | None = None,
            score_threshold: float | None = None,
            background: tuple[int, int, int] = (255, 255, 255)
            ) -> list[Prediction]:
  """Classifies each input picture (or `.npy` row).

  Args:
    score_threshold: Answers under it are not sure; None: the model's
      recommended threshold (`contracts.score_threshold_for`), if any.
    errors: If given, each unreadable input's one-line error goes here and
      the other inputs are classified; if None, the first one raises.
    background: What a transparent picture is composited over.

  Raises:
    QuickDrawError: bad model or labels, or (without `errors`) input.
  """
  predictor = inference.load_predictor(model_path, final_tensor_name)
  labels = find_labels(model_path, labels_path)
  names, pictures = inference.read_inputs(inputs, errors, background)
  if not names:
    return []
  drawings, probabilities = inference.classify_pictures(predictor, pictures)
  if probabilities.shape[1] != len(labels):
    raise QuickDrawError(
        f"{model_path} has {probabilities.shape[1]} outputs but there are "
        f"{len(labels)} labels; pass the labels written with the model")
  if score_threshold is None:
    score_threshold = contracts.score_threshold_for(model_path) or 0.0
  results = []
  for name, drawing, p in zip(names, drawings, probabilities):
    best = [] if not drawing.any() else np.argsort(-p)[:top_k]
    results.append(Prediction(name, drawing,
                              [(labels[i], float(p[i])) for i in best],
                              bool(p.max() >= score_threshold)))
  return results


def _has_alpha(path: str) -> bool:
  """Whether a picture file has transparency (a .npy row has none)."""
  from PIL import Image  # only for this hint
  try:
    with Image.open(path) as image:
      return image.mode in ("RGBA", "LA", "PA") or (
          "transparency" in image.info)
  except (OSError, ValueError):
    return False


def main(argv: Sequence[str]) -> None:
  inputs = argv[1:]
  if not inputs:
    raise QuickDrawError("no pictures to classify: pass one or more PNG, "
                         "JPEG or .npy files after the flags, e.g. "
                         "quickdraw-predict --model=... star.png")
  if not FLAGS.model:
    raise QuickDrawError("pass --model=PATH: a .tflite, .pb or .keras file "
                         "that quickdraw-train wrote")
  errors = []
  background = canvases.parse_colour(FLAGS.background)
  results = predict(FLAGS.model, FLAGS.labels, inputs, FLAGS.top_k,
                    FLAGS.final_tensor_name, errors, FLAGS.score_threshold,
                    background)
  # A bad file gets its line, and the others their answers all the same.
  for error in errors:
    print(f"{common.program_name()}: error: {error}", file=sys.stderr)
  for r in results:
    answers = ", ".join(f"{c} {p:.3f}" for c, p in r.top)
    if not r.top:
      hint = "draw bigger or darker"
      if _has_alpha(r.name):
        hint += (f"; it is transparent, so it was put on "
                 f"{FLAGS.background}: for light ink pass --background= its "
                 "canvas's colour (e.g. #121212)")
      print(f"{r.name}: blank: no ink found, or too little to classify (a "
            f"dot, a tick), so no guess; {hint}")
    elif not r.sure:
      print(f"{r.name}: not sure (no score reaches the threshold): {answers}")
    else:
      print(f"{r.name}: {answers}")
  if FLAGS.save_drawings and results:
    grid = visualize.captioned_grid(
        np.stack([r.drawing for r in results]),
        [visualize.short_name(os.path.basename(r.name)) + "\n" + (
            (f"{r.top[0][0]} {100 * r.top[0][1]:.0f}%" if r.sure else
             f"not sure ({r.top[0][0]}?)") if r.top else "blank")
         for r in results],
        columns=min(8, len(results)),
        title="The drawings the model saw",
        legend="Each tile: the 28x28 drawing made from a file (first "
        "line); second line: the answer and its score, 'not sure' under "
        "the threshold, or 'blank' when there was too little ink.")
    visualize.write_png(FLAGS.save_drawings, grid)
    print(f"Wrote the drawings the model saw to {FLAGS.save_drawings}")
  if errors:
    raise QuickDrawError(
        f"{len(errors)} of {len(inputs)} inputs could not be read (above)"
        + ("; the others were classified" if len(errors) < len(inputs)
           else ""))


def run() -> None:
  """The console_scripts entry point."""
  common.run_app(main, __name__)


if __name__ == "__main__":
  run()
