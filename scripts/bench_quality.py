"""The quality gate: fixed reference runs, scored as the app sees them,
against scripts/quality_baseline.json.

  python scripts/bench_quality.py --data_dir=../shared/data/quickdraw \
      --weights_dir=../shared/data/weights

Each reference run (--runs; `quality.REFERENCE_RUNS`) is a quickdraw-train
command with --train_flags appended, trained and exported for Android
under --output_dir/<run>. Its app model is then scored through MediaPipe
(`quality.score_run`): npy test top-1; top-1 on pen-drawn canvases of its
test drawings, overall and per pen (1.5%, 3%, 6% of the canvas), theme
(white, dark, grey) and place (centred, off-centre, small); junk and
doodles of unseen categories under the model's threshold; calibration
error; int8 loss. Every figure is compared with the baseline, and the
command exits 1 naming each figure that fell by more than its noise band.

  --score=DIR          scores an existing run instead (no training, no gate
                       unless --compare_as names a reference run)
  --write_baseline     trains each run at every --seeds training seed
                       (--train_seed; the drawings and split stay the
                       same) and writes the baseline: each figure's mean,
                       its band (`quality.band_of`) and the per-seed values

Needs the test extra (pip install -e ".[test]") for mediapipe and
scikit-image. Ends with a non-zero status when a figure fell.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence

import quickdraw.cli  # noqa: F401  (first: a quiet TensorFlow start)

from absl import flags

from quickdraw import atomic_files, quality
from quickdraw.cli import common
from quickdraw.errors import QuickDrawError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BASELINE = os.path.join(REPO, "scripts", "quality_baseline.json")

FLAGS = flags.FLAGS
# Flags other scripts define too are defined once: the tests import
# scripts into one process.
if "weights_dir" not in FLAGS:
  common.DEFINE_path("weights_dir", None, "Folder of Keras' no-top weight "
                     "files (the reference runs' backbones').")
flags.DEFINE_list("runs", list(quality.DEFAULT_RUNS),
                  "Reference runs to train and score: "
                  f"{', '.join(quality.REFERENCE_RUNS)}. 'accurate' "
                  "fine-tunes: about 20 minutes on 2 cores.")
if "train_flags" not in FLAGS:
  flags.DEFINE_string("train_flags", "", "Extra quickdraw-train flags for "
                      "every run, space-separated (e.g. "
                      "--train_flags=--learning_rate=0.00001).")
if "seeds" not in FLAGS:
  flags.DEFINE_list("seeds", ["0"], "--train_seed of each run (the "
                    "drawings and split stay the same); the gate compares "
                    "each seed's figures.")
common.DEFINE_path("baseline", BASELINE, "The baseline to compare with, "
                    "or to write.")
flags.DEFINE_boolean("write_baseline", False, "Write the baseline from "
                     "these runs (at every --seeds seed) instead of "
                     "comparing.")
common.DEFINE_path("score", None, "Score this trained and exported run "
                    "folder instead of training.")
flags.DEFINE_string("compare_as", None, "With --score: the reference run "
                    "whose baseline to compare with.")
flags.DEFINE_boolean("retrain", False, "Train again even where a run "
                     "folder already holds a finished run of the same "
                     "command.")


def train(name: str, seed: int) -> str:
  """Trains and exports a reference run; returns its folder."""
  run = quality.REFERENCE_RUNS[name]
  out = os.path.abspath(os.path.join(FLAGS.output_dir, f"{name}_seed{seed}"))
  args = quality.train_command(
      run, data_dir=os.path.expanduser(FLAGS.data_dir),
      weights_dir=os.path.expanduser(FLAGS.weights_dir), output_dir=out,
      seed=seed, extra=FLAGS.train_flags.split())
  done = os.path.join(out, "quality_command.json")
  if not FLAGS.retrain and os.path.exists(done):
    with open(done) as f:
      if json.load(f) == args:
        print(f"{name} (seed {seed}): trained already in {out}")
        return out
  print(f"{name} (seed {seed}): quickdraw-train {' '.join(args)}", flush=True)
  start = time.time()
  subprocess.run([sys.executable, "-m", "quickdraw.cli.train", *args,
                  "--verbosity=-1"], check=True, stdout=subprocess.DEVNULL)
  atomic_files.write_text(done, json.dumps(args))
  print(f"{name} (seed {seed}): trained and exported in "
        f"{time.time() - start:.0f} s", flush=True)
  return out


def main(argv: Sequence[str]) -> None:
  del argv
  baseline = {}
  if os.path.exists(FLAGS.baseline):
    with open(FLAGS.baseline) as f:
      baseline = json.load(f)
  if FLAGS.score:
    settings = {}
    if FLAGS.compare_as:  # scored as that reference run is
      if FLAGS.compare_as not in quality.REFERENCE_RUNS:
        raise QuickDrawError(f"--compare_as={FLAGS.compare_as} is no "
                             "reference run; use one of "
                             f"{', '.join(quality.REFERENCE_RUNS)}")
      run = quality.REFERENCE_RUNS[FLAGS.compare_as]
      settings = dict(canvas_drawings=run.canvases,
                      others_per_category=run.others,
                      canvas_side=run.canvas_side)
    figures = quality.score_run(os.path.expanduser(FLAGS.score), **settings)
    print(json.dumps(figures, indent=1))
    if FLAGS.compare_as:
      rows = quality.compare(figures, baseline["runs"][FLAGS.compare_as])
      print(quality.format_comparison(FLAGS.compare_as, rows))
      fell = [row[0] for row in rows if row[-1]]
      if fell:
        print(f"Quality gate FAILED: {FLAGS.score} as {FLAGS.compare_as}: "
              f"{', '.join(fell)} fell", file=sys.stderr)
        sys.exit(1)
    return
  if not FLAGS.weights_dir:
    raise QuickDrawError("pass --weights_dir, the folder of Keras' no-top "
                         "weight files")
  unknown = set(FLAGS.runs) - set(quality.REFERENCE_RUNS)
  if unknown:
    raise QuickDrawError(f"--runs names {', '.join(sorted(unknown))}; use "
                         f"{', '.join(quality.REFERENCE_RUNS)}")
  seeds = [int(s) for s in FLAGS.seeds]
  fell = []
  measured = {}
  for name in FLAGS.runs:
    per_seed = []
    for seed in seeds:
      run = quality.REFERENCE_RUNS[name]
      per_seed.append(quality.score_run(train(name, seed), run.canvases,
                                        run.others,
                                        canvas_side=run.canvas_side))
      print(f"{name} (seed {seed}): " + json.dumps(
          {k: round(v, 4) for k, v in per_seed[-1].items()}), flush=True)
      if not FLAGS.write_baseline and name in baseline.get("runs", {}):
        rows = quality.compare(per_seed[-1], baseline["runs"][name])
        print(quality.format_comparison(f"{name} seed {seed}", rows))
        fell += [f"{name} (seed {seed}): {row[0]} {row[3]:.4f} against "
                 f"{row[1]:.4f} (band {row[2]:.4f})" for row in rows
                 if row[-1]]
      elif not FLAGS.write_baseline:
        print(f"{name}: no baseline in {FLAGS.baseline}")
    measured[name] = quality.baseline_entry(per_seed)
  if FLAGS.write_baseline:
    baseline.setdefault("runs", {}).update(measured)
    baseline["about"] = (
        "Each figure's mean over the seeds, its band (max of a floor and "
        f"{quality.BAND_SPREAD} x the seeds' spread), and the per-seed "
        "values. Written by scripts/bench_quality.py --write_baseline; "
        "change it only on purpose, in a commit that says why.")
    atomic_files.write_text(FLAGS.baseline,
                            json.dumps(baseline, indent=1) + "\n")
    print(f"Wrote {FLAGS.baseline}")
  if fell:
    print("Quality gate FAILED: " + "; ".join(fell), file=sys.stderr)
    sys.exit(1)
  if not FLAGS.write_baseline:
    print("Quality gate passed: no figure fell beyond its band.")


if __name__ == "__main__":
  # --output_dir (quickdraw's): the runs go in a folder each, beside a
  # shared bottlenecks/ folder. Only here: the tests import scripts into one
  # process.
  FLAGS.set_default("output_dir", os.path.join("runs", "quality"))
  common.run_app(main, "__main__")
