"""Benchmarks export: every artifact's size, accuracy, parity and latency.

  python scripts/bench_export.py --output_dir=runs/bench_accuracy/frozen

Takes a trained run (model.keras and run.json, e.g. from
scripts/bench_accuracy.py), exports it with every quantization into
--bench_dir, checks each artifact on the whole test split (--check_drawings,
default 100,000 here, caps it) and the canvas models on --check_canvases of
those drawings re-drawn as app canvases, and prints:

* per artifact: size, test top-1, top-1 agreement with Keras, largest
  probability difference, and for quantized variants the loss against
  float32 in points of top-1 (target: int8 at most 1 point);
* int8 against float32: size ratio (target <= 40% at alpha 0.25, <= 30% at
  1.0, printed for --size_architecture with random weights) and
  single-thread latency (target >= 1.5x faster);
* the canvas model against the plain network: size and single-thread
  latency, and the ops it holds.
"""

from __future__ import annotations

import quickdraw.cli  # noqa: F401  (first: a quiet TensorFlow start)

import dataclasses
import os
from collections.abc import Sequence

import numpy as np
from absl import flags

from quickdraw import export, tflite_graph
from quickdraw import model as model_lib
from quickdraw.cli import common
from quickdraw.cli import export as export_cli
from quickdraw.testing import timing
from quickdraw.export import convert as export_convert
from quickdraw.export import checks as export_checks
from quickdraw import run_files
from quickdraw.export import flow as export_flow

FLAGS = flags.FLAGS
flags.DEFINE_string("bench_dir", "/tmp/quickdraw_bench_export",
                    "Where the benchmark's artifacts are written.")
flags.DEFINE_string("size_architecture", "mobilenet_1.0_224",
                    "A second backbone whose int8/float32 size ratio is "
                    "printed (random weights; sizes do not depend on them).")
flags.DEFINE_integer("latency_runs", 200,
                     "Single-input TFLite calls timed per model.",
                     lower_bound=1)


def main(argv: Sequence[str]) -> None:
  del argv
  data = run_files.read_run(FLAGS.output_dir)[1]
  folder = FLAGS.bench_dir
  # The export flags as given (--canvas_size, --representative_drawings,
  # ...), with every variant, into --bench_dir.
  config = dataclasses.replace(export_cli.export_config_from_flags(folder),
                               quantize=export.QUANTIZATIONS,
                               android_assets_dir="")
  report = export_flow.export_run(
      data, config, os.path.join(FLAGS.output_dir, run_files.MODEL_FILENAME))
  print(export_checks.format_report(report))
  artifacts = report["artifacts"]
  float_bytes = artifacts["tflite_float32"]["bytes"]
  for mode in export.QUANTIZATIONS:
    a = artifacts[f"tflite_{mode}"]
    print(f"{mode:>8} vs float32: top-1 {-a['loss_points']:+.2f} points, "
          f"agreement with Keras {a['top1_agreement']:.2%}, size "
          f"{a['bytes'] / float_bytes:.1%}")
  print("targets: int8 at most 1 point below float32, at most 40% of its "
        "size (alpha 0.25)")

  latency = {}
  for name, path in (("float32", config.tflite_path("float32")),
                     ("int8", config.tflite_path("int8")),
                     ("canvas float32", config.tflite_path("float32", True)),
                     ("canvas int8", config.tflite_path("int8", True))):
    latency[name] = timing.tflite_latency(path, FLAGS.latency_runs)
  print(f"TFLite latency, one thread, median of {FLAGS.latency_runs}: "
        + ", ".join(f"{k} {1000 * v:.2f} ms" for k, v in latency.items()))
  print(f"int8 is {latency['float32'] / latency['int8']:.2f}x faster than "
        "float32 (target >= 1.5x)")
  canvas = artifacts["canvas_float32"]
  print(f"canvas model: {canvas['bytes'] / 1e6:.3f} MB against "
        f"{float_bytes / 1e6:.3f} MB (+{canvas['bytes'] - float_bytes:,} "
        f"bytes), {1000 * latency['canvas float32']:.2f} ms against "
        f"{1000 * latency['float32']:.2f} ms "
        f"({config.canvas_size}x{config.canvas_size} canvas)")
  with open(config.tflite_path("int8", canvas=True), "rb") as f:
    print("canvas int8 model's ops: " + ", ".join(tflite_graph.op_names(
        f.read())))

  # Sizes do not depend on weight values: random weights show what the
  # int8/float32 ratio is for a larger backbone.
  arch = model_lib.parse_architecture(FLAGS.size_architecture)
  backbone = model_lib.build_backbone(arch, None)
  classifier = model_lib.build_classifier(backbone, model_lib.build_head(
      int(backbone.output_shape[-1]), len(data.categories)))
  frozen = export_convert.serving_function(classifier, "final_result")
  calibration = np.random.default_rng(0).integers(
      0, 256, (8, 784)).astype(np.uint8)
  sizes = {mode: len(export_convert.tflite_bytes(
      frozen, mode, calibration, value_range=arch.input_range))
           for mode in ("float32", "int8")}
  print(f"{arch.name} (random weights, {len(data.categories)} classes): "
        f"float32 {sizes['float32'] / 1e6:.2f} MB, int8 "
        f"{sizes['int8'] / 1e6:.2f} MB, {sizes['int8'] / sizes['float32']:.1%}"
        " (target <= 30%)")


if __name__ == "__main__":
  flags.FLAGS.set_default("check_drawings", 100_000)
  common.run_app(main, "__main__")
