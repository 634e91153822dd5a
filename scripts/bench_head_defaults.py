"""The head's training defaults, chosen by what the app sees.

  python scripts/bench_head_defaults.py --data_dir=../shared/data/quickdraw \
      --architecture=mobilenet_0.25_224 \
      --weights=../shared/data/weights/mobilenet_2_5_224_tf_no_top.h5 \
      --categories=airplane,apple,banana,bicycle,cat,crown,house,skull,"smiley face",star \
      --variants="cosine10:epochs=10;constant10:epochs=10,head_schedule=constant"

Trains the frozen route's head once per variant (each a set of TrainConfig
fields over the flags' settings, from one shared bottleneck cache, no
export) and prints, per variant and --data_seeds seed: npy test top-1, and top-1
on the test drawings re-drawn with a pen as app canvases
(`canvases.pen_suite`: 1.5% / 3% / 6% pens, white / dark / grey, centred /
off-centre / small), fitted to the app model's 256 px input and put through
the app's canvas preprocessing (`preprocessing.canvas_to_drawings`), by the
Keras model (the app's float32 model agrees within the export's tolerance).
The backbone is frozen, so canvas features are computed once per seed.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Sequence

import quickdraw.cli  # noqa: F401  (first: a quiet TensorFlow start)

import numpy as np
from absl import flags

from quickdraw import backbones, canvases, inference, preprocessing, training
from quickdraw.cli import common
from quickdraw.cli import train as train_cli
from quickdraw.data_source import QuickDrawSource
from quickdraw.splits import Split
from quickdraw import data_source

FLAGS = flags.FLAGS
flags.DEFINE_string("variants", "default:", "name:field=value,field=value; "
                    "... (TrainConfig fields).")
flags.DEFINE_list("data_seeds", ["0"], "--seed of each run: the drawings, "
                  "their split and training.")
flags.DEFINE_integer("canvas_drawings", 1000, "Test drawings re-drawn.")


def _value(field: dataclasses.Field, text: str):
  kind = type(getattr(training.TrainConfig(), field.name))
  return text.lower() in ("1", "true") if kind is bool else kind(text)


def parse_variants(text: str) -> dict[str, dict]:
  fields = {f.name: f for f in dataclasses.fields(training.TrainConfig)}
  variants = {}
  for part in filter(None, (p.strip() for p in text.split(";"))):
    name, _, settings = part.partition(":")
    variants[name] = {k: _value(fields[k], v) for k, v in
                      (s.split("=") for s in settings.split(",") if s)}
  return variants


def canvas_features(classifier, source, image_size, value_range, count):
  backbone = classifier.layers[1]
  drawings, labels = data_source.drawings_from_split(source, Split.TEST, count)
  pictures, kinds = canvases.pen_suite(drawings, 512, seed=0)
  fitted = np.stack([canvases.fit_canvas(p, 256, 256) for p in pictures])
  seen = np.concatenate([
      preprocessing.canvas_to_drawings(fitted[i:i + 100]).numpy()
      for i in range(0, len(fitted), 100)]).astype(np.uint8)
  features = np.concatenate([
      np.asarray(backbone(inference.to_model_input(
          seen[i:i + 100], image_size, value_range=value_range),
                        training=False))
      for i in range(0, len(seen), 100)])
  return features, labels, kinds


def main(argv: Sequence[str]) -> None:
  del argv
  base = train_cli.train_config_from_flags()
  base = dataclasses.replace(base, verbose=0)
  variants = parse_variants(FLAGS.variants)
  rows = []
  for seed in [int(s) for s in FLAGS.data_seeds]:
    data = dataclasses.replace(common.data_config_from_flags(), seed=seed)
    source = QuickDrawSource.open(data)
    features = None
    for name, settings in variants.items():
      config = dataclasses.replace(
          base, output_dir=os.path.join(base.output_dir, f"{name}_s{seed}"),
          **settings)
      result = training.train_and_evaluate(data, config)
      classifier = result.classifier
      if features is None:
        features, labels, kinds = canvas_features(
            classifier, source, data.image_size,
            backbones.input_range_of(classifier), FLAGS.canvas_drawings)
      right = np.asarray(classifier.layers[2](features)).argmax(1) == labels
      by_kind = {kind: right[kinds[axis] == kind].mean()
                 for axis in ("pen", "place") for kind in
                 dict.fromkeys(kinds[axis])}
      rows.append((name, seed, result.report["top1"], right.mean(), by_kind))
      print(f"{name:<22} seed {seed} npy {result.report['top1']:.4f} canvas "
            f"{right.mean():.4f} " + " ".join(
                f"{k} {v:.3f}" for k, v in by_kind.items()), flush=True)
  print("\nMeans over seeds:")
  for name in variants:
    mine = [r for r in rows if r[0] == name]
    print(f"| {name} | {np.mean([r[2] for r in mine]):.4f} | "
          f"{np.mean([r[3] for r in mine]):.4f} | " + " | ".join(
              f"{np.mean([r[4][k] for r in mine]):.3f}" for k in mine[0][4])
          + " |")


if __name__ == "__main__":
  common.run_app(main, "__main__")
