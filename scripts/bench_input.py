"""Benchmarks the input pipeline: throughput and peak memory.

  python scripts/bench_input.py

Prints, from one run:
  * drawings/s delivered at 28x28 uint8 and at SxSx3 float (S=--image_size),
    over the real files in ../shared/data/quickdraw when present, else over
    generated ones;
  * peak RSS while streaming one epoch at 28x28 of a small dataset
    (10 categories x 1,000 rows) and of a large one (100 x 100,000 rows,
    about 8 GB of generated files under --bench_dir, kept for later runs).
    Each is measured in a fresh child process, since a process's peak RSS
    never goes down.

Targets (issue 2): >= 100,000 drawings/s at 28x28, >= 5,000 at 224x224x3,
large-dataset peak RSS within 300 MB of the small one's.
"""

from __future__ import annotations

import quickdraw.cli  # noqa: F401  (first: a quiet TensorFlow start)

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence

import tensorflow as tf
from absl import app, flags

from quickdraw import categories as categories_lib
from quickdraw import input_pipeline, preprocessing
from quickdraw.testing import synthetic
from quickdraw import model as model_lib
from quickdraw.config import DataConfig
from quickdraw.data_source import QuickDrawSource

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SHARED = os.path.join(REPO, "..", "shared", "data", "quickdraw")

flags.DEFINE_string("real_data_dir", SHARED,
                    "Real category files for the throughput figures.")
flags.DEFINE_string("bench_dir", "/tmp/quickdraw_bench",
                    "Where generated datasets are written and kept.")
flags.DEFINE_integer("batch_size", 256, "Drawings per batch.")
flags.DEFINE_integer("image_size", 224, "Side of the upsampled images.")
flags.DEFINE_float("seconds", 10.0, "Timed seconds per throughput figure.")
flags.DEFINE_boolean("large", True,
                     "Include the ~8 GB dataset in the memory figures.")
flags.DEFINE_enum("rss_child", None, ["small", "large"],
                  "Internal: stream one epoch of this dataset and print its "
                  "peak RSS as JSON.")
FLAGS = flags.FLAGS

DATASETS = {"small": (10, 1_000), "large": (100, 100_000)}


def generated_dataset(kind: str) -> tuple[str, tuple[str, ...]]:
  """Writes (once) and returns the folder and names of a generated dataset."""
  num, rows = DATASETS[kind]
  names = tuple(list(categories_lib.official_categories())[:num])
  folder = os.path.join(FLAGS.bench_dir, f"{kind}_{num}x{rows}")
  expected = rows * 784
  if not all(os.path.exists(os.path.join(folder, f"{n}.npy")) and
             os.path.getsize(os.path.join(folder, f"{n}.npy")) > expected
             for n in names):
    print(f"Generating {num} x {rows:,} drawings in {folder} ...", flush=True)
    synthetic.write_category_files(folder, names, rows, variants=512)
  return folder, names


def throughput(source: QuickDrawSource, image_size: int | None,
               device_size: int | None = None) -> float:
  """Drawings/s delivered; with `device_size`, 28x28 batches that a
  DrawingsToImages layer then upsamples (as on an accelerator; here the
  CPU does that work too)."""
  ds = input_pipeline.make_dataset(source, "train", FLAGS.batch_size,
                                   image_size=image_size, epochs=None,
                                   value_range=preprocessing.SIGNED_RANGE)
  if device_size:
    layer = model_lib.DrawingsToImages(
        device_size, value_range=preprocessing.SIGNED_RANGE)
    upsample = tf.function(lambda x: layer(x))
    it = ((upsample(x), y) for x, y in ds)
  else:
    it = iter(ds)
  for _ in range(20):  # warm up: tracing, autotuning, page cache
    next(it)
  count, start = 0, time.perf_counter()
  while time.perf_counter() - start < FLAGS.seconds:
    count += int(next(it)[1].shape[0])
  return count / (time.perf_counter() - start)


def peak_rss_mb() -> float:
  """This process's peak RSS (VmHWM).

  Not getrusage's ru_maxrss: across fork and exec it keeps the parent's
  peak, so a child of a TensorFlow process would start at the parent's size.
  """
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 1024
  raise RuntimeError("no VmHWM in /proc/self/status (Linux only)")


def rss_child(kind: str) -> None:
  folder, names = generated_dataset(kind)
  source = QuickDrawSource.open(DataConfig(
      categories=names, data_dir=folder, download=False, samples_per_class=0))
  before = peak_rss_mb()
  count, start = 0, time.perf_counter()
  for _, labels in input_pipeline.make_dataset(source, "train",
                                               FLAGS.batch_size,
                                               value_range=None):
    count += int(labels.shape[0])
  print(json.dumps({"drawings": count, "seconds": time.perf_counter() - start,
                    "rss_before_mb": before, "peak_rss_mb": peak_rss_mb()}))


def measure_rss(kind: str) -> dict[str, float]:
  result = subprocess.run(
      [sys.executable, __file__, f"--rss_child={kind}",
       f"--bench_dir={FLAGS.bench_dir}", f"--batch_size={FLAGS.batch_size}"],
      capture_output=True, text=True, check=True)
  return json.loads(result.stdout.strip().splitlines()[-1])


def main(argv: Sequence[str]) -> None:
  del argv
  if FLAGS.rss_child:
    rss_child(FLAGS.rss_child)
    return
  if os.path.isdir(FLAGS.real_data_dir):
    names = tuple(sorted(os.path.splitext(f)[0]
                         for f in os.listdir(FLAGS.real_data_dir)
                         if f.endswith(".npy")))
    folder, what = FLAGS.real_data_dir, "real"
  else:
    folder, names = generated_dataset("small")
    what = "generated"
  source = QuickDrawSource.open(DataConfig(
      categories=names, data_dir=folder, download=False, samples_per_class=0))
  train = len(source.index("train"))
  print(f"Throughput on {what} data: {len(names)} categories, {train:,} "
        f"training drawings, batch {FLAGS.batch_size}, {os.cpu_count()} CPUs")
  small_rate = throughput(source, None)
  print(f"  28x28x1 uint8:        {small_rate:12,.0f} drawings/s "
        "(target >= 100,000)", flush=True)
  s = FLAGS.image_size
  big_rate = throughput(source, s)
  print(f"  {s}x{s}x3 float32:  {big_rate:12,.0f} drawings/s "
        "(target >= 5,000; upsampled on the host, by tf.data)", flush=True)
  device_rate = throughput(source, None, device_size=s)
  print(f"  {s}x{s}x3 float32:  {device_rate:12,.0f} drawings/s "
        "(28x28 delivered, upsampled by the model's DrawingsToImages layer; "
        "here on the same CPU)", flush=True)

  print("Peak RSS streaming one epoch at 28x28 (fresh process each):")
  results = {}
  for kind in ("small", "large") if FLAGS.large else ("small",):
    r = results[kind] = measure_rss(kind)
    num, rows = DATASETS[kind]
    print(f"  {kind:5s} {num:3d} x {rows:7,d} rows: peak {r['peak_rss_mb']:7.0f}"
          f" MB ({r['drawings']:,} drawings in {r['seconds']:.1f} s, "
          f"{r['drawings'] / r['seconds']:,.0f}/s; {r['rss_before_mb']:.0f} MB "
          "before streaming)", flush=True)
  if "large" in results:
    delta = results["large"]["peak_rss_mb"] - results["small"]["peak_rss_mb"]
    print(f"  large - small: {delta:+.0f} MB (target <= 300 MB)")


if __name__ == "__main__":
  app.run(main)
