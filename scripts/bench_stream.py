"""Benchmarks streaming the full dataset: time to first batch and peak RSS.

  python scripts/bench_stream.py

Writes (once) all 345 official categories as sparse files of their official
sizes under --bench_dir (about 39 GB apparent, almost nothing on disk: the
rows read back as blank drawings, which is all this measures), then, in a
fresh process, opens them with --samples_per_class=0 (every drawing, about
50 million) and reads batches of the training split at 28x28:

  * seconds to open the source, to build the pipeline (which counts the
    training split, a million rows at a time, but builds no index: splits
    over input_pipeline.INDEX_LIMIT stream block by block), and to the first
    batch;
  * drawings/s over --seconds of streaming;
  * peak RSS (VmHWM).

Targets (issue 6): first batch within 10 s, peak RSS under 2 GB.
"""

from __future__ import annotations

import quickdraw.cli  # noqa: F401  (first: a quiet TensorFlow start)

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence

import numpy as np
from absl import app, flags

from quickdraw import categories as categories_lib
from quickdraw import npy_files
from quickdraw.testing import synthetic
from quickdraw.npy_files import PIXELS

FLAGS = flags.FLAGS
flags.DEFINE_string("bench_dir", "/tmp/quickdraw_bench_full",
                    "Where the sparse full-size files are written and kept.")
flags.DEFINE_integer("batch_size", 256, "Drawings per batch.")
flags.DEFINE_float("seconds", 10.0, "Seconds of streaming after the first "
                   "batch.")
flags.DEFINE_boolean("child", False, "Internal: run the measurement here.")


def write_sparse_files(folder: str) -> list[str]:
  """One sparse `<category>.npy` per official category, official row count."""
  os.makedirs(folder, exist_ok=True)
  records = categories_lib.resolve_categories(
      categories_lib.official_categories())
  for record in records:
    path = os.path.join(folder, record.filename)
    if os.path.exists(path):
      continue
    # The official files are .npy 1.0 with an 80-byte header.
    rows = (record.size - 80) // PIXELS
    tmp = os.path.join(folder, f".{record.name}.tmp.npy")
    array = np.lib.format.open_memmap(tmp, "w+", np.uint8, (rows, PIXELS))
    # A drawing where the blank-file check looks; the other rows stay a
    # hole (sparse: they read back as zeros without touching a disk).
    array[npy_files.blank_check_positions(rows)] = synthetic.make_drawings(
        0, 1)
    del array
    os.replace(tmp, path)
  return [r.name for r in records]


def peak_rss_mb() -> float:
  with open("/proc/self/status") as f:
    for line in f:
      if line.startswith("VmHWM:"):
        return int(line.split()[1]) / 1024
  return float("nan")


def child(names: list[str]) -> dict:
  from quickdraw import input_pipeline
  from quickdraw.config import DataConfig
  from quickdraw.data_source import QuickDrawSource
  start = time.perf_counter()
  source = QuickDrawSource.open(DataConfig(
      categories=tuple(names), data_dir=FLAGS.bench_dir, download=False,
      samples_per_class=0))
  opened = time.perf_counter() - start
  ds = input_pipeline.make_dataset(source, "train", FLAGS.batch_size,
                                   epochs=None, value_range=None)
  built = time.perf_counter() - start
  it = iter(ds)
  next(it)
  first = time.perf_counter() - start
  count, t = 0, time.perf_counter()
  while time.perf_counter() - t < FLAGS.seconds:
    count += int(next(it)[1].shape[0])
  rate = count / (time.perf_counter() - t)
  total = sum(len(f) for f in source.files)
  return {"drawings": total, "opened_s": opened, "built_s": built,
          "first_batch_s": first, "rate": rate, "peak_rss_mb": peak_rss_mb()}


def main(argv: Sequence[str]) -> None:
  del argv
  names = write_sparse_files(FLAGS.bench_dir)
  if FLAGS.child:
    print(json.dumps(child(names)))
    return
  out = subprocess.run(
      [sys.executable, __file__, "--child", f"--bench_dir={FLAGS.bench_dir}",
       f"--batch_size={FLAGS.batch_size}", f"--seconds={FLAGS.seconds}"],
      check=True, capture_output=True, text=True).stdout
  r = json.loads(out.strip().splitlines()[-1])
  print(f"{len(names)} categories, {r['drawings']:,} drawings (sparse files "
        f"under {FLAGS.bench_dir}), --samples_per_class=0, batch "
        f"{FLAGS.batch_size}, {os.cpu_count()} CPUs")
  print(f"  source opened:        {r['opened_s']:8.1f} s")
  print(f"  pipeline built:       {r['built_s']:8.1f} s")
  print(f"  first batch:          {r['first_batch_s']:8.1f} s (target <= 10)")
  print(f"  streaming:            {r['rate']:8,.0f} drawings/s")
  print(f"  peak RSS:             {r['peak_rss_mb']:8.0f} MB (target < 2048)")


if __name__ == "__main__":
  app.run(main)
