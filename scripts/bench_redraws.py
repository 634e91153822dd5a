"""Pen re-draws in training: what they do for the app's canvases.

  python scripts/bench_redraws.py --data_dir=../shared/data/quickdraw \
      --weights=../shared/data/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5

On cached frozen features (the head's own route; MobileNetV2 0.5 by
default), trains one head on the training drawings alone and one more for
each --pools size of pen re-draws (`redraws.pen_redraws`) added with their
labels, as --redraw_share adds them, and prints for each:

* top-1 on the test drawings as QuickDraw bitmaps;
* top-1 on them as pen-drawn canvases (`canvases.pen_suite`, the quality
  gate's), and as canvases made another way (`canvases.redraw`: upscaled
  and thickened, four themes), each read by the app's preprocessing: the
  re-draws' pens are drawn from ranges, not from either maker's;
* with the threshold where 97% of the validation canvases answered right
  keep their answer: the test canvases answered right at or above it, and
  the canvases of --unseen categories refused under it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import quickdraw.cli  # noqa: F401  (first: a quiet TensorFlow start)

import keras
import numpy as np
from absl import flags

from quickdraw import (bottlenecks, calibration, canvases, losses,
                       model as model_lib, quality, redraws)
from quickdraw.cli import common
from quickdraw.cli import train as train_cli  # noqa: F401  (its flags)
from quickdraw.config import DataConfig
from quickdraw.data_source import QuickDrawSource, drawings_from_split
from quickdraw.splits import Split

FLAGS = flags.FLAGS
# quickdraw-train's --architecture (here MobileNetV2 0.5, set only when run
# as a script), --weights, --categories (empty: the gate's 10),
# --data_dir, --samples_per_class, --epochs and --bottleneck_dir.
flags.DEFINE_list("pools", ["800", "2000", "4000", "8000"],
                  "Pen re-draws in the pool of each head compared (at most "
                  "the training split).")
flags.DEFINE_list("unseen_categories", ["dog", "fish", "flower", "square",
                                        "book", "train"],
                  "Categories no part of the run sees, 100 drawings each.")
flags.DEFINE_integer("canvas_side", 256, "Side of the measured canvases.")


def _other_maker(drawings: np.ndarray, seed: int) -> np.ndarray:
  """`canvases.redraw` canvases in four themes, drawing i in theme i % 4."""
  out = np.zeros((len(drawings), 28, 28, 1), np.uint8)
  for i, theme in enumerate(("white", "dark", "blue_on_cream", "vignette")):
    out[i::4] = canvases.read_back(canvases.redraw(
        drawings[i::4], FLAGS.canvas_side, seed=seed + i,
        theme=theme))[..., None]
  return out


def main(argv: Sequence[str]) -> None:
  del argv
  architecture = model_lib.parse_architecture(FLAGS.architecture)
  backbone = model_lib.build_backbone(architecture, model_lib.resolve_weights(
      architecture, FLAGS.weights, None))
  size = architecture.image_size
  data = DataConfig(
      categories=tuple(FLAGS.categories or quality.RETRAIN_CATEGORIES),
      data_dir=FLAGS.data_dir, download=False,
      samples_per_class=FLAGS.samples_per_class, image_size=size)
  source = QuickDrawSource.open(data)
  cache = os.path.expanduser(FLAGS.bottleneck_dir)

  def features(drawings, name):
    return bottlenecks.drawings_features(
        backbone, np.asarray(drawings, np.uint8).reshape(-1, 28, 28, 1), size,
        cache, name=name)

  def pen_suite(drawings, seed):
    return canvases.read_back(canvases.pen_suite(drawings, FLAGS.canvas_side,
                                                 seed)[0])

  train_x, train_y = bottlenecks.load_or_compute(
      backbone, source, Split.TRAIN, size, cache, verbose=0)[:2]
  val, val_y = drawings_from_split(source, Split.VALIDATION, 10 ** 9)
  test, test_y = drawings_from_split(source, Split.TEST, 10 ** 9)
  unseen_source = QuickDrawSource.open(DataConfig(
      categories=tuple(FLAGS.unseen_categories), data_dir=FLAGS.data_dir,
      download=False, samples_per_class=100, validation_percentage=0,
      testing_percentage=0))
  unseen = np.concatenate([
      unseen_source.read_rows(c, unseen_source.selected_rows(c))
      for c in range(unseen_source.num_classes)])
  measured = {
      "bitmaps": features(test, "bench-test"),
      "val canvases": features(pen_suite(val, 12), "bench-val-suite"),
      "suite canvases": features(pen_suite(test, 13), "bench-test-suite"),
      "other canvases": features(_other_maker(test, 21), "bench-test-other"),
      "unseen canvases": features(pen_suite(unseen, 15), "bench-unseen"),
  }
  train, _ = drawings_from_split(source, Split.TRAIN, 10 ** 9)
  pool_x = features(redraws.pen_redraws(train, seed=5), "bench-redraws")
  k = source.num_classes
  rows = [["head", "bitmap top-1", "suite canvas top-1", "other canvas "
           "top-1", "T (97% kept)", "right+sure", "unseen refused"]]
  for pool in [0] + [int(p) for p in FLAGS.pools]:
    pool = min(pool, len(train_x))
    picks = np.random.default_rng(0).choice(len(train_x), pool,
                                            replace=False)
    keras.utils.set_random_seed(0)
    head = model_lib.build_head(train_x.shape[1], k, 0.2)
    head.compile(keras.optimizers.Adam(1e-3), losses.SparseCrossentropy(0.1))
    head.fit(np.concatenate([train_x, pool_x[picks]]),
             np.concatenate([train_y, train_y[picks]]),
             batch_size=100, epochs=FLAGS.epochs, verbose=0, shuffle=True)
    raw = {name: head.predict(x, batch_size=1000, verbose=0)
           for name, x in measured.items()}
    temperature = calibration.fit_temperature(raw["val canvases"], val_y)
    scores = {n: calibration.rescale(p, temperature) for n, p in raw.items()}
    kept = scores["val canvases"]
    threshold = np.quantile(kept.max(1)[kept.argmax(1) == val_y], 0.03)
    suite = scores["suite canvases"]
    sure = np.mean((suite.argmax(1) == test_y) & (suite.max(1) >= threshold))
    rows.append([
        "bitmaps" + (f" + {pool} re-draws" if pool else ""),
        *(f"{np.mean(scores[n].argmax(1) == test_y):.4f}"
          for n in ("bitmaps", "suite canvases", "other canvases")),
        f"{threshold:.3f}",
        f"{sure:.4f}",
        f"{np.mean(scores['unseen canvases'].max(1) < threshold):.3f}"])
  print(f"{FLAGS.architecture}, {k} categories x {FLAGS.samples_per_class}"
        f" ({len(train_x)} training drawings), unseen: "
        f"{', '.join(FLAGS.unseen_categories)}")
  for r in rows:
    print(common.markdown_row(r))


if __name__ == "__main__":
  FLAGS.set_default("architecture", "mobilenet_v2_0.5_224")
  common.run_app(main, "__main__")
