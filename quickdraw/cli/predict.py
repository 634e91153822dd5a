"""quickdraw-predict: classify doodles with any exported artifact.

  quickdraw-predict --model=runs/quickstart/model.tflite \
      --labels=runs/quickstart/retrained_labels.txt cat.png dog.jpg rows.npy

Prints the top --top_k categories and probabilities per input. Inputs are
PNG or JPEG pictures of any size and either ink polarity (dark on light, as
drawing apps make, is inverted; the drawing is cropped to its ink, padded to
a square and shrunk to 28x28), or .npy files of QuickDraw rows (N, 784),
one prediction per row. The model is a .tflite, a frozen .pb or a .keras
file; all take the same input.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from absl import app, flags

from quickdraw import inference
from quickdraw.cli import common
from quickdraw.cli import export as export_cli  # noqa: F401 (--final_tensor_name)
from quickdraw.errors import QuickDrawError

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None,
                    "The artifact: .tflite, .pb (frozen graph) or .keras.")
flags.DEFINE_string("labels", None,
                    "The labels file written beside it, one name per line.")
flags.DEFINE_integer("top_k", 3, "Categories printed per input.",
                     lower_bound=1)


def predict(model_path: str, labels_path: str, inputs: Sequence[str],
            top_k: int = 3,
            final_tensor_name: str = inference.FINAL_TENSOR_NAME
            ) -> list[tuple[str, list[tuple[str, float]]]]:
  """Top-k (name, probability) per input drawing.

  Raises:
    QuickDrawError: bad model, labels or inputs.
  """
  predictor = inference.load_predictor(model_path, final_tensor_name)
  labels = inference.read_labels(labels_path)
  names, drawings = inference.read_inputs(inputs)
  probabilities = predictor(inference.to_model_input(drawings,
                                                     predictor.image_size))
  if probabilities.shape[1] != len(labels):
    raise QuickDrawError(
        f"{model_path} has {probabilities.shape[1]} outputs but {labels_path} "
        f"has {len(labels)} labels; pass the labels written with the model")
  results = []
  for name, p in zip(names, probabilities):
    best = np.argsort(-p)[:top_k]
    results.append((name, [(labels[i], float(p[i])) for i in best]))
  return results


def main(argv: Sequence[str]) -> None:
  inputs = argv[1:]
  if not inputs:
    raise app.UsageError("pass one or more PNG, JPEG or .npy files")
  if not FLAGS.model or not FLAGS.labels:
    raise QuickDrawError("pass --model=PATH and --labels=PATH (the files "
                         "quickdraw-train wrote)")
  for name, top in predict(FLAGS.model, FLAGS.labels, inputs, FLAGS.top_k,
                           FLAGS.final_tensor_name):
    print(f"{name}: " + ", ".join(f"{c} {p:.3f}" for c, p in top))


def run() -> None:
  """The console_scripts entry point."""
  common.run_app(main, __name__)


if __name__ == "__main__":
  run()
