"""The app's model on canvases in the wild: themes, small ink and junk.

  python scripts/bench_themes.py --output_dir=runs/quickstart

Takes a trained and exported run (--output_dir: its run.json, its canvas
model and model_info.json) and its test split, and prints:

* per theme (`canvases.THEMES`: white, Android's dark theme, grey themes,
  a blue pen on cream and on yellow paper, red on black, a vignette), top-1
  of test drawings re-drawn as --canvas_side canvases in that theme (the
  same sizes, pens and places in every theme; anti-aliased), classified by
  MediaPipe's ImageClassifier with the canvas model, as an app runs it, and
  by quickdraw-predict's path (`inference.classify_pictures`: the canvas
  fitted with antialiasing, then the same model in LiteRT); and the share
  of answers at or above the recommended score threshold;
* the too-little-ink rule: how many test drawings re-drawn at 1/8 of the
  canvas it would reject (it must reject none), the smallest share of the
  canvas their ink spans, and how many dots and ticks it does reject;
* the junk set (`canvases.junk`: noise, gradients, textures, scribbles,
  text): the share under the threshold, per kind and in all.

Needs the test extra (pip install -e ".[test]") for mediapipe.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import quickdraw.cli  # noqa: F401  (first: a quiet TensorFlow start)

import numpy as np
from absl import flags

from quickdraw import (canvases, data_source, export, inference,
                       preprocessing, run_files)
from quickdraw.cli import common
from quickdraw.data_source import QuickDrawSource
from quickdraw.errors import QuickDrawError
from quickdraw.export import contracts
from quickdraw.quality import mediapipe_scores
from quickdraw.splits import Split

FLAGS = flags.FLAGS
flags.DEFINE_string("model", None, "The canvas model; default: the "
                    "float32 model_canvas.tflite in --output_dir.")
flags.DEFINE_integer("canvas_side", 512, "Side of the re-drawn canvases.",
                     lower_bound=64)
flags.DEFINE_integer("drawings", 1000, "Test drawings re-drawn per theme "
                     "(spread over the split).", lower_bound=1)
flags.DEFINE_integer("junk", 200, "Junk pictures per kind.", lower_bound=1)


def too_little_ink(pictures: np.ndarray) -> np.ndarray:
  """Which pictures the preprocessing finds nothing to classify in."""
  return np.array([not preprocessing.canvas_to_drawings(p[None]).numpy()
                   .any() for p in pictures])


def ink_extent(pictures: np.ndarray) -> np.ndarray:
  """The ink's bounding box's longer side, as a share of the canvas."""
  extents = []
  for p in pictures:
    contrast = preprocessing.ink_contrast(p[None]).numpy()[0]
    ink = contrast >= 0.3 * contrast.max()
    rows, cols = np.flatnonzero(ink.any(1)), np.flatnonzero(ink.any(0))
    extents.append(max(rows[-1] - rows[0] + 1, cols[-1] - cols[0] + 1)
                   / min(p.shape[:2]))
  return np.array(extents)


def main(argv: Sequence[str]) -> None:
  del argv
  try:
    import mediapipe  # noqa: F401
  except ImportError:
    raise QuickDrawError("needs mediapipe: pip install -e '.[test]'") from None
  out = FLAGS.output_dir
  source = QuickDrawSource.open(run_files.read_run(out)[1])
  model = FLAGS.model or os.path.join(out, "model_canvas.tflite")
  threshold = contracts.score_threshold_for(model)
  if threshold is None:
    raise QuickDrawError(f"no score threshold in {export.MODEL_INFO} "
                         f"beside {model}; export the run again")
  drawings, labels = data_source.drawings_from_split(source, Split.TEST,
                                                FLAGS.drawings)
  predictor = inference.load_predictor(model)
  side = FLAGS.canvas_side
  print(f"{model}: {len(labels)} test drawings, {source.num_classes} "
        f"categories, {side} px canvases, score threshold {threshold:.3f}")
  print(f"  {'theme':<15} {'MediaPipe':>9} {'predict':>8} {'agree':>6} "
        f"{'sure':>6}")
  sure = []
  for theme in canvases.THEMES:
    pictures = canvases.redraw(drawings, side, seed=1, theme=theme)
    app = mediapipe_scores(model, pictures, source.categories)
    predicted = inference.classify_pictures(predictor, list(pictures))[1]
    sure.append(app.max(1) >= threshold)
    print(f"  {theme:<15} {np.mean(app.argmax(1) == labels):9.4f} "
          f"{np.mean(predicted.argmax(1) == labels):8.4f} "
          f"{np.mean(app.argmax(1) == predicted.argmax(1)):6.1%} "
          f"{sure[-1].mean():6.1%}")
  print(f"  real drawings at or above the threshold, all themes: "
        f"{np.mean(sure):.1%}")

  small = canvases.redraw(drawings, side, seed=2, theme="white",
                          extent=(0.125, 0.125))
  print(f"  drawn at 1/8 of the canvas: {too_little_ink(small).mean():.1%} "
        "taken for too little ink; smallest ink extent "
        f"{ink_extent(small).min():.3f} of the canvas (the rule: under "
        f"{preprocessing.MIN_INK_EXTENT})")
  tiny = canvases.redraw(drawings[:200], side, seed=3, theme="white",
                         extent=(0.02, 0.05))
  print(f"  dots and ticks (drawings at 2% to 5% of the canvas): "
        f"{too_little_ink(tiny).mean():.1%} taken for too little ink")

  below = []
  for kind in canvases.JUNK_KINDS:
    pictures = canvases.junk(kind, FLAGS.junk, side, seed=0)
    app = mediapipe_scores(model, pictures, source.categories)
    below.append(app.max(1) < threshold)
    print(f"  junk {kind:<9} under the threshold: {below[-1].mean():6.1%}")
  print(f"  junk in all under the threshold: {np.mean(below):.1%}")


if __name__ == "__main__":
  common.run_app(main, "__main__")
