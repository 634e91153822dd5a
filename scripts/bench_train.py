"""Benchmarks a whole quickdraw-train run against Keras' bare forward pass,
per backbone, and the bottleneck cache.

  python scripts/bench_train.py --data_dir=../shared/data/quickdraw \\
      --weights_dir=../shared/data/weights

For each of --backbones (default: v1 0.25, MobileNetV2 0.35, 0.5 and 1.0;
`--weights=none` where --weights_dir lacks the ImageNet file), on
--categories (default the quickstart's 10) x --samples_per_class (default
2,000 here), prints:

  * the floor: Keras' bare forward pass (a compiled `backbone(x)`, batch
    64, images upsampled beforehand and held in memory) over every drawing
    of the run's three splits, measured on --floor_drawings of them and
    scaled to all;
  * the first run: `quickdraw-train` in a fresh process, empty bottleneck
    folder, export for Android included, as a multiple of the floor, with
    its phases (the time between the run's own log lines);
  * the cached rerun: the same command into a new output folder, the
    bottleneck folder kept.

With --pipeline_check, instead (the cache's own figures, one backbone:
--architecture, --weights, --samples_per_class default 200):

  * the bare backbone's forward rate (drawings/s) on the split's images held
    in memory, and the rate of bottleneck computation through the whole
    pipeline (memmaps, tf.data, upsampling, the cache's writes) on the very
    same drawings, with their ratio;
  * the first epoch (computing the bottlenecks, then one pass of the head)
    against a later epoch from the cache, with their ratio (target <= 0.05),
    and how long a second run takes to find its cache.

A slower machine takes longer; the ratios are what to compare.
"""

from __future__ import annotations

import quickdraw.cli  # noqa: F401  (first: a quiet TensorFlow start)

import dataclasses
import os
import re
import shutil
import subprocess
import sys
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
flags.DEFINE_boolean("pipeline_check", False, "Measure the bottleneck "
                     "cache's pipeline and epochs instead of whole runs.")
flags.DEFINE_list("backbones", ["mobilenet_0.25_224", "mobilenet_v2_0.35_224",
                                "mobilenet_v2_0.5_224",
                                "mobilenet_v2_1.0_224"],
                  "Architectures of the whole-run benchmark.")
if "weights_dir" not in FLAGS:  # tests import it beside bench_backbones
  common.DEFINE_path("weights_dir", None, "Folder of Keras' no-top weight "
                      "files; a backbone whose file is not there runs with "
                      "--weights=none (the same compute).")
flags.DEFINE_integer("floor_drawings", 4000, "Drawings the bare forward "
                     "pass is timed on (then scaled to the run's).",
                     lower_bound=64)
common.DEFINE_path("runs_dir", None, "Where the runs and their caches go "
                    "(default: a temporary folder, removed after).")

QUICKSTART = ["airplane", "alarm clock", "apple", "banana", "bicycle", "cat",
              "dog", "fish", "house", "star"]
# A log line's time and its message (absl's format).
_LOG_LINE = re.compile(r"^[IWE]\d{4} (\d\d):(\d\d):(\d\d\.\d+) .*?\] (.*)$")


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


def pipeline_check() -> None:
  """The bottleneck cache's own figures (--pipeline_check)."""
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


def _weights(architecture: str) -> str:
  """The ImageNet file in --weights_dir for `architecture`, or "none"."""
  named = model_lib.parse_architecture(architecture)
  path = os.path.join(os.path.expanduser(FLAGS.weights_dir),
                      named.weights_filename)
  return path if os.path.isfile(path) else "none"


def floor_seconds(architecture: str, weights: str, drawings: int) -> float:
  """Keras' bare forward pass over `drawings` drawings, measured on
  --floor_drawings of the split's and scaled."""
  data = common.data_config_from_flags()
  source = QuickDrawSource.open(data)
  named = model_lib.parse_architecture(architecture)
  backbone = model_lib.build_backbone(
      dataclasses.replace(named, image_size=data.image_size),
      None if weights == "none" else weights)
  batches = []
  for x, _ in input_pipeline.make_dataset(
      source, Split.TRAIN, FLAGS.bench_batch_size, image_size=data.image_size,
      shuffle=False, value_range=named.input_range):
    batches.append(x)
    if sum(len(b) for b in batches) >= FLAGS.floor_drawings:
      break
  forward = tf.function(lambda x: backbone(x, training=False),
                        reduce_retracing=True)
  for x in (batches[0], batches[-1]):  # traced before timing
    np.asarray(forward(x))
  start = time.perf_counter()
  for x in batches:
    np.asarray(forward(x))
  seconds = time.perf_counter() - start
  return seconds * drawings / sum(len(b) for b in batches)


def timed_run(args: list[str]) -> tuple[float, list[tuple[float, str]]]:
  """Runs quickdraw-train; returns its wall time and its log lines, each
  as (seconds since the start, message)."""
  start_clock = time.time()
  start = time.perf_counter()
  done = subprocess.run(
      # --verbosity=1: absl's own log lines, which carry their time.
      [sys.executable, "-m", "quickdraw.cli.train", *args, "--verbosity=1"],
      capture_output=True, text=True)
  seconds = time.perf_counter() - start
  if done.returncode:
    raise SystemExit(f"quickdraw-train failed:\n{done.stderr[-3000:]}")
  day = time.strftime("%Y-%m-%d", time.localtime(start_clock))
  lines = []
  for line in done.stderr.splitlines():
    m = _LOG_LINE.match(line)
    if m:
      at = time.mktime(time.strptime(f"{day} {m[1]}:{m[2]}:00",
                                     "%Y-%m-%d %H:%M:%S")) + float(m[3])
      lines.append((at - start_clock, m[4]))
  return seconds, lines


_PHASES = (("start-up, data, exposure pools", "Bottlenecks of the train"),
           ("train split's bottlenecks", "Features of the"),
           ("exposure features, pictures", "Bottlenecks of the validation"),
           ("validation bottlenecks, head", "Bottlenecks of the test"),
           ("test bottlenecks, evaluation", "Calibrating"),
           ("calibration", "Converting to TFLite"),
           ("export and its checks", None))


def phases(seconds: float, lines: list[tuple[float, str]]
           ) -> list[tuple[str, float]]:
  """The run's time between its landmark log lines (`_PHASES`); a phase
  whose landmark is missing (a cached rerun logs no features) is 0."""
  out, at = [], 0.0
  for name, until in _PHASES:
    end = seconds if until is None else next(
        (t for t, message in lines if message.startswith(until) and t >= at),
        None)
    if end is None:
      out.append((name, 0.0))
      continue
    out.append((name, end - at))
    at = end
  return out


def whole_runs() -> None:
  if not FLAGS.weights_dir:
    raise SystemExit("pass --weights_dir")
  if not FLAGS.categories and not FLAGS.categories_file:
    FLAGS.categories = QUICKSTART
  work = FLAGS.runs_dir or tempfile.mkdtemp(prefix="bench_train_")
  source = QuickDrawSource.open(common.data_config_from_flags())
  drawings = sum(source.split_size(s) for s in Split)
  print(f"{source.num_classes} categories, {drawings:,} drawings in the "
        f"three splits, {os.cpu_count()} CPUs")
  rows = []
  try:
    for architecture in FLAGS.backbones:
      weights = _weights(architecture)
      floor = floor_seconds(architecture, weights, drawings)
      cache = os.path.join(work, architecture, "bottlenecks")
      shutil.rmtree(cache, ignore_errors=True)
      args = [f"--data_dir={os.path.expanduser(FLAGS.data_dir)}",
              "--nodownload", f"--categories={','.join(source.categories)}",
              f"--samples_per_class={FLAGS.samples_per_class}",
              f"--architecture={architecture}", f"--weights={weights}",
              f"--bottleneck_dir={cache}"]
      runs = {}
      for kind in ("first", "cached"):
        out = os.path.join(work, architecture, kind)
        runs[kind] = timed_run(args + [
            f"--output_dir={out}",
            f"--android_assets_dir={os.path.join(out, 'assets')}"])
      label = architecture + ("" if weights != "none" else " (none)")
      print(f"\n{label}: bare Keras forward over {drawings:,} drawings "
            f"{floor:.1f} s")
      for kind, (seconds, lines) in runs.items():
        print(f"  {kind} run: {seconds:.1f} s, {seconds / floor:.2f}x")
        for name, took in phases(seconds, lines):
          print(f"    {name:<34} {took:6.1f} s")
      rows.append((label, floor, runs["first"][0], runs["cached"][0]))
    print("\n| backbone | bare Keras forward | first run | cached rerun |")
    print("| --- | --- | --- | --- |")
    for label, floor, first, cached in rows:
      print(common.markdown_row([
          label, f"{floor:.1f} s", f"{first:.1f} s ({first / floor:.2f}x)",
          f"{cached:.1f} s ({cached / floor:.2f}x)"]))
  finally:
    if not FLAGS.runs_dir:
      shutil.rmtree(work, ignore_errors=True)


def main(argv: Sequence[str]) -> None:
  del argv
  if FLAGS.pipeline_check:
    pipeline_check()
  else:
    whole_runs()


if __name__ == "__main__":
  flags.FLAGS.set_default("samples_per_class",
                          200 if "--pipeline_check" in sys.argv else 2000)
  common.run_app(main, "__main__")
