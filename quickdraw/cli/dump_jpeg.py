"""quickdraw-dump-jpeg: write drawings as JPEG (or PNG) files per category.

The old convert step, without editing a script: the chosen categories'
drawings (the same sampling and split as training) become

  <output_dir>/<category>/<category>_<row>.jpg

the layout retrain.py and keras.utils.image_dataset_from_directory read.
A re-run skips images already written (an interrupted dump resumes; no
half-written image is ever left); --overwrite rewrites them.

Examples:
  quickdraw-dump-jpeg --categories=cat,dog --output_dir=/tmp/quickdraw_jpeg
  quickdraw-dump-jpeg --flagfile=configs/quickstart.flags --split=test \\
      --size=224 --invert --output_dir=/tmp/quickstart_test_jpeg
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from absl import flags

from quickdraw import jpeg_dump
from quickdraw.cli import common
from quickdraw.data_source import QuickDrawSource

FLAGS = flags.FLAGS
flags.adopt_module_key_flags(common)
_DEFAULTS = jpeg_dump.DumpConfig(output_dir="")
flags.DEFINE_enum("split", _DEFAULTS.split, list(jpeg_dump.SPLITS),
                  "Which drawings: all sampled ones, or one split of "
                  "training's split rule.")
flags.DEFINE_integer("size", _DEFAULTS.size,
                     "Image side: 28 as drawn, or larger (e.g. 224), resized "
                     "bilinearly as for training.", lower_bound=1)
flags.DEFINE_boolean("invert", _DEFAULTS.invert,
                     "Dark ink on white instead of light ink on black.")
flags.DEFINE_enum("format", _DEFAULTS.image_format, list(jpeg_dump.FORMATS),
                  "jpeg, or png for lossless images.")
flags.DEFINE_integer("quality", _DEFAULTS.quality, "JPEG quality, 1 to 100.",
                     lower_bound=1, upper_bound=100)
flags.DEFINE_boolean("overwrite", _DEFAULTS.overwrite,
                     "Rewrite images that already exist.")


def main(argv: Sequence[str]) -> None:
  if common.list_categories_or_check_args(argv):
    return
  data = common.data_config_from_flags()
  config = jpeg_dump.DumpConfig(
      output_dir=FLAGS.output_dir, split=FLAGS.split, size=FLAGS.size,
      invert=FLAGS.invert, image_format=FLAGS.format, quality=FLAGS.quality,
      overwrite=FLAGS.overwrite)
  source = QuickDrawSource.open(data)
  jpeg_dump.remove_stale_temporaries(config, list(source.categories))
  start = time.perf_counter()
  results = jpeg_dump.dump(source, config, common.progress_verbosity())
  seconds = time.perf_counter() - start
  written = sum(w for w, _ in results.values())
  skipped = sum(s for _, s in results.values())
  print(f"Wrote {written} images ({skipped} already there) under "
        f"{config.output_dir} in {seconds:.1f} s"
        + (f", {written / seconds:,.0f} images/s" if written else ""))


DEFAULT_OUTPUT_DIR = "runs/jpeg"


def run() -> None:
  """The console_scripts entry point."""
  # --output_dir is shared with training, whose run folder it names there:
  # this command's own default and help (set here, in its own process).
  FLAGS["output_dir"].help = ("Folder the images go into, one subfolder per "
                              "category.")
  FLAGS.set_default("output_dir", DEFAULT_OUTPUT_DIR)
  common.run_app(main, __name__)


if __name__ == "__main__":
  run()
