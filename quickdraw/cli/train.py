"""quickdraw-train: train a doodle classifier on QuickDraw categories.

Trains a new head on a frozen ImageNet MobileNet from cached bottleneck
features (optionally fine-tuning the backbone's top layers afterwards),
evaluates it on the held-out test split, and writes to --output_dir:

  model.keras              the classifier (images in the backbone's input
                           range -> softmax), calibrated by the export
  retrained_labels.txt     one category per line, in output order
  evaluation.json          test top-1, top-3 and per-class accuracy
  confusion_matrix.json/.png, misclassified.png, training_inputs.png
  run.json                 the run's settings, and where the app's files went
  logs/                    TensorBoard: losses, accuracy, the pictures
and then exports (--noexport skips it; see quickdraw-export):
  retrained_graph.pb       the frozen graph (retrain.py's)
  model.tflite, model_canvas.tflite (+ _<mode> variants of --quantize)
  model_info.json, export_report.json
  <--android_assets_dir>/  model.tflite (the app's canvas model, labels
                           inside), labels.txt, model_info.json

A run that is interrupted resumes at its last finished epoch when started
again with the same flags. retrain.py's flags keep their meaning
(--architecture, --bottleneck_dir, --how_many_training_steps, --model_dir,
--summaries_dir, --output_graph, --output_labels, --train_batch_size,
--learning_rate, --image_dir), with --data_dir and --categories for
QuickDraw's own files.

Examples:
  quickdraw-train --flagfile=configs/quickstart.flags
  quickdraw-train --flagfile=configs/retrain_compat.flags
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from absl import flags, logging

from quickdraw import config as config_lib
from quickdraw import distribute, evaluation, run_files, training
from quickdraw.cli import common
from quickdraw.cli import export as export_cli
from quickdraw.errors import QuickDrawError
from quickdraw.export import checks, flow

FLAGS = flags.FLAGS
flags.adopt_module_key_flags(common)  # so --help lists the data flags
flags.adopt_module_key_flags(export_cli)  # and the export flags
_DEFAULTS = config_lib.TrainConfig()

common.DEFINE_path(
    "weights", _DEFAULTS.weights,
    "Backbone weights: imagenet (downloaded once into --model_dir), none "
    "(random, for tests), or a path to the architecture's own Keras no-top "
    ".h5 file, e.g. mobilenet_1_0_224_tf_no_top.h5 for mobilenet_1.0_224. "
    "Keras trains each input size separately: a file named for another "
    "variant is refused.")
common.DEFINE_path(
    "model_dir", _DEFAULTS.model_dir,
    "Keras' cache folder for downloaded weights (they go in its models/); "
    "empty for ~/.keras.")
common.DEFINE_path(
    "bottleneck_dir", _DEFAULTS.bottleneck_dir,
    "Cache of each drawing's backbone features, reused by every run with the "
    "same backbone, image size and drawings.")
common.DEFINE_path(
    "summaries_dir", _DEFAULTS.summaries_dir,
    "TensorBoard logs; empty for <output_dir>/logs.")
flags.DEFINE_integer(
    "epochs", _DEFAULTS.epochs,
    "Passes over the training split for the head.", lower_bound=0)
flags.DEFINE_integer(
    "how_many_training_steps", _DEFAULTS.how_many_training_steps,
    "retrain.py's flag: if above 0, train the head for this many batches "
    "(rounded up to whole epochs) instead of --epochs.", lower_bound=0)
flags.DEFINE_integer(
    "train_batch_size", _DEFAULTS.train_batch_size,
    "Drawings per training batch.", lower_bound=1)
flags.DEFINE_float(
    "learning_rate", _DEFAULTS.learning_rate,
    "Adam's learning rate for the head, the initial one under "
    "--head_schedule=cosine (retrain.py used plain gradient descent at "
    "0.01; Adam at 0.001 converges in fewer steps).")
flags.DEFINE_enum(
    "head_schedule", _DEFAULTS.head_schedule, list(config_lib.HEAD_SCHEDULES),
    "The head's learning rate over its steps: constant; cosine (decaying to "
    "zero from the first step); or hold_cosine (held for two thirds of the "
    "steps, then a cosine to zero: converged in short runs, settled at the "
    "end; scripts/README.md has the measurements).")
flags.DEFINE_float(
    "label_smoothing", _DEFAULTS.label_smoothing,
    "Share of each training target spread over the other classes, for the "
    "head and fine-tuning; 0 for plain cross-entropy.")
flags.DEFINE_float(
    "dropout", _DEFAULTS.dropout, "Dropout rate before the softmax layer.")
flags.DEFINE_float(
    "junk_share", _DEFAULTS.junk_share,
    "Junk pictures (noise, gradients, textures, scribbles, text) added to "
    "each training batch as a share of its drawings, trained to score "
    "'none of these', so that the app's score threshold turns such pictures "
    "away; 0 for none.", lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_float(
    "other_share", _DEFAULTS.other_share,
    "Doodles of --other_categories (and their pen re-draws) added to each "
    "training batch as a share of its drawings, trained to score 'none of "
    "these', so that the app's model answers 'not sure' to kinds of drawing "
    "it does not know; 0 for none.",
    lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_float(
    "mix_share", _DEFAULTS.mix_share,
    "Mixes of two training drawings' features (30-70% of one) added to each "
    "training batch as a share of its drawings, trained to score 'none of "
    "these' when the two differ in class, so that doodles between the "
    "known kinds get 'not sure'; 0 for none.", lower_bound=0.0,
    upper_bound=1.0)
flags.DEFINE_float(
    "redraw_share", _DEFAULTS.redraw_share,
    "Training drawings drawn again as app canvases (a random pen, size, "
    "place and theme, read back by the app model's preprocessing) added to "
    "each training batch with their labels, as a share of its drawings, so "
    "that the app's model knows an app's strokes; 0 for none.",
    lower_bound=0.0, upper_bound=1.0)
flags.DEFINE_integer(
    "fine_tune_layers", _DEFAULTS.fine_tune_layers,
    "After the head, unfreeze this many of the backbone's top layers with "
    "trainable weights (convolutions and dense layers; batch norm stays "
    "frozen and in inference mode) and train on images; 0 skips "
    "fine-tuning; 100 unfreezes them all in every backbone offered (the "
    "most, EfficientNet B0, has 81).", lower_bound=0)
flags.DEFINE_float(
    "fine_tune_learning_rate", _DEFAULTS.fine_tune_learning_rate,
    "Adam's peak learning rate while fine-tuning: reached after a warm-up "
    "over the first 5% of the fine-tuning steps, then decaying to zero "
    "along a cosine.")
flags.DEFINE_integer(
    "fine_tune_epochs", _DEFAULTS.fine_tune_epochs,
    "Passes over the training images while fine-tuning.", lower_bound=0)
flags.DEFINE_boolean(
    "fine_tune_augment", _DEFAULTS.fine_tune_augment,
    "Random rotations, zooms and shifts of the training drawings while "
    "fine-tuning only: images flow through the backbone then anyway, so it "
    "costs little, and the head keeps the bottleneck cache.")
flags.DEFINE_boolean(
    "fine_tune_mixes", _DEFAULTS.fine_tune_mixes,
    "--mix_share's mixes while the backbone trains too (fine-tuning, "
    "--augment; one replica): the model mixes the features it makes, and "
    "only the head learns from them. More 'not sure' to unseen kinds, at "
    "some calibration error (scripts/README.md); configs/accurate.flags "
    "turns it on.")
flags.DEFINE_boolean(
    "augment", _DEFAULTS.augment,
    "Randomly rotate (+-10 degrees), zoom (+-10%) and shift (+-2 px of 28) "
    "training drawings. Like retrain.py's distortions it bypasses the "
    "bottleneck cache, so the head trains far slower.")
flags.DEFINE_enum(
    "upsample", _DEFAULTS.upsample, ["auto", "host", "device"],
    "Where drawings become the backbone's RGB input when images flow into "
    "the model (fine-tuning, --augment): host (tf.data), device (the "
    "model's first layer, on the GPU: 784 bytes a drawing cross to it "
    "instead of 600 KB), or auto (device when a GPU is present). Exported "
    "models keep the RGB input either way.")
flags.DEFINE_enum(
    "strategy", _DEFAULTS.strategy, list(distribute.STRATEGIES),
    "How to spread training over devices: default (one device), mirrored "
    "(every GPU of this machine), multi_worker (several machines, described "
    "by TF_CONFIG; run the same command on each) or tpu (see --tpu). "
    "--train_batch_size is the global batch, split over the replicas, and "
    "learning rates are used as given for it (see the README on scaling).")
flags.DEFINE_string(
    "tpu", _DEFAULTS.tpu,
    "With --strategy=tpu: the TPU's name or grpc:// address; empty on a TPU "
    "VM.")
flags.DEFINE_boolean(
    "mixed_precision", _DEFAULTS.mixed_precision,
    "Compute in float16 with float32 weights (Keras' mixed_float16): for GPUs "
    "with tensor cores; slower on CPUs. Saved and exported models are "
    "float32.")
flags.DEFINE_float(
    "min_accuracy", _DEFAULTS.min_accuracy,
    "Fail the run, saving and exporting nothing, if test top-1 accuracy is "
    "below this fraction.")
flags.DEFINE_enum(
    "class_weight", _DEFAULTS.class_weight, list(config_lib.CLASS_WEIGHTS),
    "balanced weighs each training drawing by N / (classes x its class's "
    "count), so that small classes (a folder of your own pictures beside "
    "QuickDraw's thousands) count as much as large ones; none weighs all "
    "alike. The run prints the counts per class.")
flags.DEFINE_integer(
    "train_seed", _DEFAULTS.train_seed,
    "Seeds training alone (initialisation, dropout, the head's batch order "
    "and junk); -1 uses --seed. The drawings and their split follow --seed.")
flags.DEFINE_boolean(
    "export", True,
    "After training, export the frozen graph, TFLite files and (with "
    "--android_assets_dir) the app's assets, checked against the Keras "
    "model. --noexport skips it (quickdraw-export can do it later).")


def train_config_from_flags() -> config_lib.TrainConfig:
  """The `TrainConfig` that the flags describe."""
  names = [f.name for f in dataclasses.fields(config_lib.TrainConfig)
           if f.name != "verbose"]
  return config_lib.TrainConfig(verbose=common.progress_verbosity(),
                              **{n: FLAGS[n].value for n in names})


def main(argv: Sequence[str]) -> None:
  if common.list_categories_or_check_args(argv):
    return
  config = train_config_from_flags()
  data = common.data_config_from_flags()
  export = None
  if FLAGS.export:
    try:  # an earlier run in the same folder: its app folder gets this one
      earlier = run_files.read_run(config.output_dir)[0]
    except QuickDrawError:
      earlier = None
    export = dataclasses.replace(
        export_cli.export_config_from_flags(
            config.output_dir, config.output_graph, config.output_labels),
        android_assets_dir=export_cli.android_assets_dir(earlier))
    # Now, not after an hour of training (as make_image_classifier does).
    flow.check_destinations(export)
  result = training.train_and_evaluate(data, config)
  logging.info("Epochs run: %s", ", ".join(
      f"{phase.replace('_', '-')} {count}"
      for phase, count in result.epochs_run.items()))
  if not result.chief:
    print(f"Worker done; the chief wrote {config.output_dir}; test top-1 "
          f"{result.report['top1']:.4f}")
    return
  print(evaluation.format_report(result.report))
  canvas = threshold = ""
  if export is not None:
    # Recorded first: a failed export's next try goes to the same folder.
    run_files.record_export(config.output_dir, export)
    report = flow.export_run(data, export, classifier=result.classifier,
                             source=result.source, others=result.others,
                             cache_dir=os.path.expanduser(
                                 config.bottleneck_dir),
                             bottlenecks=result.bottlenecks)
    if "android_assets" in report:
      run_files.record_export(config.output_dir, export, report)
    print(checks.format_report(report))
    canvas = (f"; on test drawings re-drawn as app canvases "
              f"{report['keras']['canvas_top1']:.4f}")
    calibrated = report.get("calibration")
    if calibrated:
      threshold = (f"\nThe app's score threshold (in the model's "
                   f"metadata): {calibrated['score_threshold']:.3f}; above "
                   f"it {calibrated['right_above_threshold']:.1%} of "
                   "held-out drawings answered right")
      if "unknown" in calibrated:
        threshold += (f", {calibrated['unknown']['refused']:.1%} of other "
                      "categories' doodles 'not sure'")
  print(f"Wrote {config.output_dir}/model.keras and "
        f"{config.path('output_labels')}; test top-1 "
        f"{result.report['top1']:.4f}{canvas}{threshold}")


def run() -> None:
  """The console_scripts entry point."""
  common.run_app(main, __name__)


if __name__ == "__main__":
  run()
