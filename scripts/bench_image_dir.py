"""The seed's retrain.py command on the old converter's JPEG folders, against
the npy route on the same drawings.

  python scripts/bench_image_dir.py --data_dir=../shared/data/quickdraw \\
      --weights_dir=../shared/data/weights

1. Output/<category>/ gets --per_class JPEGs per category, made as the old
   converter made them: each npy row as a 28x28 grey picture (dark ink on
   white with --invert), saved by Pillow at its default JPEG quality.
2. The seed's command runs as written (`python -m quickdraw.cli.train
   --image_dir=Output --architecture=mobilenet_1.0_224
   --how_many_training_steps=7000 --bottleneck_dir=...
   --output_graph=retrained_graph.pb --output_labels=retrained_labels.txt`),
   with --architecture and --weights appended where the machine lacks
   mobilenet_1.0_224's ImageNet weights (this one does).
3. The npy route: the same command with the same rows as `<category>.npy`
   files, --data_dir and --categories in place of --image_dir.
4. Both routes' retrained_graph.pb answer the same --held_out drawings per
   category (rows after the first --per_class, which neither route saw).

Prints each route's held-out top-1 (the issue's target: within 1 point) and
seconds. Work files go under --bench_dir (a temporary folder by default,
deleted at the end).
"""

from __future__ import annotations

import quickdraw.cli  # noqa: F401  (first: a quiet TensorFlow start)

import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence

import numpy as np
from absl import app, flags
from PIL import Image

from quickdraw import backbones, inference, npy_files

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", "../shared/data/quickdraw",
                    "Folder of official <category>.npy files.")
flags.DEFINE_list("categories", ["airplane", "alarm clock", "apple", "banana",
                                 "bicycle", "cat", "dog", "fish", "house",
                                 "star"],
                  "Categories (configs/retrain_compat.flags' ten).")
flags.DEFINE_integer("per_class", 1000, "JPEGs per category (the old "
                     "converter's ~1,000).")
flags.DEFINE_integer("held_out", 500, "Drawings per category, after the "
                     "first --per_class, that both .pb files answer.")
flags.DEFINE_boolean("invert", True, "Dark ink on white, as the old "
                     "converter's JPEGs.")
flags.DEFINE_string("architecture", "mobilenet_0.25_224",
                    "Appended to the seed's command where its "
                    "mobilenet_1.0_224 weights are not at hand.")
if "weights_dir" not in FLAGS:  # shared with other scripts in tests
  flags.DEFINE_string("weights_dir", "", "Folder of Keras' no-top .h5 "
                      "weights; empty downloads ImageNet weights.")
if "seeds" not in FLAGS:  # shared with other scripts in tests
  flags.DEFINE_list("seeds", ["0"], "--seed of each pair of runs (the npy "
                    "route's split and both routes' training; the folders' "
                    "split is their paths').")
flags.DEFINE_string("bench_dir", "", "Work folder; empty for a temporary "
                    "one, deleted at the end.")

SEED_COMMAND = ["--image_dir=Output", "--architecture=mobilenet_1.0_224",
                "--how_many_training_steps=7000",
                "--bottleneck_dir=/tmp/bottleneck",
                "--output_graph=retrained_graph.pb",
                "--output_labels=retrained_labels.txt"]

def write_old_converter_output(folder: str, rows_by_category: dict) -> None:
  for category, rows in rows_by_category.items():
    os.makedirs(os.path.join(folder, category), exist_ok=True)
    for i, row in enumerate(rows):
      pixels = row.reshape(28, 28)
      Image.fromarray(255 - pixels if FLAGS.invert else pixels).save(
          os.path.join(folder, category, f"{category}_{i}.jpg"))


def run_route(work: str, extra: Sequence[str]) -> float:
  """Runs the seed's command in `work` with `extra` appended; seconds."""
  weights = (os.path.join(os.path.abspath(FLAGS.weights_dir),
                          backbones.parse_architecture(
                              FLAGS.architecture).weights_filename)
             if FLAGS.weights_dir else "imagenet")
  command = [sys.executable, "-m", "quickdraw.cli.train", *SEED_COMMAND,
             f"--bottleneck_dir={os.path.join(work, 'bottlenecks')}",
             f"--architecture={FLAGS.architecture}", f"--weights={weights}",
             "--nodownload", *extra]
  start = time.perf_counter()
  subprocess.run(command, cwd=work, check=True, stdout=subprocess.DEVNULL)
  return time.perf_counter() - start


def main(argv: Sequence[str]) -> None:
  del argv
  work = FLAGS.bench_dir or tempfile.mkdtemp(prefix="bench_image_dir-")
  os.makedirs(work, exist_ok=True)
  data_dir = os.path.abspath(os.path.expanduser(FLAGS.data_dir))
  rows, held_out = {}, {}
  for category in FLAGS.categories:
    drawings = npy_files.open_drawings(
        npy_files.find_category_file(data_dir, category), category).drawings
    rows[category] = np.asarray(drawings[:FLAGS.per_class])
    held_out[category] = np.asarray(
        drawings[FLAGS.per_class:FLAGS.per_class + FLAGS.held_out])
  try:
    start = time.perf_counter()
    write_old_converter_output(os.path.join(work, "Output"), rows)
    print(f"Wrote {FLAGS.per_class} JPEGs a category for "
          f"{len(rows)} categories in {time.perf_counter() - start:.1f} s")
    npy = os.path.join(work, "npy")
    os.makedirs(npy, exist_ok=True)
    for category, r in rows.items():
      np.save(os.path.join(npy, f"{category}.npy"), r)
    results = {}
    for seed in FLAGS.seeds:
      for route, extra in (
          ("image_dir (the seed's command)", ["--output_dir=jpeg_route"]),
          ("npy (--data_dir, --categories)",
           ["--image_dir=", f"--data_dir={npy}", "--samples_per_class=0",
            f"--categories={','.join(FLAGS.categories)}",
            "--output_dir=npy_route"])):
        seconds = run_route(work, [*extra, f"--seed={seed}"])
        labels = inference.read_labels(os.path.join(work,
                                                    "retrained_labels.txt"))
        graph = inference.load_predictor(os.path.join(work,
                                                      "retrained_graph.pb"))
        right = total = 0
        for category, drawings in held_out.items():
          answers = inference.predict_drawings(graph, drawings).argmax(1)
          right += int(np.sum(answers == labels.index(category)))
          total += len(drawings)
        results[route, seed] = (right / total, seconds)
    print(f"{len(held_out)} categories, {FLAGS.per_class} drawings each to "
          f"train, {FLAGS.held_out} each held out from both; "
          f"{FLAGS.architecture}:")
    print(f"  {'route':34s} {'seed':>4s} {'held-out top-1':>14s} "
          f"{'seconds':>8s}")
    for (route, seed), (top1, seconds) in results.items():
      print(f"  {route:34s} {seed:>4s} {top1:14.4f} {seconds:8.0f}")
    routes = sorted({route for route, _ in results})
    mean = {r: np.mean([results[r, s][0] for s in FLAGS.seeds])
            for r in routes}
    print(f"Mean over seeds {','.join(FLAGS.seeds)}: " + ", ".join(
        f"{r} {mean[r]:.4f}" for r in routes))
    print(f"Difference (image_dir - npy): "
          f"{100 * (mean[routes[0]] - mean[routes[1]]):+.2f} points "
          "(target: within 1)")
  finally:
    if not FLAGS.bench_dir:
      shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  app.run(main)
