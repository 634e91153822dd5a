"""Benchmarks accuracy: MobileNet transfer against a small CNN from scratch.

  python scripts/bench_accuracy.py --data_dir=../shared/data/quickdraw \\
      --architecture=mobilenet_0.25_224 \\
      --weights=../shared/data/weights/mobilenet_2_5_224_tf_no_top.h5

On one split of --categories (default: every category file in --data_dir;
--samples_per_class 1000, 70% train / 10% validation / 20% test here;
the validation drawings are where int8 picks its float layers), trains and
tests:

  1. a small CNN from scratch on the 28x28 drawings (two conv layers and a
     dense layer: the obvious alternative to transfer learning);
  2. the frozen backbone with a new head, at the architecture's own input
     size (quickdraw-train's default; --frozen_image_size to change it);
  3. the same after fine-tuning (--fine_tune_layers, default 100 here: the
     whole backbone, batch norm kept frozen) at --image_size,

and prints their test top-1 and top-3 side by side. Target: fine-tuned at
least 3 points above the CNN. The accuracy recipe:

  python scripts/bench_accuracy.py --flagfile=configs/accurate.flags \
      --data_dir=../shared/data/quickdraw \
      --weights=../shared/data/weights/mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.5_224_no_top.h5
"""

from __future__ import annotations

import quickdraw.cli  # noqa: F401  (first: a quiet TensorFlow start)

import dataclasses
import os
import time
from collections.abc import Sequence

import keras
from absl import flags

from quickdraw import backbones, evaluation, input_pipeline, training
from quickdraw.cli import common
from quickdraw.cli import train as train_cli
from quickdraw.data_source import QuickDrawSource
from quickdraw.splits import Split

FLAGS = flags.FLAGS
flags.DEFINE_integer("cnn_epochs", 15, "Epochs for the small CNN.")
flags.DEFINE_integer("frozen_image_size", 0,
                     "Input size of the frozen run; 0 for the "
                     "architecture's own.", lower_bound=0)

_BENCH_DEFAULTS = dict(samples_per_class=1000, validation_percentage=10,
                       testing_percentage=20, fine_tune_layers=100,
                       fine_tune_epochs=5, fine_tune_learning_rate=5e-4,
                       output_dir=os.path.join("runs", "bench_accuracy"))


def small_cnn(num_classes: int) -> keras.Model:
  """Two conv layers and a dense layer over 28x28 drawings in [0, 255]."""
  return keras.Sequential([
      keras.Input((28, 28, 1)),
      keras.layers.Rescaling(1 / 255),
      keras.layers.Conv2D(32, 3, activation="relu"),
      keras.layers.MaxPooling2D(),
      keras.layers.Conv2D(64, 3, activation="relu"),
      keras.layers.MaxPooling2D(),
      keras.layers.Flatten(),
      keras.layers.Dropout(0.3),
      keras.layers.Dense(128, activation="relu"),
      keras.layers.Dense(num_classes, activation="softmax"),
  ], name="small_cnn")


def train_small_cnn(source: QuickDrawSource, epochs: int,
                    batch_size: int) -> dict:
  """Trains the CNN on the training split; returns its test report."""
  keras.utils.set_random_seed(source.config.seed)
  cnn = small_cnn(source.num_classes)
  cnn.compile(optimizer=keras.optimizers.Adam(1e-3),
              loss="sparse_categorical_crossentropy", metrics=["accuracy"])
  n = len(source.index(Split.TRAIN))
  cnn.fit(input_pipeline.make_dataset(source, Split.TRAIN, batch_size,
                                      epochs=None, value_range=None),
          epochs=epochs, shuffle=False, verbose=0,
          steps_per_epoch=input_pipeline.batches_per_epoch(n, batch_size))
  test = input_pipeline.make_dataset(source, Split.TEST, batch_size,
                                     shuffle=False, value_range=None)
  probabilities = cnn.predict(test, verbose=0)
  labels = source.index(Split.TEST).class_ids
  return evaluation.classification_report(probabilities, labels,
                                          source.categories)


def main(argv: Sequence[str]) -> None:
  del argv
  common.every_category_in_data_dir_unless_chosen()
  data = common.data_config_from_flags()
  config = dataclasses.replace(train_cli.train_config_from_flags(), verbose=0)
  source = QuickDrawSource.open(data)
  print(f"{source.num_classes} categories, "
        f"{len(source.index(Split.TRAIN)):,} training and "
        f"{len(source.index(Split.TEST)):,} test drawings", flush=True)

  rows = []
  start = time.perf_counter()
  cnn = train_small_cnn(source, FLAGS.cnn_epochs, config.train_batch_size)
  rows.append(("small CNN from scratch, 28x28", cnn,
               time.perf_counter() - start))
  print(f"  {rows[-1][0]}: done", flush=True)
  own_size = (FLAGS.frozen_image_size or
              backbones.parse_architecture(config.architecture).image_size)
  for name, run_config, image_size in (
      (f"{config.architecture} frozen + head",
       dataclasses.replace(config, fine_tune_layers=0,
                           output_dir=os.path.join(config.output_dir,
                                                   "frozen")), own_size),
      (f"{config.architecture} fine-tuned ({config.fine_tune_layers} layers,"
       f" {config.fine_tune_epochs} epochs, {data.image_size} px)",
       dataclasses.replace(config, output_dir=os.path.join(
           config.output_dir, "fine_tuned")), data.image_size)):
    start = time.perf_counter()
    result = training.train_and_evaluate(
        dataclasses.replace(data, image_size=image_size), run_config)
    rows.append((name, result.report, time.perf_counter() - start))
    print(f"  {name}: done", flush=True)

  width = max(len(r[0]) for r in rows)
  print(f"\n{'model':<{width}}  top-1   top-3   seconds")
  for name, report, seconds in rows:
    print(f"{name:<{width}}  {report['top1']:.4f}  {report['top3']:.4f}  "
          f"{seconds:7.0f}")
  gain = rows[-1][1]["top1"] - rows[0][1]["top1"]
  print(f"fine-tuned minus CNN: {100 * gain:+.1f} points (target >= +3.0)")


if __name__ == "__main__":
  for _name, _value in _BENCH_DEFAULTS.items():
    flags.FLAGS.set_default(_name, _value)
  common.run_app(main, "__main__")
