"""Benchmarks the app's canvas model where apps run it: in MediaPipe Tasks.

  python scripts/bench_export.py --output_dir=runs/bench22/frozen
  python scripts/bench_canvas.py --output_dir=runs/bench22/frozen

Takes a trained run's test split (--output_dir, its run.json) and the
models scripts/bench_export.py exported from it (--bench_dir):

* the network alone on the `.npy` rows (the test figure training reports);
* the same drawings re-drawn as app canvases (`canvases.redraw`: upscaled
  to a --canvas_side canvas, crisp, thickened, three in four dark on white,
  moved anywhere), classified by MediaPipe's ImageClassifier with the canvas
  model (MediaPipe resizes each canvas to the model's input) and by
  quickdraw-predict's path (the preprocessing on the full-size canvas, then
  the network), with the top-1 agreement between the two;

for float32 and each quantized canvas model the run has. Needs the test
extra (pip install -e ".[test]") for mediapipe.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import quickdraw.cli  # noqa: F401  (first: a quiet TensorFlow start)

import numpy as np
from absl import flags

from quickdraw import canvases, export, inference, quality
from quickdraw.cli import common
from quickdraw.data_source import QuickDrawSource
from quickdraw.errors import QuickDrawError
from quickdraw.splits import Split
from quickdraw import data_source
from quickdraw import run_files

FLAGS = flags.FLAGS
flags.DEFINE_string("bench_dir", "/tmp/quickdraw_bench_export",
                    "Where scripts/bench_export.py wrote the run's models.")
flags.DEFINE_integer("canvas_side", 512, "Side of the re-drawn canvases, as "
                     "the app would hand them to MediaPipe.", lower_bound=64)
flags.DEFINE_integer("drawings", 2000, "Test drawings re-drawn (spread "
                     "over the split).", lower_bound=1)


def main(argv: Sequence[str]) -> None:
  del argv
  try:
    import mediapipe as mp
    from mediapipe.tasks import python as mp_tasks
    from mediapipe.tasks.python import vision
  except ImportError:
    raise QuickDrawError("needs mediapipe: pip install -e '.[test]'") from None
  out = FLAGS.output_dir
  source = QuickDrawSource.open(run_files.read_run(out)[1])
  drawings, labels = data_source.drawings_from_split(source, Split.TEST,
                                                FLAGS.drawings)
  models = FLAGS.bench_dir
  network = inference.TFLitePredictor(os.path.join(models, "model.tflite"),
                                      num_threads=os.cpu_count())
  rows = inference.predict_drawings(network, drawings)
  print(f"{len(labels)} test drawings, {source.num_classes} categories")
  print("  network on the .npy rows: top-1 "
        f"{np.mean(rows.argmax(1) == labels):.4f}")
  pictures = canvases.redraw(drawings, FLAGS.canvas_side)
  predicted = inference.classify_pictures(network, list(pictures))[1]
  predicted = predicted.argmax(1)
  print(f"  quickdraw-predict's path on {FLAGS.canvas_side}px canvases: "
        f"top-1 {np.mean(predicted == labels):.4f}")
  for mode in export.MODES:
    path = os.path.join(models, "model_canvas" + (
        "" if mode == "float32" else f"_{mode}") + ".tflite")
    if not os.path.exists(path):
      continue
    options = vision.ImageClassifierOptions(
        base_options=mp_tasks.BaseOptions(model_asset_path=path),
        max_results=1,  # top-1, sure or not
        score_threshold=quality.EVERY_SCORE)
    names = []
    with vision.ImageClassifier.create_from_options(options) as classifier:
      for picture in pictures:
        image = mp.Image(image_format=mp.ImageFormat.SRGB, data=picture)
        names.append(classifier.classify(image).classifications[0]
                     .categories[0].category_name)
    index = {c: i for i, c in enumerate(source.categories)}
    classes = np.array([index[n] for n in names])
    print(f"  MediaPipe, canvas model {mode:<8}: top-1 "
          f"{np.mean(classes == labels):.4f}, same answer as predict's "
          f"path {np.mean(classes == predicted):.2%}")


if __name__ == "__main__":
  common.run_app(main, "__main__")
