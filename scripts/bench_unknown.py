"""Unseen categories: which target teaches "not sure" on the app's canvases.

  python scripts/bench_unknown.py --data_dir=../shared/data/quickdraw \
      --architecture=mobilenet_v2_0.5_224 \
      --weights=../shared/data/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5

On cached frozen features (the head's own route), trains heads as
quickdraw-train does (training drawings, pen re-draws of half of them,
junk a tenth of each batch) and, in all but the first and last, doodles
of the `--exposure` categories (QuickDraw's and pen re-drawn) a fifth of
each batch, each with another target:

* drawings and junk: no other categories (`--other_share=0`);
* uniform: a plain softmax, junk and doodles with a uniform target over the
  classes (Hendrycks et al.'s outlier exposure; this tool until 2026-12-06);
* background: one more class, with weights of its own, whose score the
  app would read as "not sure" (the threshold on the classes' scores);
* none class: junk and doodles trained to a none logit fixed at 0
  (`losses.softmax_with_none`);
* none class and mixes: the shipped head, with mixes of two of each
  batch's drawings' features added (`outliers.add_mixes`), trained to the
  none class when the two differ in class;
* mixes, no other doodles: as an offline run with no other files trains.

Every head is calibrated as the export calibrates (a temperature on the
validation drawings; the threshold on them as canvases), and scored on
pen-drawn canvases read by the app's
preprocessing (`canvases.pen_suite`): test canvases answered right at or
above the threshold, and canvases of `--unseen` categories (which no head
saw) and junk refused under it, with the threshold at the export's default
rule (at most 3% of the right answers on the validation canvases given
up).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import quickdraw.cli  # noqa: F401  (first: a quiet TensorFlow start)

import keras
import numpy as np
import tensorflow as tf
from absl import flags

from quickdraw import (bottlenecks, calibration, canvases, losses,
                       model as model_lib, outliers, quality, redraws)
from quickdraw.cli import common
from quickdraw.cli import train as train_cli  # noqa: F401  (its flags)
from quickdraw.config import DataConfig
from quickdraw.data_source import QuickDrawSource, drawings_from_split
from quickdraw.splits import Split

FLAGS = flags.FLAGS
# quickdraw-train's --architecture (here MobileNetV2 0.5, set only when run
# as a script: the tests import scripts into one process), --weights,
# --categories (empty: the gate's 10), --data_dir, --samples_per_class,
# --epochs and --bottleneck_dir.
flags.DEFINE_list("exposure", [c for c in quality.RETRAIN_OTHERS
                               if c not in ("book", "train")],
                  "Other categories shown in training.")
flags.DEFINE_list("unseen", ["dog", "fish", "flower", "square", "book",
                             "train"], "Categories no part of the run sees.")
flags.DEFINE_integer("other_drawings", 300, "Drawings of each other one.")
flags.DEFINE_integer("unseen_drawings", 150, "Drawings of each unseen one.")
if "canvas_side" not in FLAGS:  # bench_redraws' (the tests import both)
  flags.DEFINE_integer("canvas_side", 256, "Side of the measured canvases.")


def _rows(names: Sequence[str], count: int) -> np.ndarray:
  source = QuickDrawSource.open(DataConfig(
      categories=tuple(names), data_dir=FLAGS.data_dir, download=False,
      samples_per_class=count, validation_percentage=0,
      testing_percentage=0))
  return np.concatenate([source.read_rows(c, source.selected_rows(c))
                         for c in range(source.num_classes)])


def _trained(head: keras.Model, loss, x, y, mixes: int = 0) -> keras.Model:
  """`head` trained on (x, y) in batches of 100, with `mixes` of two of
  each batch's drawings' features (`outliers.add_mixes`) added to each."""
  head.compile(keras.optimizers.Adam(1e-3), loss)
  if not mixes:
    head.fit(x, y, batch_size=100, epochs=FLAGS.epochs, verbose=0,
             shuffle=True)
    return head
  batches = tf.data.Dataset.from_tensor_slices(
      (x.astype(np.float32), y.astype(np.int32))).shuffle(len(x), seed=0)
  head.fit(outliers.add_mixes(batches.batch(100), mixes, seed=0),
           epochs=FLAGS.epochs, verbose=0, shuffle=False)  # it shuffles
  return head


def _softmax_head(dim: int, classes: int) -> keras.Model:
  features = keras.Input((dim,))
  return keras.Model(features, keras.layers.Dense(
      classes, activation="softmax", name=calibration.SOFTMAX_LAYER)(
          keras.layers.Dropout(0.2)(features)))


def _cells(val, val_y, test, test_y, unseen, junk) -> list[str]:
  threshold = calibration.score_threshold(val, val_y)
  sure = np.mean((test.argmax(1) == test_y) & (test.max(1) >= threshold))
  return [f"{np.mean(test.argmax(1) == test_y):.4f}", f"{threshold:.3f}",
          f"{sure:.4f}", f"{np.mean(unseen.max(1) < threshold):.3f}",
          f"{np.mean(junk.max(1) < threshold):.3f}"]


def main(argv: Sequence[str]) -> None:
  del argv
  architecture = model_lib.parse_architecture(FLAGS.architecture)
  backbone = model_lib.build_backbone(architecture, model_lib.resolve_weights(
      architecture, FLAGS.weights, None))
  size = architecture.image_size
  source = QuickDrawSource.open(DataConfig(
      categories=tuple(FLAGS.categories or quality.RETRAIN_CATEGORIES),
      data_dir=FLAGS.data_dir, download=False,
      samples_per_class=FLAGS.samples_per_class, image_size=size))
  cache = os.path.expanduser(FLAGS.bottleneck_dir)

  def features(drawings, name):
    return bottlenecks.drawings_features(
        backbone, np.asarray(drawings, np.uint8).reshape(-1, 28, 28, 1), size,
        cache, name=name)

  def suite(drawings, seed, name):
    return features(canvases.read_back(
        canvases.pen_suite(drawings, FLAGS.canvas_side, seed)[0]), name)

  x, y = bottlenecks.load_or_compute(backbone, source, Split.TRAIN, size,
                                     cache, verbose=0)[:2]
  train, _ = drawings_from_split(source, Split.TRAIN, 10 ** 9)
  half = np.arange(0, len(train), 2)
  x = np.concatenate([x, features(redraws.pen_redraws(train[half], seed=5),
                                  "bench-redraws")])
  y = np.concatenate([y, y[half]])
  junk = features(outliers.cached_junk_drawings(), "junk")
  exposure = features(redraws.with_pen_redraws(
      _rows(FLAGS.exposure, FLAGS.other_drawings), 7, cache), "exposure")
  val, val_y = drawings_from_split(source, Split.VALIDATION, 10 ** 9)
  test, test_y = drawings_from_split(source, Split.TEST, 10 ** 9)
  measured = {
      "val drawings": bottlenecks.load_or_compute(
          backbone, source, Split.VALIDATION, size, cache, verbose=0)[0],
      "val": suite(val, 12, "bench-val-suite"),
      "test": suite(test, 13, "bench-test-suite"),
      "unseen": suite(_rows(FLAGS.unseen, FLAGS.unseen_drawings), 15,
                      "bench-unseen-suite"),
      "junk": features(outliers.junk_drawings(per_kind=60, seed=99),
                       "bench-junk")}
  # Junk a tenth, other doodles a fifth of the drawings, as the defaults.
  rng = np.random.default_rng(0)
  junk_rows = junk[rng.choice(len(junk), len(x) // 10)]
  doodle_rows = exposure[rng.choice(len(exposure), len(x) // 5)]
  k, dim = source.num_classes, x.shape[1]
  none = outliers.JUNK_LABEL
  keras.utils.set_random_seed(0)
  smoothed = keras.losses.CategoricalCrossentropy(label_smoothing=0.1)
  heads = {
      "drawings and junk": _trained(
          model_lib.build_head(dim, k, 0.2),
          losses.SparseCrossentropy(0.1), np.concatenate([x, junk_rows]),
          np.concatenate([y, np.full(len(junk_rows), none)])),
      "uniform": _trained(
          _softmax_head(dim, k), smoothed,
          np.concatenate([x, junk_rows, doodle_rows]),
          np.concatenate([np.eye(k)[y], np.full(
              (len(junk_rows) + len(doodle_rows), k), 1 / k)])),
      "background": _trained(
          _softmax_head(dim, k + 1), smoothed,
          np.concatenate([x, junk_rows, doodle_rows]),
          np.eye(k + 1)[np.concatenate(
              [y, np.full(len(junk_rows) + len(doodle_rows), k)])]),
      "none class": _trained(
          model_lib.build_head(dim, k, 0.2),
          losses.SparseCrossentropy(0.1),
          np.concatenate([x, junk_rows, doodle_rows]),
          np.concatenate([y, np.full(len(junk_rows) + len(doodle_rows),
                                     none)])),
      # quickdraw-train adds a fifth of its drawings' count as mixes, which
      # is about a tenth of these batches' rows.
      "none class and mixes": _trained(
          model_lib.build_head(dim, k, 0.2),
          losses.SparseCrossentropy(0.1),
          np.concatenate([x, junk_rows, doodle_rows]),
          np.concatenate([y, np.full(len(junk_rows) + len(doodle_rows),
                                     none)]), mixes=10),
      "mixes, no other doodles": _trained(
          model_lib.build_head(dim, k, 0.2),
          losses.SparseCrossentropy(0.1), np.concatenate([x, junk_rows]),
          np.concatenate([y, np.full(len(junk_rows), none)]), mixes=10),
  }
  rows = [["head", "canvas top-1", "threshold", "right+sure",
           "unseen refused", "junk refused"]]
  for name, head in heads.items():
    raw = {n: head.predict(f, batch_size=1000, verbose=0)
           for n, f in measured.items()}
    # Calibrated as the export calibrates; a background class's share of
    # the scores is its "not sure".
    temperature = calibration.fit_temperature(raw["val drawings"], val_y)
    scores = {n: calibration.rescale(p, temperature)[:, :k]
              for n, p in raw.items()}
    rows.append([name, *_cells(scores["val"], val_y, scores["test"], test_y,
                               scores["unseen"], scores["junk"])])
  print(f"{FLAGS.architecture}, {k} categories x {FLAGS.samples_per_class}, "
        f"exposure {len(FLAGS.exposure)} x {FLAGS.other_drawings} (and their "
        f"re-draws), unseen {', '.join(FLAGS.unseen)}")
  for r in rows:
    print(common.markdown_row(r))


if __name__ == "__main__":
  FLAGS.set_default("architecture", "mobilenet_v2_0.5_224")
  common.run_app(main, "__main__")
