"""How often the app's model says "not sure": per backbone and category count.

  python scripts/bench_not_sure.py --data_dir=../shared/data/quickdraw \
      --weights_dir=../shared/data/weights

For each --architectures backbone and --counts number of categories, trains
quickdraw-train's defaults (frozen, 1,000 drawings a class; 3: apple,
banana, fish; 10: the gate's `retrain` ten; 22: every category at hand),
exported for Android, and scores the app's model through MediaPipe as the
quality gate does (`quality.score_run`): test drawings re-drawn with a pen
answered right at or above the model's own threshold, junk refused under
it, and doodles of the data folder's other categories refused under it.
Half of those other categories (every second name) are the run's
--other_categories, a quarter of which choose the threshold; the other
half no part of the run sees, and are the ones scored. With every
category trained there are none left to score ("-"). New drawings (rows
the run did not read) of the run's other categories are scored too:
those that trained ("exposure") and those that chose the threshold ("held
out"). With --all_others every other category at hand is the run's, as
every official category is by default online, where a user's doodle of
another QuickDraw kind is one the run has seen.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence

import quickdraw.cli  # noqa: F401  (first: a quiet TensorFlow start)

from absl import flags

from quickdraw import atomic_files, quality
from quickdraw.cli import common

FLAGS = flags.FLAGS
if "weights_dir" not in FLAGS:  # shared with other scripts in tests
  common.DEFINE_path("weights_dir", None, "Folder of Keras' no-top weight "
                     "files.")
flags.DEFINE_list("architectures", ["mobilenet_0.25_224",
                                    "mobilenet_v2_0.35_224",
                                    "mobilenet_v2_0.5_224"],
                  "Backbones, each with its weights in --weights_dir.")
flags.DEFINE_list("counts", ["3", "10", "22"], "Category counts.")
flags.DEFINE_bool("all_others", False, "Every other category at hand is "
                  "the run's --other_categories (none left unseen).")
flags.DEFINE_integer("seen_per_category", 100, "New drawings of each of the "
                     "run's other categories scored.")
if "train_flags" not in FLAGS:
  flags.DEFINE_string("train_flags", "", "Extra quickdraw-train flags, "
                      "space-separated.")


def main(argv: Sequence[str]) -> None:
  del argv
  available = sorted(n[:-4] for n in os.listdir(FLAGS.data_dir)
                     if n.endswith(".npy"))
  out = os.path.expanduser(FLAGS.output_dir)
  rows = [["backbone", "categories", "threshold", "canvas top-1",
           "right and sure", "junk refused", "unseen refused",
           "exposure refused", "held out refused", "unseen categories"]]
  for architecture in FLAGS.architectures:
    for count in (int(c) for c in FLAGS.counts):
      categories = quality.categories_of_size(count, available)
      rest = [c for c in available if c not in categories]
      others = rest if FLAGS.all_others else rest[::2]
      run = quality.ReferenceRun(
          "", architecture, categories,
          (f"--other_categories={','.join(others) or 'none'}",
           *FLAGS.train_flags.split()))
      folder = os.path.join(out, f"{architecture}_{count}"
                            + ("_all_others" if FLAGS.all_others else ""))
      if not os.path.exists(os.path.join(folder, "export_report.json")):
        command = [sys.executable, "-m", "quickdraw.cli.train",
                   *quality.train_command(
                       run, data_dir=FLAGS.data_dir,
                       weights_dir=FLAGS.weights_dir, output_dir=folder)]
        print(f"{architecture} x {count}: training", flush=True)
        subprocess.run(command, check=True, stdout=subprocess.DEVNULL)
      figures = quality.score_run(
          folder, canvas_side=512,
          seen_per_category=FLAGS.seen_per_category)
      with open(os.path.join(folder, "android_assets",
                             "model_info.json")) as f:
        threshold = json.load(f)["output"]["score_threshold"]
      atomic_files.write_text(os.path.join(folder, "not_sure.json"),
                              json.dumps(figures, indent=1))
      unseen = [c for c in rest if c not in others]
      rows.append([
          architecture, str(count), f"{threshold:.3f}",
          f"{figures['canvas_top1']:.4f}",
          f"{figures['canvas_right_and_sure']:.4f}",
          f"{figures['junk_refused']:.3f}",
          *(f"{figures[f]:.3f}" if f in figures else "-"
            for f in ("others_refused", "exposure_refused",
                      "held_out_refused")),
          ", ".join(unseen) or "-"])
      print(common.markdown_row(rows[-1]), flush=True)
  for r in rows:
    print(common.markdown_row(r))


if __name__ == "__main__":
  # Only here: the tests import scripts into one process.
  FLAGS.set_default("output_dir", os.path.join("runs", "not_sure"))
  common.run_app(main, "__main__")
