"""Benchmarks the bottleneck cache: pipeline overhead and cached epochs.

  python scripts/bench_train.py --data_dir=../shared/data/quickdraw \\
      --architecture=mobilenet_0.25_224 \\
      --weights=../shared/data/weights/mobilenet_2_5_224_tf_no_top.h5

Takes the training split of --categories (default: every category file in
--data_dir) at --samples_per_class (default 200 here) and prints, from one
run:

  * the bare backbone's forward rate (drawings/s) on the split's images held
    in memory, and the rate of bottleneck computation through the whole
    pipeline (memmaps, tf.data, upsampling, the cache's writes) on the very
    same drawings, with their ratio (target >= 0.9);
  * the first epoch (computing the bottlenecks, then one pass of the head)
    against a later epoch from the cache, with their ratio (target <= 0.05),
    and how long a second run takes to find its cache.

The pipeline ships 28x28 drawings and upsamples them inside the compiled
forward pass (as quickdraw-train does); the bare rate runs the backbone alone
on images already upsampled. Both functions are traced before timing.
"""

from __future__ import annotations

import quickdraw.cli  # noqa: F401  (first: a quiet TensorFlow start)

import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import flags

from quickdraw import bottlenecks, input_pipeline
from quickdraw import model as model_lib
from quickdraw.cli import common
from quickdraw.cli import train as train_cli
from quickdraw.data_source import QuickDrawSource
from quickdraw.splits import Split

FLAGS = flags.FLAGS
flags.DEFINE_integer("bench_batch_size", 64,
                     "Drawings per backbone call, for both rates.")
flags.DEFINE_integer("rounds", 3, "Timed rounds of each rate.", lower_bound=1)


class _EpochTimes(keras.callbacks.Callback):

  def __init__(self):
    super().__init__()
    self.seconds = []

  def on_epoch_begin(self, epoch, logs=None):
    self._start = time.perf_counter()

  def on_epoch_end(self, epoch, logs=None):
    self.seconds.append(time.perf_counter() - self._start)


def _default_categories() -> list[str]:
  return sorted(os.path.splitext(f)[0]
                for f in os.listdir(os.path.expanduser(FLAGS.data_dir))
                if f.endswith(".npy"))


def main(argv: Sequence[str]) -> None:
  del argv
  if not FLAGS.categories and not FLAGS.categories_file:
    FLAGS.categories = _default_categories()
  data = common.data_config_from_flags()
  config = train_cli.train_config_from_flags()
  source = QuickDrawSource.open(data)
  named = model_lib.parse_architecture(config.architecture)
  weights = model_lib.resolve_weights(named, config.weights,
                                      config.model_dir or None)
  backbone = model_lib.build_backbone(
      dataclasses.replace(named, image_size=data.image_size), weights)
  n = len(source.index(Split.TRAIN))
  batch = FLAGS.bench_batch_size
  print(f"{source.num_classes} categories, {n:,} training drawings at "
        f"{data.image_size}x{data.image_size}, {config.architecture}, batch "
        f"{batch}, {os.cpu_count()} CPUs")

  # The very drawings the pipeline will read, upsampled once, in memory.
  images = [x for x, _ in input_pipeline.make_dataset(
      source, Split.TRAIN, batch, image_size=data.image_size, shuffle=False,
      value_range=named.input_range)]
  bare_forward = tf.function(lambda x: backbone(x, training=False),
                              reduce_retracing=True)
  for x in (images[0], images[-1]):  # trace both batch shapes
    np.asarray(bare_forward(x))
  drawings = [x for x, _ in input_pipeline.make_dataset(
      source, Split.TRAIN, batch, shuffle=False, value_range=None)]
  piped_forward = bottlenecks.compiled_forward(
      backbone, data.image_size)
  for x in (drawings[0], drawings[-1]):
    np.asarray(piped_forward(x))

  # Alternating rounds, medians: a background blip on a 2-core machine
  # should not decide the ratio.
  bare_s, piped_s = [], []
  cache = tempfile.mkdtemp(prefix="bench_bottlenecks_")
  try:
    for r in range(FLAGS.rounds):
      start = time.perf_counter()
      for x in images:
        np.asarray(bare_forward(x))
      bare_s.append(time.perf_counter() - start)
      folder = os.path.join(cache, str(r))
      start = time.perf_counter()
      features, labels, computed = bottlenecks.load_or_compute(
          backbone, source, Split.TRAIN, data.image_size, folder,
          batch_size=batch, verbose=0)
      piped_s.append(time.perf_counter() - start)
      assert computed
    del images
    bare = n / float(np.median(bare_s))
    piped = n / float(np.median(piped_s))
    bottleneck_s = float(np.median(piped_s))
    print(f"  bare backbone forward:     {bare:10,.0f} drawings/s")
    print(f"  bottlenecks via pipeline:  {piped:10,.0f} drawings/s")
    print(f"  ratio:                     {piped / bare:10.3f} (target >= 0.9; "
          f"median of {FLAGS.rounds} rounds)")

    head = model_lib.build_head(features.shape[1], source.num_classes)
    head.compile(optimizer=keras.optimizers.Adam(config.learning_rate),
                 loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    times = _EpochTimes()
    epochs = 3
    head.fit(input_pipeline.feature_dataset(
        features, labels, config.train_batch_size, shuffle=True, seed=0,
        epochs=None), epochs=epochs, shuffle=False, verbose=0,
        steps_per_epoch=input_pipeline.batches_per_epoch(
            n, config.train_batch_size), callbacks=[times])
    first = bottleneck_s + times.seconds[0]
    cached = float(np.median(times.seconds[1:]))
    print(f"  first epoch (bottlenecks + head): {first:8.2f} s")
    print(f"  epoch from the cache:             {cached:8.3f} s")
    print(f"  ratio:                            {cached / first:8.4f} "
          "(target <= 0.05)")

    start = time.perf_counter()
    _, _, computed = bottlenecks.load_or_compute(
        backbone, source, Split.TRAIN, data.image_size, folder,
        batch_size=batch, verbose=0)
    assert not computed
    print(f"  second run finds its cache in:    "
          f"{time.perf_counter() - start:8.3f} s (no forward pass)")
  finally:
    shutil.rmtree(cache, ignore_errors=True)


if __name__ == "__main__":
  flags.FLAGS.set_default("samples_per_class", 200)
  common.run_app(main, "__main__")
