"""quickdraw-prepare: fetch, check and split the chosen categories.

Run it before training (or on its own, to pre-download data on a machine with
a network): it resolves the categories, downloads missing files into
--data_dir (verified), checks every file, prints each category's split sizes,
reads one batch through the pipeline at the backbone's input size, and writes
to --output_dir:

  data_summary.json  the per-category table it prints, and the config
  data_samples.png   a row of training drawings per category

Example:
  quickdraw-prepare --flagfile=configs/quickstart.flags
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import numpy as np
from absl import flags, logging

from quickdraw import atomic_files, backbones, input_pipeline, visualize
from quickdraw.cli import common
# Defines the training flags too: one flagfile configures a whole run.
from quickdraw.cli import train as _train  # noqa: F401
from quickdraw.data_source import QuickDrawSource
from quickdraw.splits import Split

FLAGS = flags.FLAGS
flags.adopt_module_key_flags(common)  # so --help lists the data flags
flags.DEFINE_integer(
    "samples_per_row", 8,
    "Training drawings shown per category in data_samples.png.", lower_bound=1)

_COLUMNS = ("category", "rows_in_file", "used", "train", "validation", "test",
            "file")
_COUNTS = _COLUMNS[1:-1]


def format_table(summary: list[dict[str, object]]) -> str:
  """The per-category summary as an aligned text table with a total row."""
  total = {c: sum(int(r[c]) for r in summary) for c in _COUNTS}
  rows = [_COLUMNS] + [tuple(str(r[c]) for c in _COLUMNS)
                       for r in summary] + [("total",) + tuple(
                           str(total[c]) for c in _COUNTS) + ("",)]
  widths = [max(len(r[i]) for r in rows) for i in range(len(_COLUMNS))]
  # Names and paths left-aligned, counts right-aligned.
  return "\n".join("  ".join(
      v.ljust(w) if _COLUMNS[i] in ("category", "file") else v.rjust(w)
      for i, (v, w) in enumerate(zip(r, widths))).rstrip() for r in rows)


def sample_grid(source: QuickDrawSource, per_row: int) -> np.ndarray:
  """A labelled grid of the first training drawings of each category."""
  counts = source.split_counts(Split.TRAIN)
  starts = np.cumsum(counts) - counts
  rows = [source.read_positions(Split.TRAIN, start + np.arange(
      min(per_row, count)))[0] for start, count in zip(starts, counts)]
  return visualize.labelled_rows(
      rows, source.categories, title="Training drawings per category",
      legend="Each row: the first training drawings of the category at "
      "its left, as stored (28x28, light ink on black).")


def main(argv: Sequence[str]) -> None:
  if common.list_categories_or_check_args(argv):
    return
  config = common.data_config_from_flags()
  source = QuickDrawSource.open(config)
  summary = source.summary()
  print(format_table(summary))

  images, labels = next(iter(input_pipeline.make_dataset(
      source, Split.TRAIN, batch_size=32, image_size=config.image_size,
      value_range=backbones.parse_architecture(
          FLAGS.architecture).input_range)))
  logging.info("pipeline: batch of %s %s in [%.2f, %.2f], labels %s",
               tuple(images.shape), images.dtype.name,
               float(np.min(images)), float(np.max(images)),
               tuple(labels.shape))

  out = FLAGS.output_dir
  atomic_files.write_text(
      os.path.join(out, "data_summary.json"),
      json.dumps({"config": dataclasses.asdict(config),
                  "categories": summary}, indent=2) + "\n")
  visualize.write_png(os.path.join(out, "data_samples.png"),
                      sample_grid(source, FLAGS.samples_per_row))
  print(f"Wrote {out}/data_summary.json and {out}/data_samples.png")


def run() -> None:
  """The console_scripts entry point."""
  common.run_app(main, __name__)


if __name__ == "__main__":
  run()
