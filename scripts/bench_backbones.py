"""Benchmarks backbones: what each gets right, and what it costs on a phone.

  python scripts/bench_backbones.py --flagfile=configs/accurate.flags \\
      --data_dir=../shared/data/quickdraw --weights_dir=../shared/data/weights \\
      --readme=scripts/README.md

For each --trained architecture (its Keras ImageNet file in --weights_dir),
on --categories (default: every file in --data_dir), --samples_per_class
1000, 70% train / 10% validation / 20% test:

  * frozen test top-1: the head on the bottleneck cache at the
    architecture's own size (quickdraw-train's default);
  * fine-tuned test top-1, with the flags given (above: the recipe of
    configs/accurate.flags, --image_size included; the benchmark
    overrides its architecture, weights and folders);
  * int8's loss against float32, frozen and fine-tuned (after the export's
    selective quantization), on the whole test split;
  * float32 and int8 TFLite sizes of the network;
  * the app's canvas model's latency, LiteRT, one thread, median of
    --latency_runs (float32 / int8);
  * seconds per 1,000 drawings to compute bottlenecks (this machine).

Each finished row is kept in --bench_dir (row.json beside its runs), so a
killed benchmark started again goes on where it stopped; delete the folder
to measure again. Kept rows have their latencies timed again, so that a
run with nothing else on the machine gives them all under equal load.

For each --priced architecture (no weights needed: random weights cost the
same), the sizes, latencies and bottleneck time only. Each row also gives
the published ImageNet top-1 of the architecture at 224 px.

The table is printed, and with --readme written into that file between
the markers `<!-- bench_backbones:begin -->` and `<!-- ...:end -->`.
"""

from __future__ import annotations

import quickdraw.cli  # noqa: F401  (first: a quiet TensorFlow start)

import dataclasses
import json
import os
import time
from collections.abc import Sequence

import numpy as np
from absl import flags

from quickdraw import (atomic_files, backbones, bottlenecks, export,
                       preprocessing, training)
from quickdraw import model as model_lib
from quickdraw.cli import common
from quickdraw.cli import train as train_cli
from quickdraw.data_source import QuickDrawSource
from quickdraw.errors import QuickDrawError
from quickdraw.splits import Split
from quickdraw.testing import timing
from quickdraw.export import convert as export_convert
from quickdraw.export import contracts as export_contracts
from quickdraw.export import canvas as export_canvas
from quickdraw.export import flow as export_flow

FLAGS = flags.FLAGS
flags.DEFINE_string("bench_dir", os.path.join("runs", "bench_backbones"),
                    "Where the runs and their exports are written.")
if "weights_dir" not in FLAGS:  # tests import it beside bench_train
  flags.DEFINE_string("weights_dir", os.path.join("~", ".keras", "models"),
                      "A folder holding Keras' ImageNet no-top weight files; "
                      "none trains random weights (for tests).")
flags.DEFINE_list("trained", ["mobilenet_0.25_224", "mobilenet_v2_0.35_224",
                              "mobilenet_v2_0.5_224"],
                  "Architectures trained and tested (their weights file "
                  "must be in --weights_dir).")
flags.DEFINE_list("priced", [
    "mobilenet_v3_small_minimalistic_224", "mobilenet_v3_small_224",
    "mobilenet_v3_large_minimalistic_224", "mobilenet_v3_large_224",
    "efficientnet_b0_224", "mobilenet_v2_1.0_224", "mobilenet_1.0_224"],
                  "Architectures only sized and timed (random weights).")
flags.DEFINE_string("readme", "", "A Markdown file to write the table into, "
                    "between the bench_backbones markers.")
flags.DEFINE_integer("latency_runs", 100,
                     "Single-canvas LiteRT calls timed per model.",
                     lower_bound=1)
flags.DEFINE_boolean("fine_tune", True, "Also fine-tune each --trained "
                     "architecture (the slow part on a CPU).")

# Published ImageNet top-1 at 224 px: TF-slim's MobileNet v1 and v2 tables
# (the checkpoints Keras converted) and Keras' own docs for V3 and
# EfficientNet.
IMAGENET_TOP1 = {
    "mobilenet_1.0_224": 70.9, "mobilenet_0.75_224": 68.4,
    "mobilenet_0.50_224": 63.3, "mobilenet_0.25_224": 49.8,
    "mobilenet_v2_1.4_224": 75.0, "mobilenet_v2_1.3_224": 74.4,
    "mobilenet_v2_1.0_224": 71.8, "mobilenet_v2_0.75_224": 69.8,
    "mobilenet_v2_0.5_224": 65.4, "mobilenet_v2_0.35_224": 60.3,
    "mobilenet_v3_large_224": 75.6, "mobilenet_v3_large_minimalistic_224":
    72.3, "mobilenet_v3_small_224": 68.1,
    "mobilenet_v3_small_minimalistic_224": 61.9, "efficientnet_b0_224": 77.1,
}
_BEGIN = "<!-- bench_backbones:begin -->"
_END = "<!-- bench_backbones:end -->"
_BENCH_DEFAULTS = dict(samples_per_class=1000, validation_percentage=10,
                       testing_percentage=20)


def bottleneck_seconds(backbone, image_size: int, drawings: np.ndarray,
                       batch: int = 100) -> float:
  """Seconds per 1,000 drawings through the compiled forward pass that
  fills the bottleneck cache (traced first, then timed)."""
  forward = bottlenecks.compiled_forward(backbone, image_size)
  forward(drawings[:batch])
  start = time.perf_counter()
  for i in range(0, len(drawings), batch):
    np.asarray(forward(drawings[i:i + batch]))
  return (time.perf_counter() - start) * 1000 / len(drawings)


def export_config(folder: str, canvas_size: int) -> export.ExportConfig:
  return export.ExportConfig(
      output_graph=os.path.join(folder, "retrained_graph.pb"),
      output_labels=os.path.join(folder, "retrained_labels.txt"),
      output_tflite=os.path.join(folder, "model.tflite"), report_dir=folder,
      quantize=("int8",), canvas_size=canvas_size,
      max_quantization_loss=FLAGS.max_quantization_loss,
      check_drawings=100_000)  # the whole test split


def trained_row(name: str, data, config: training.TrainConfig,
                drawings: np.ndarray) -> dict:
  arch = backbones.parse_architecture(name)
  weights = ("none" if FLAGS.weights_dir == "none" else os.path.join(
      os.path.expanduser(FLAGS.weights_dir), arch.weights_filename))
  row = {"name": name}
  runs = [("frozen", dataclasses.replace(config, fine_tune_layers=0),
           arch.image_size)]
  if FLAGS.fine_tune and config.fine_tune_layers:
    runs.append(("fine_tuned", config, FLAGS.image_size or arch.image_size))
  for kind, run_config, image_size in runs:
    folder = os.path.join(FLAGS.bench_dir, name, kind)
    run_config = dataclasses.replace(
        run_config, architecture=name, weights=weights, output_dir=folder,
        bottleneck_dir=os.path.join(FLAGS.bench_dir, "bottlenecks"),
        verbose=0)
    run_data = dataclasses.replace(data, image_size=image_size)
    start = time.perf_counter()
    result = training.train_and_evaluate(run_data, run_config)
    exported = export_flow.export_run(
        run_data, export_config(folder, FLAGS.canvas_size),
        classifier=result.classifier, source=result.source)
    artifacts = exported["artifacts"]
    row[kind] = {
        "top1": result.report["top1"], "image_size": run_data.image_size,
        "int8_loss": artifacts["tflite_int8"]["loss_points"],
        "int8_float_layers": len(exported.get(
            "int8_float_layers", {}).get("layers", [])),
        "seconds": time.perf_counter() - start}
    print(f"  {name} {kind}: top-1 {row[kind]['top1']:.4f}, int8 "
          f"{-row[kind]['int8_loss']:+.2f} points", flush=True)
    if kind == "frozen":
      row.update(_sizes_and_latency(folder, artifacts))
      # The run's own frozen backbone, named after its architecture.
      row["bottleneck_s"] = bottleneck_seconds(
          result.classifier.get_layer(arch.name), arch.image_size, drawings)
  return row


def _sizes_and_latency(folder: str, artifacts: dict) -> dict:
  return {
      "float32_mb": artifacts["tflite_float32"]["bytes"] / 1e6,
      "int8_mb": artifacts["tflite_int8"]["bytes"] / 1e6,
      "canvas_models": folder, **latency(folder)}


def latency(folder: str) -> dict:
  """Single-thread latency of the canvas models in `folder`, in ms."""
  config = export_config(folder, FLAGS.canvas_size)
  return {key: 1000 * timing.tflite_latency(
      config.tflite_path(mode, canvas=True), FLAGS.latency_runs)
          for key, mode in (("canvas_ms", "float32"),
                            ("canvas_int8_ms", "int8"))}


def priced_row(name: str, categories: Sequence[str],
               drawings: np.ndarray) -> dict:
  """Size, latency and bottleneck time with random weights."""
  arch = backbones.parse_architecture(name)
  backbone = model_lib.build_backbone(arch, None)
  model_lib.calibrate_batch_norm(backbone, preprocessing.upsample_to_rgb(
      drawings[:64], arch.image_size, arch.input_range))
  classifier = model_lib.build_classifier(backbone, model_lib.build_head(
      int(backbone.output_shape[-1]), len(categories)))
  folder = os.path.join(FLAGS.bench_dir, name)
  os.makedirs(folder, exist_ok=True)
  config = export_config(folder, FLAGS.canvas_size)
  frozen = export_convert.serving_function(classifier, config.final_tensor_name)
  preprocess = export_canvas.canvas_preprocessing_bytes(
      config.canvas_size, arch.image_size, value_range=arch.input_range)
  artifacts = {}
  for mode in ("float32", "int8"):
    network = export_convert.tflite_bytes(
        frozen, mode, drawings[:100].reshape(-1, 784),
        value_range=arch.input_range)
    app = export_canvas.canvas_model_bytes(preprocess, network)
    for canvas, data in ((False, network), (True, app)):
      with open(config.tflite_path(mode, canvas), "wb") as f:
        f.write(export_contracts.with_metadata(
            data, categories, canvas=canvas,
            size=config.canvas_size if canvas else arch.image_size,
            final_tensor_name=config.final_tensor_name,
            value_range=arch.input_range))
    artifacts[f"tflite_{mode}"] = {
        "bytes": os.path.getsize(config.tflite_path(mode))}
  row = {"name": name, **_sizes_and_latency(folder, artifacts)}
  row["bottleneck_s"] = bottleneck_seconds(backbone, arch.image_size,
                                           drawings)
  return row


def table(rows: list[dict]) -> str:
  lines = [
      "| backbone | ImageNet top-1 | frozen top-1 | fine-tuned top-1 | "
      "int8 loss, frozen / fine-tuned (points) | float32 / int8 MB | "
      "canvas model ms, float32 / int8 | bottlenecks s per 1,000 |",
      "| --- | --- | --- | --- | --- | --- | --- | --- |"]
  for r in rows:
    def top1(kind):
      if kind not in r:
        return "-" if "frozen" in r else "(random weights)"
      size = r[kind]["image_size"]
      at = "" if r["name"].endswith(f"_{size}") else f" (at {size} px)"
      return f"{r[kind]['top1']:.4f}{at}"

    def loss(kind):
      if kind not in r:
        return "-"
      layers = r[kind]["int8_float_layers"]
      return f"{r[kind]['int8_loss']:+.2f}" + (
          f" ({layers} float)" if layers else "")
    lines.append(
        f"| `{r['name']}` | {IMAGENET_TOP1.get(r['name'], '-')} | "
        f"{top1('frozen')} | {top1('fine_tuned')} | {loss('frozen')} / "
        f"{loss('fine_tuned')} | {r['float32_mb']:.2f} / {r['int8_mb']:.2f} "
        f"| {r['canvas_ms']:.2f} / {r['canvas_int8_ms']:.2f} | "
        f"{r['bottleneck_s']:.1f} |")
  return "\n".join(lines)


def write_into(readme: str, text: str) -> None:
  with open(readme) as f:
    old = f.read()
  if _BEGIN not in old or _END not in old:
    raise QuickDrawError(
        f"--readme={readme} has no {_BEGIN} ... {_END} markers; add them "
        "where the table goes")
  head, rest = old.split(_BEGIN, 1)
  tail = rest.split(_END, 1)[1]
  atomic_files.write_text(readme, f"{head}{_BEGIN}\n{text}\n{_END}{tail}")


def main(argv: Sequence[str]) -> None:
  del argv
  common.every_category_in_data_dir_unless_chosen()
  data = common.data_config_from_flags()
  config = train_cli.train_config_from_flags()
  source = QuickDrawSource.open(data)
  drawings = source.read_positions(Split.TRAIN, np.arange(
      min(1000, source.split_size(Split.TRAIN))))[0].reshape(
      -1, 28, 28, 1)
  print(f"{source.num_classes} categories, "
        f"{source.split_size(Split.TRAIN):,} training and "
        f"{source.split_size(Split.TEST):,} test drawings", flush=True)
  rows = []
  for name in FLAGS.trained + FLAGS.priced:
    kept = os.path.join(FLAGS.bench_dir, name, "row.json")
    if os.path.exists(kept):
      with open(kept) as f:
        rows.append(json.load(f))
      # Timed again, all rows in a row: a latency is the figure most
      # disturbed by whatever else ran while the row was trained.
      if os.path.isdir(rows[-1].get("canvas_models", "")):
        rows[-1].update(latency(rows[-1]["canvas_models"]))
      print(f"  {name}: kept from {kept}", flush=True)
      continue
    if name in FLAGS.trained:
      rows.append(trained_row(name, data, config, drawings))
    else:
      rows.append(priced_row(name, source.categories, drawings))
      print(f"  {name}: priced", flush=True)
    atomic_files.write_text(kept, json.dumps(rows[-1], indent=1))
  text = table(rows)
  print(text)
  if FLAGS.readme:
    write_into(FLAGS.readme, text)


if __name__ == "__main__":
  for _name, _value in _BENCH_DEFAULTS.items():
    flags.FLAGS.set_default(_name, _value)
  common.run_app(main, "__main__")
