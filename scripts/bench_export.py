"""Benchmarks export: artifact sizes, accuracy, parity and TFLite latency.

  python scripts/bench_export.py --output_dir=runs/bench_accuracy/fine_tuned

Takes a trained run (model.keras and run.json, e.g. from
scripts/bench_accuracy.py), exports it with every quantization into
--bench_dir, checks each artifact on the whole test split (--check_drawings,
default 100,000 here, caps it), and prints per artifact its size, test top-1,
top-1 agreement with Keras and largest probability difference, then the
TFLite latency of one drawing, float32 against int8.

Targets (issue 4): float artifacts agree with Keras on >= 99.9% of test
drawings; int8 at most 1 point below float32 in top-1, at most 30% of its
size, at least 1.5x faster.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np
from absl import flags

from quickdraw import export, training
from quickdraw import model as model_lib
from quickdraw.cli import common
from quickdraw.cli import export as export_cli  # noqa: F401 (export flags)
from quickdraw.config import DataConfig

FLAGS = flags.FLAGS
flags.DEFINE_string("bench_dir", "/tmp/quickdraw_bench_export",
                    "Where the benchmark's artifacts are written.")
flags.DEFINE_string("size_architecture", "mobilenet_1.0_224",
                    "A second backbone whose int8/float32 size ratio is "
                    "printed (random weights; sizes do not depend on them).")
flags.DEFINE_integer("latency_runs", 200,
                     "Single-drawing TFLite calls timed per model.",
                     lower_bound=1)


def main(argv: Sequence[str]) -> None:
  del argv
  with open(os.path.join(FLAGS.output_dir, "run.json")) as f:
    data = DataConfig(**json.load(f)["data"])
  folder = FLAGS.bench_dir
  config = export.ExportConfig(
      output_graph=os.path.join(folder, "retrained_graph.pb"),
      output_labels=os.path.join(folder, "retrained_labels.txt"),
      output_tflite=os.path.join(folder, "model.tflite"), report_dir=folder,
      quantize=export.QUANTIZATIONS, check_drawings=FLAGS.check_drawings,
      representative_drawings=FLAGS.representative_drawings)
  report = training.export_run(
      data, config, os.path.join(FLAGS.output_dir, training.MODEL_FILENAME))
  print(export.format_report(report))
  float_top1 = report["artifacts"]["tflite_float32"]["test_top1"]
  int8 = report["artifacts"]["tflite_int8"]
  float_bytes = report["artifacts"]["tflite_float32"]["bytes"]
  print(f"int8 vs float32: top-1 {100 * (int8['test_top1'] - float_top1):+.2f}"
        f" points (target >= -1), size {int8['bytes'] / float_bytes:.1%} "
        "(target <= 30%)")
  latency = {mode: export.tflite_latency(config.tflite_path(mode),
                                         data.image_size, FLAGS.latency_runs)
             for mode in ("float32", "int8")}
  print(f"TFLite latency per drawing ({os.cpu_count()} CPUs, median of "
        f"{FLAGS.latency_runs}): float32 {1000 * latency['float32']:.2f} ms, "
        f"int8 {1000 * latency['int8']:.2f} ms, "
        f"{latency['float32'] / latency['int8']:.2f}x (target >= 1.5x)")
  # Sizes do not depend on weight values: random weights show what the
  # int8/float32 ratio is for a larger backbone.
  arch = model_lib.parse_architecture(FLAGS.size_architecture)
  backbone = model_lib.build_backbone(arch, None)
  classifier = model_lib.build_classifier(backbone, model_lib.build_head(
      int(backbone.output_shape[-1]), len(data.categories)))
  frozen = export.serving_function(classifier, "final_result")
  calibration = np.random.default_rng(0).uniform(
      -1, 1, (8, arch.image_size, arch.image_size, 3)).astype(np.float32)
  sizes = {mode: len(export.tflite_bytes(frozen, mode, calibration))
           for mode in ("float32", "int8")}
  print(f"{arch.name} (random weights, {len(data.categories)} classes): "
        f"float32 {sizes['float32'] / 1e6:.2f} MB, int8 "
        f"{sizes['int8'] / 1e6:.2f} MB, {sizes['int8'] / sizes['float32']:.1%}")
  agreements = [report["artifacts"][a]["top1_agreement"]
                for a in ("frozen_graph", "tflite_float32")]
  print(f"float artifacts' agreement with Keras: "
        f"{min(agreements):.4%} (target >= 99.9%)")


if __name__ == "__main__":
  flags.FLAGS.set_default("check_drawings", 100_000)
  common.run_app(main, "__main__")
