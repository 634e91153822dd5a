"""quickdraw-export: (re)export a trained run without training again.

Reads <output_dir>/model.keras and run.json (written by quickdraw-train),
and writes the frozen graph, labels, TFLite files and model_info.json, checks
each artifact against the Keras model on held-out test drawings (which is
why the data must still be readable), and writes the app's files into
--android_assets_dir, or else into the folder the run recorded (the last
export's; --noandroid_assets leaves it alone). Variants an earlier export
wrote and this one does not are removed. quickdraw-train runs the same
export at the end of training.

Examples:
  quickdraw-export --output_dir=runs/quickstart --quantize=int8 \\
      --android_assets_dir=../MyApp/app/src/main/assets
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

from absl import flags

from quickdraw import config as config_lib
from quickdraw import export, run_files
from quickdraw.cli import common
from quickdraw.errors import QuickDrawError
from quickdraw.export import checks, flow

FLAGS = flags.FLAGS
# Key flags: --output_dir and these. The data flags are not: the data
# settings come from the run's run.json.
flags.declare_key_flag("output_dir")
flags.declare_key_flag("final_tensor_name")
_DEFAULTS = export.ExportConfig("", "", "", "")

common.DEFINE_path(
    "output_labels", config_lib.TrainConfig.output_labels,
    "Labels file, one category per line in the model's output order; empty "
    "for <output_dir>/retrained_labels.txt.")
common.DEFINE_path(
    "output_graph", config_lib.TrainConfig.output_graph,
    "Frozen inference graph (retrain.py's retrained_graph.pb): input node "
    "'input' float32 [batch, S, S, 3] in the backbone's input range ([-1, 1] "
    "for MobileNet v1 and v2, 0..255 for V3 and EfficientNet; model_info.json "
    "says which), output node "
    "--final_tensor_name (softmax); empty for <output_dir>/retrained_graph.pb.")

common.DEFINE_path(
    "output_tflite", "",
    "The network as float32 TFLite; empty for <output_dir>/model.tflite. "
    "Input 'input' float32 [1, S, S, 3] in the backbone's input range (its "
    "metadata's NormalizationOptions say which), output 'final_result', "
    "softmax in the labels file's order. Beside it: quantized variants "
    "<name>_<mode>.tflite, and the app's canvas models "
    "<name>_canvas[_<mode>].tflite (input: the canvas, uint8 [1, H, W, 3]).")
flags.DEFINE_list(
    "quantize", list(_DEFAULTS.quantize),
    "Quantized TFLite variants to write too: none, dynamic (int8 weights), "
    "float16 (float16 weights), int8 (full-integer, calibrated on training "
    "drawings; float32 input and output). Comma-separated for several.")
common.DEFINE_path(
    "android_assets_dir", "",
    "An Android app's assets folder (.../app/src/main/assets): receives "
    "model.tflite (the canvas model of --android_model, with its labels "
    "inside), labels.txt and retrained_labels.txt, the legacy "
    "retrained_graph.pb and a model_info.json describing them. All files "
    "of an export are replaced together or not at all.")
flags.DEFINE_boolean(
    "android_assets", True,
    "Write the app's files: into --android_assets_dir, or else into the "
    "folder the run recorded (where quickdraw-train or the last export put "
    "them). --noandroid_assets leaves the app's files alone.")
flags.DEFINE_boolean(
    "android_graph", _DEFAULTS.android_graph,
    "Put the legacy frozen graph (retrained_graph.pb, for apps that load it "
    "with TensorFlow Mobile) into the app's assets too. An app using "
    "MediaPipe needs only model.tflite: --noandroid_graph leaves the graph "
    "out (and removes an old one).")
flags.DEFINE_enum(
    "android_model", _DEFAULTS.android_model, list(export.MODES),
    "Which variant of the canvas model the app receives; a quantized one "
    "that loses more than --max_quantization_loss is replaced by float32 "
    "(the export says so).")
flags.DEFINE_integer(
    "canvas_size", _DEFAULTS.canvas_size,
    "Side H = W of the canvas models' input: the app's canvas as uint8 RGB "
    "[1, H, W, 3], which MediaPipe resizes the app's bitmap to.",
    lower_bound=32, upper_bound=2048)
flags.DEFINE_float(
    "max_quantization_loss", _DEFAULTS.max_quantization_loss,
    "Points of test top-1 a quantized variant may lose against float32; "
    "one that loses more is reported loudly and never given to the app.",
    lower_bound=0)
flags.DEFINE_integer(
    "check_drawings", _DEFAULTS.check_drawings,
    "Held-out test drawings run through every artifact to check it against "
    "the Keras model.", lower_bound=1)
flags.DEFINE_integer(
    "check_canvases", _DEFAULTS.check_canvases,
    "How many of those are re-drawn as app canvases (larger, thicker, "
    "moved, mostly dark on white) and run through every canvas model.",
    lower_bound=1)
flags.DEFINE_integer(
    "representative_drawings", _DEFAULTS.representative_drawings,
    "Training drawings that calibrate int8 quantization.", lower_bound=1)
flags.DEFINE_float(
    "unknown_recall", _DEFAULTS.unknown_recall,
    "Where the score threshold sits: the share of doodles of other "
    "categories (held out of training) that the app's model answers 'not "
    "sure' to. Higher refuses more of them and more right answers too; "
    "export_report.json's calibration curve and threshold_curve.png show "
    "the trade. Default: the highest threshold under which at most 3% of "
    "the right answers fall, on held-out drawings re-drawn as app "
    "canvases.", lower_bound=0.0, upper_bound=1.0)


# ExportConfig's fields that are not flags of the same name: the paths,
# filled in from --output_dir, and the tolerance that tests loosen.
_NOT_FLAGS = ("output_graph", "output_labels", "output_tflite", "report_dir",
              "float_tolerance")


def export_config_from_flags(output_dir: str, output_graph: str = "",
                             output_labels: str = "") -> export.ExportConfig:
  """The `ExportConfig` the flags describe, empty paths in `output_dir`."""
  return export.ExportConfig(
      output_graph=config_lib.output_path(output_dir, "output_graph",
                                          output_graph),
      output_labels=config_lib.output_path(output_dir, "output_labels",
                                           output_labels),
      output_tflite=config_lib.output_path(output_dir, "output_tflite",
                                           FLAGS.output_tflite),
      report_dir=output_dir,
      **{f.name: (tuple(FLAGS[f.name].value) if f.name == "quantize"
                  else FLAGS[f.name].value)
         for f in dataclasses.fields(export.ExportConfig)
         if f.name not in _NOT_FLAGS})


def android_assets_dir(run: dict | None) -> str:
  """Where the app's files go: --android_assets_dir, else the folder that
  `run` (a run.json, or None) recorded, saying so; "" with
  --noandroid_assets. An app's folder is never left holding the model of
  an earlier run of the same --output_dir without a word."""
  recorded = (run or {}).get("export", {}).get("android_assets_dir", "")
  assets = ((FLAGS.android_assets_dir or recorded) if FLAGS.android_assets
            else "")
  if assets and not FLAGS.android_assets_dir:
    print(f"The app's files go to {recorded} again, as recorded with the "
          "run (--noandroid_assets leaves them alone)")
  elif recorded and not assets:
    print(f"The app's files in {recorded} are left as they were "
          "(--noandroid_assets): they hold the earlier model")
  return assets


def main(argv: Sequence[str]) -> None:
  if common.list_categories_or_check_args(argv):
    return
  out = FLAGS.output_dir
  model_path = os.path.join(out, run_files.MODEL_FILENAME)
  if not os.path.exists(model_path):
    raise QuickDrawError(
        f"no trained model in --output_dir={out} (looked for "
        f"{run_files.MODEL_FILENAME}); run quickdraw-train first or pass its "
        "--output_dir")
  run, data = run_files.read_run(out)
  config = export_config_from_flags(
      out, FLAGS.output_graph or run["train"].get("output_graph", ""),
      FLAGS.output_labels or run["train"].get("output_labels", ""))
  assets = android_assets_dir(run)
  config = dataclasses.replace(config, android_assets_dir=assets)
  # The run's bottleneck cache: its LiteRT backbone and calibration's
  # canvases, kept by quickdraw-train, serve the re-export too.
  cache = run["train"].get("bottleneck_dir")
  report = flow.export_run(data, config, model_path,
                           cache_dir=os.path.expanduser(cache) if cache
                           else None)
  print(checks.format_report(report))
  if assets:
    run_files.record_export(out, config, report)


def run() -> None:
  """The console_scripts entry point."""
  common.run_app(main, __name__)


if __name__ == "__main__":
  run()
