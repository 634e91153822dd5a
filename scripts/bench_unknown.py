"""Unseen categories: uniform-target exposure against a background class.

  python scripts/bench_unknown.py --data_dir=../shared/data/quickdraw \
      --architecture=mobilenet_v2_0.5_224 \
      --weights=../shared/data/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5

On cached frozen features (the head's own route), trains one head per way
of teaching "not sure" and prints, for each, the known test drawings
answered right at or above the threshold and the share of doodles of
categories no part of the run saw refused under it, with the threshold at
the export's default (95% of validation answers right) and where it keeps
97% of the validation drawings answered right:

* none: the drawings alone;
* uniform: `--exposure` categories' drawings in each batch (a fifth of
  it) with a uniform target, as `--other_share` does;
* background: those drawings as one more class, whose score the app would
  read as "not sure" (the threshold then on the known classes' top score).

QuickDraw bitmaps, not canvases: bench_quality.py measures the app's side.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import quickdraw.cli  # noqa: F401  (first: a quiet TensorFlow start)

import keras
import numpy as np
from absl import flags

from quickdraw import bottlenecks, calibration, model as model_lib, quality
from quickdraw.cli import common
from quickdraw.cli import train as train_cli  # noqa: F401  (its flags)
from quickdraw.config import DataConfig
from quickdraw.data_source import QuickDrawSource
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


def _features(backbone, names: Sequence[str], count: int, size: int,
              name: str) -> np.ndarray:
  source = QuickDrawSource.open(DataConfig(
      categories=tuple(names), data_dir=FLAGS.data_dir, download=False,
      samples_per_class=count, validation_percentage=0,
      testing_percentage=0, image_size=size))
  drawings = np.concatenate([source.read_rows(c, source.selected_rows(c))
                             for c in range(source.num_classes)])
  return bottlenecks.drawings_features(
      backbone, drawings.reshape(-1, 28, 28, 1), size,
      os.path.expanduser(FLAGS.bottleneck_dir), name=name)


def _head(dim: int, classes: int, x, y, seed: int) -> keras.Model:
  keras.utils.set_random_seed(seed)
  head = model_lib.build_head(dim, classes, 0.2)
  head.compile(keras.optimizers.Adam(1e-3),
               keras.losses.CategoricalCrossentropy(label_smoothing=0.1))
  head.fit(x, y, batch_size=100, epochs=FLAGS.epochs, verbose=0,
           shuffle=True)
  return head


def _row(name, val, val_labels, test, test_labels, unseen) -> list[str]:
  cells = [name]
  for threshold in (calibration.score_threshold(val, val_labels),
                    np.quantile(val.max(1)[val.argmax(1) == val_labels],
                                0.03)):
    right = np.mean((test.argmax(1) == test_labels)
                    & (test.max(1) >= threshold))
    cells += [f"{threshold:.3f}", f"{right:.4f}",
              f"{np.mean(unseen.max(1) < threshold):.3f}"]
  return cells


def main(argv: Sequence[str]) -> None:
  del argv
  architecture = model_lib.parse_architecture(FLAGS.architecture)
  backbone = model_lib.build_backbone(architecture, model_lib.resolve_weights(
      architecture, FLAGS.weights, None))
  size = architecture.image_size
  source = QuickDrawSource.open(DataConfig(
      categories=tuple(FLAGS.categories or quality.RETRAIN_CATEGORIES),
      data_dir=FLAGS.data_dir,
      download=False, samples_per_class=FLAGS.samples_per_class,
      image_size=size))
  cache = os.path.expanduser(FLAGS.bottleneck_dir)
  split = {s: bottlenecks.load_or_compute(backbone, source, s, size, cache,
                                          verbose=0)[:2]
           for s in (Split.TRAIN, Split.VALIDATION, Split.TEST)}
  exposure = _features(backbone, FLAGS.exposure, FLAGS.other_drawings, size,
                       "exposure")
  unseen = _features(backbone, FLAGS.unseen, 100, size, "unseen")
  (x, y), k = split[Split.TRAIN], source.num_classes
  dim = x.shape[1]
  # A fifth of each batch, as --other_share=0.2 adds.
  picks = np.random.default_rng(0).choice(len(exposure), len(x) // 5)
  rows = [["head", "T (95%)", "right+sure", "unseen refused", "T (97% kept)",
           "right+sure", "unseen refused"]]

  heads = {
      "none": _head(dim, k, x, np.eye(k)[y], 0),
      "uniform": _head(dim, k, np.concatenate([x, exposure[picks]]),
                       np.concatenate([np.eye(k)[y],
                                       np.full((len(picks), k), 1 / k)]), 0),
      "background": _head(dim, k + 1, np.concatenate([x, exposure[picks]]),
                          np.eye(k + 1)[np.concatenate(
                              [y, np.full(len(picks), k)])], 0),
  }
  val_x, val_y = split[Split.VALIDATION]
  test_x, test_y = split[Split.TEST]
  for name, head in heads.items():
    # Calibrated as the export calibrates, on the validation drawings.
    def scores(features, temperature=None):
      p = head.predict(features, batch_size=1000, verbose=0)
      return p if temperature is None else calibration.rescale(p, temperature)
    temperature = calibration.fit_temperature(scores(val_x), val_y)
    known = slice(0, k)  # a background class's share is its "not sure"
    rows.append(_row(name, scores(val_x, temperature)[:, known], val_y,
                     scores(test_x, temperature)[:, known], test_y,
                     scores(unseen, temperature)[:, known]))
  print(f"{FLAGS.architecture}, {k} categories x {FLAGS.samples_per_class}, "
        f"exposure {len(FLAGS.exposure)} x {FLAGS.other_drawings}, unseen "
        f"{', '.join(FLAGS.unseen)}")
  for r in rows:
    print(common.markdown_row(r))


if __name__ == "__main__":
  FLAGS.set_default("architecture", "mobilenet_v2_0.5_224")
  common.run_app(main, "__main__")
