"""End to end against the old recipe: JPEGs + retrain.py, then quickdraw.

  python scripts/bench_vs_jpeg.py --flagfile=configs/quickstart.flags \\
      --data_dir=../shared/data/quickdraw --architecture=mobilenet_0.25_224 \\
      --weights=../shared/data/weights/mobilenet_2_5_224_tf_no_top.h5

One run, the same categories, drawings, split and backbone for both routes,
each timed from the .npy files to a trained, exported model:

(a) the old route, as its two steps worked:
    1. write one JPEG per drawing (the old script's ~1,000 per category);
    2. retrain.py's bottlenecks: for each JPEG, one at a time, read the file,
       decode it, resize it to the backbone's input and normalise it, run
       the backbone on that single image, and write the vector as a text
       file (retrain.py's cache format);
    3. retrain.py's training: --old_steps steps (the recipe's 7,000) of
       plain gradient descent at 0.01 on 100 random cached bottlenecks, each
       read back from its text file; every 10 steps an evaluation on 100
       random validation bottlenecks; at the end, the whole test split;
    4. the frozen graph and the labels file.
(b) quickdraw-train with the flags given (bottleneck cache, head, test
    report, frozen graph, TFLite, labels), from empty caches.

Prints the backbone's own rate one image per call and in batches (what
batching alone can gain here), each stage's seconds, both totals with their ratio (issue 6's target:
quickdraw at least 5x faster) and both test top-1 accuracies. Work files go
under --work_dir and are deleted afterwards.

Route (a) is a lower bound on the old recipe's time: retrain.py also wrote
TensorBoard summaries (histograms of the new layer included) at every step,
which this leaves out.
"""

from __future__ import annotations

import quickdraw.cli  # noqa: F401  (first: a quiet TensorFlow start)

import contextlib
import dataclasses
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence

import keras
import numpy as np
import tensorflow as tf
from absl import flags

from quickdraw import inference, training
from quickdraw import model as model_lib
from quickdraw.cli import common
from quickdraw.cli import export as export_cli
from quickdraw.cli import train as train_cli
from quickdraw.data_source import QuickDrawSource
from quickdraw.splits import Split
from quickdraw.export import convert as export_convert
from quickdraw.export import flow as export_flow

FLAGS = flags.FLAGS
flags.DEFINE_integer("old_steps", 7000,
                     "retrain.py's --how_many_training_steps for route (a).")
flags.DEFINE_integer("old_batch_size", 100,
                     "retrain.py's --train_batch_size and "
                     "--validation_batch_size.")
flags.DEFINE_integer("old_eval_step_interval", 10,
                     "retrain.py's --eval_step_interval.")
flags.DEFINE_float("old_learning_rate", 0.01,
                   "retrain.py's --learning_rate (plain gradient descent).")
flags.DEFINE_string("work_dir", "", "Scratch folder; empty for a temporary "
                    "one. Deleted at the end.")
flags.DEFINE_float("rate_seconds", 3.0, "Seconds the backbone alone runs at "
                   "each batch size, for its images/s.")


class _Clock:
  """Seconds per named stage."""

  def __init__(self):
    self.stages: dict[str, float] = {}

  @contextlib.contextmanager
  def stage(self, name: str) -> Iterator[None]:
    start = time.perf_counter()
    yield
    self.stages[name] = time.perf_counter() - start
    print(f"    {name:<46} {self.stages[name]:8.1f} s", flush=True)

  @property
  def total(self) -> float:
    return sum(self.stages.values())


def _read_bottleneck(path: str) -> list[float]:
  # retrain.py: bottleneck_string.split(',') into floats.
  with open(path) as f:
    return [float(x) for x in f.read().split(",")]


def old_route(source: QuickDrawSource, backbone: keras.Model, image_size: int,
              work: str, rng: np.random.Generator) -> tuple[_Clock, float]:
  """Route (a). Returns its clock and its test top-1."""
  clock = _Clock()
  jpeg_dir = os.path.join(work, "jpeg")
  files: dict[Split, list[tuple[int, str]]] = {s: [] for s in Split}
  with clock.stage("1. write JPEGs, one per drawing"):
    for class_id, f in enumerate(source.files):
      folder = os.path.join(jpeg_dir, f.category)
      os.makedirs(folder, exist_ok=True)
      for split in Split:
        for row in source.split_rows(class_id, split):
          path = os.path.join(folder, f"{f.category}_{row}.jpg")
          image = source.read_rows(class_id, np.array([row])).reshape(
              28, 28, 1)
          with open(path, "wb") as out:
            out.write(tf.io.encode_jpeg(image, quality=95).numpy())
          files[split].append((class_id, path))

  # retrain.py's add_jpeg_decoding and run_bottleneck_on_image: decode,
  # resize (bilinear), normalise with mean 127.5 and std 127.5, then the
  # backbone on one image per call.
  # A signature, so that each file's bytes are fed like retrain.py's
  # feed_dict, not traced as a new constant.
  @tf.function(input_signature=[tf.TensorSpec([], tf.string)])
  def decode(contents):
    image = tf.cast(tf.io.decode_jpeg(contents, channels=3), tf.float32)
    image = tf.image.resize(image[None], (image_size, image_size))
    return (image - 127.5) / 127.5

  forward = tf.function(lambda x: backbone(x, training=False))
  text: dict[Split, list[tuple[int, str]]] = {s: [] for s in Split}
  with clock.stage("2. bottlenecks, one image at a time, to text"):
    for split in Split:
      for class_id, path in files[split]:
        with open(path, "rb") as f:
          # Two session runs in retrain.py: the resized image came back to
          # numpy and was fed to the bottleneck tensor.
          resized = decode(f.read()).numpy()
        vector = forward(tf.constant(resized)).numpy()[0]
        cached = path[:-4] + ".txt"
        with open(cached, "w") as f:
          f.write(",".join(str(v) for v in vector))
        text[split].append((class_id, cached))

  head = keras.Sequential([
      keras.Input((int(backbone.output_shape[-1]),)),
      keras.layers.Dense(source.num_classes, activation="softmax",
                         name="final_result")])
  head.compile(optimizer=keras.optimizers.SGD(FLAGS.old_learning_rate),
               loss="sparse_categorical_crossentropy", metrics=["accuracy"])

  def random_batch(split):
    # get_random_cached_bottlenecks: random files, read back every time.
    picks = rng.integers(0, len(text[split]), FLAGS.old_batch_size)
    x = np.array([_read_bottleneck(text[split][i][1]) for i in picks],
                 np.float32)
    return x, np.array([text[split][i][0] for i in picks])

  with clock.stage(f"3. {FLAGS.old_steps} steps from the text cache, test"):
    for step in range(FLAGS.old_steps):
      head.train_on_batch(*random_batch(Split.TRAIN))
      last = step + 1 == FLAGS.old_steps
      if text[Split.VALIDATION] and (
          step % FLAGS.old_eval_step_interval == 0 or last):
        head.test_on_batch(*random_batch(Split.VALIDATION))
    x = np.array([_read_bottleneck(p) for _, p in text[Split.TEST]],
                 np.float32)
    y = np.array([c for c, _ in text[Split.TEST]])
    top1 = float(np.mean(head.predict(x, verbose=0).argmax(1) == y))

  with clock.stage("4. frozen graph and labels"):
    classifier = model_lib.build_classifier(backbone, head)
    frozen = export_convert.serving_function(classifier,
                                         inference.FINAL_TENSOR_NAME)
    with open(os.path.join(work, "retrained_graph.pb"), "wb") as f:
      f.write(export_convert.frozen_graph_bytes(frozen))
    with open(os.path.join(work, "retrained_labels.txt"), "w") as f:
      f.write(inference.labels_text(source.categories))
  return clock, top1


def backbone_rates(backbone: keras.Model, image_size: int,
                   seconds: float = 3.0) -> tuple[float, float]:
  """Images/s of the backbone alone, one image per call and 100 per call:
  the bound on how much batching can gain on this machine."""
  forward = tf.function(lambda x: backbone(x, training=False),
                        reduce_retracing=True)
  rates = []
  for batch in (1, 100):
    x = tf.random.uniform((batch, image_size, image_size, 3), -1, 1)
    np.asarray(forward(x))
    count, start = 0, time.perf_counter()
    while time.perf_counter() - start < seconds:
      np.asarray(forward(x))
      count += batch
    rates.append(count / (time.perf_counter() - start))
  return rates[0], rates[1]


def main(argv: Sequence[str]) -> None:
  del argv
  data = common.data_config_from_flags()
  config = train_cli.train_config_from_flags()
  work = FLAGS.work_dir or tempfile.mkdtemp(prefix="bench_vs_jpeg_")
  os.makedirs(work, exist_ok=True)
  try:
    source = QuickDrawSource.open(data)
    named = model_lib.parse_architecture(config.architecture)
    weights = model_lib.resolve_weights(named, config.weights,
                                        config.model_dir or None)
    architecture = dataclasses.replace(named, image_size=data.image_size)
    drawings = sum(source.num_selected(c) for c in range(source.num_classes))
    print(f"{source.num_classes} categories, {drawings:,} drawings, "
          f"{config.architecture} at {data.image_size} px, "
          f"{os.cpu_count()} CPUs")

    backbone = model_lib.build_backbone(architecture, weights)
    one, batched = backbone_rates(backbone, data.image_size,
                                  FLAGS.rate_seconds)
    print(f"  backbone alone: {one:,.0f} images/s one per call, "
          f"{batched:,.0f} in batches of 100 ({batched / one:.1f}x)")
    print("  (a) old route: JPEGs, then retrain.py", flush=True)
    keras.utils.set_random_seed(data.seed)
    old, old_top1 = old_route(
        source, backbone, data.image_size, os.path.join(work, "old"),
        np.random.default_rng(data.seed))
    print(f"    {'total':<46} {old.total:8.1f} s, test top-1 {old_top1:.4f}")

    print("  (b) quickdraw-train, from empty caches", flush=True)
    out = os.path.join(work, "quickdraw")
    config = dataclasses.replace(
        config, output_dir=out, bottleneck_dir=os.path.join(work, "cache"),
        summaries_dir="", output_graph="", output_labels="", verbose=0)
    start = time.perf_counter()
    result = training.train_and_evaluate(data, config)
    report = export_flow.export_run(
        data, dataclasses.replace(export_cli.export_config_from_flags(out),
                                  android_assets_dir=""),
        classifier=result.classifier, source=result.source)
    new = time.perf_counter() - start
    exported = sorted(os.path.basename(a["path"]) for a in
                      report["artifacts"].values())
    print(f"    {'total (' + ', '.join(exported) + ')':<46} {new:8.1f} s, "
          f"test top-1 {result.report['top1']:.4f}")
    print(f"  quickdraw is {old.total / new:.1f}x faster end to end "
          "(target >= 5x)")
  finally:
    shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  common.run_app(main, "__main__")
