"""Few-shot: your own classes as folders of a few canvases, beside QuickDraw's.

  python scripts/bench_few_shot.py --data_dir=../shared/data/quickdraw \\
      --weights_dir=../shared/data/weights

The --custom categories (QuickDraw's, held out from the run's categories)
play a user's own classes: --sizes canvases of each, drawn with a pen as
app canvases (`canvases.pen_suite`: three pens, themes and places), saved as
PNG class folders and given as --image_dir beside the other categories of
--data_dir. One run per folder size and one without folders (the
baseline), each a frozen head on --architecture, the defaults otherwise
(with --class_weight=balanced, which a few pictures beside hundreds of
drawings call for).

Each run's app model (the canvas .tflite, run by LiteRT as the app runs it)
then answers --test_canvases pen canvases of each custom class (drawings
that no folder held) and of each QuickDraw category's test drawings.
Prints per folder size: each custom class's top-1, and the QuickDraw
categories' top-1 and its change from the baseline.
"""

from __future__ import annotations

import quickdraw.cli  # noqa: F401  (first: a quiet TensorFlow start)

import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence

import numpy as np
from absl import app, flags
from PIL import Image

from quickdraw import (backbones, canvases, data_source, inference, npy_files,
                       run_files)
from quickdraw.data_source import QuickDrawSource
from quickdraw.splits import Split

FLAGS = flags.FLAGS
flags.DEFINE_string("data_dir", "../shared/data/quickdraw",
                    "Folder of official <category>.npy files; every one but "
                    "--custom is a run category.")
flags.DEFINE_list("custom", ["crown", "skull"],
                  "Categories given as class folders of canvases instead.")
flags.DEFINE_list("sizes", ["10", "20", "50", "200"],
                  "Canvases per custom class folder, one run each.")
flags.DEFINE_integer("samples_per_class", 500,
                     "Drawings per QuickDraw category.")
flags.DEFINE_integer("test_canvases", 200,
                     "Pen canvases per class that each run's app model "
                     "answers.")
flags.DEFINE_integer("canvas", 256, "Canvas side.")
flags.DEFINE_string("architecture", "mobilenet_v2_0.5_224", "The backbone.")
if "weights_dir" not in FLAGS:  # shared with other scripts in tests
  flags.DEFINE_string("weights_dir", "", "Folder of Keras' no-top .h5 "
                      "weights; empty downloads ImageNet weights.")
flags.DEFINE_string("bench_dir", "", "Work folder; empty for a temporary "
                    "one, deleted at the end.")


def train(work: str, name: str, categories: Sequence[str],
          image_dir: str) -> str:
  """One quickdraw-train run in `work`; its output folder."""
  weights = (os.path.join(os.path.abspath(FLAGS.weights_dir),
                          backbones.parse_architecture(
                              FLAGS.architecture).weights_filename)
             if FLAGS.weights_dir else "imagenet")
  out = os.path.join(work, name)
  subprocess.run(
      [sys.executable, "-m", "quickdraw.cli.train",
       f"--data_dir={os.path.abspath(FLAGS.data_dir)}", "--nodownload",
       f"--categories={','.join(categories)}", f"--image_dir={image_dir}",
       f"--samples_per_class={FLAGS.samples_per_class}",
       f"--architecture={FLAGS.architecture}", f"--weights={weights}",
       "--class_weight=balanced", "--other_categories=none",
       "--min_images_per_class=1",
       f"--bottleneck_dir={os.path.join(work, 'bottlenecks')}",
       f"--output_dir={out}"], check=True, stdout=subprocess.DEVNULL)
  return out


def top1(model: str, pictures: np.ndarray, label: int) -> float:
  """Share of `pictures` the canvas model answers with `label`."""
  predictor = inference.load_predictor(model)
  _, probabilities = inference.classify_pictures(predictor, list(pictures))
  return float(np.mean(probabilities.argmax(1) == label))


def main(argv: Sequence[str]) -> None:
  del argv
  work = FLAGS.bench_dir or tempfile.mkdtemp(prefix="bench_few_shot-")
  os.makedirs(work, exist_ok=True)
  data_dir = os.path.abspath(os.path.expanduser(FLAGS.data_dir))
  known = sorted(os.path.splitext(f)[0] for f in os.listdir(data_dir)
                 if f.endswith(".npy")
                 and os.path.splitext(f)[0] not in FLAGS.custom)
  sizes = [int(s) for s in FLAGS.sizes]
  folder_canvases, test_canvases = {}, {}
  for i, category in enumerate(FLAGS.custom):
    drawings = npy_files.open_drawings(
        npy_files.find_category_file(data_dir, category), category).drawings
    folder_canvases[category] = canvases.pen_suite(
        np.asarray(drawings[:max(sizes)]), FLAGS.canvas, seed=i)[0]
    test_canvases[category] = canvases.pen_suite(
        np.asarray(drawings[-FLAGS.test_canvases:]), FLAGS.canvas,
        seed=100 + i)[0]
  try:
    rows = []
    baseline = None
    for size in [0, *sizes]:
      image_dir = ""
      if size:
        image_dir = os.path.join(work, f"folders_{size}")
        for category, pictures in folder_canvases.items():
          os.makedirs(os.path.join(image_dir, category), exist_ok=True)
          for j, picture in enumerate(pictures[:size]):
            Image.fromarray(picture).save(
                os.path.join(image_dir, category, f"{j:03d}.png"))
      out = train(work, f"run_{size}", known, image_dir)
      model = os.path.join(out, "model_canvas.tflite")
      if baseline is None:  # the same QuickDraw test canvases every run
        source = QuickDrawSource.open(run_files.read_run(out)[1])
        drawings, labels = data_source.drawings_from_split(
            source, Split.TEST, FLAGS.test_canvases * len(known))
        known_canvases = canvases.pen_suite(drawings, FLAGS.canvas,
                                            seed=7)[0]
      predictor = inference.load_predictor(model)
      _, probabilities = inference.classify_pictures(predictor,
                                                     list(known_canvases))
      known_top1 = float(np.mean(probabilities.argmax(1) == labels))
      if baseline is None:
        baseline = known_top1
      labels_of_run = inference.read_labels(
          os.path.join(out, "retrained_labels.txt"))
      custom = {c: top1(model, test_canvases[c], labels_of_run.index(c))
                for c in FLAGS.custom if c in labels_of_run}
      with open(os.path.join(out, "evaluation.json")) as f:
        test = json.load(f)["top1"]
      rows.append((size, custom, known_top1, known_top1 - baseline, test))
      print(f"folder size {size}: custom {custom}, QuickDraw canvases "
            f"{known_top1:.4f}", flush=True)
    print(f"\n{len(known)} QuickDraw categories x {FLAGS.samples_per_class}"
          f" drawings, {FLAGS.architecture} frozen; custom classes "
          f"{', '.join(FLAGS.custom)} as folders of pen canvases; top-1 of "
          f"the app's canvas model on {FLAGS.test_canvases} pen canvases "
          "per class no folder held:")
    print("| canvases per custom class | "
          + " | ".join(FLAGS.custom)
          + " | QuickDraw categories | change | run's test top-1 |")
    print("|" + " --- |" * (len(FLAGS.custom) + 4))
    for size, custom, known_top1, change, test in rows:
      cells = [f"{custom[c]:.3f}" if c in custom else "-"
               for c in FLAGS.custom]
      print(f"| {size or 'none (baseline)'} | " + " | ".join(cells)
            + f" | {known_top1:.4f} | {100 * change:+.1f} pts | {test:.4f} |")
  finally:
    if not FLAGS.bench_dir:
      shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
  app.run(main)
