"""Writes generated official-format category files, for trying things offline.

  python scripts/make_synthetic_data.py --data_dir=/tmp/quickdraw_smoke \\
      --categories=circle,square,triangle,line --synthetic_rows=300

Each category gets a distinct figure (see quickdraw/synthetic.py); the names
must be official ones so the files load like real data.
"""

from collections.abc import Sequence

import quickdraw.cli  # noqa: F401  (first: a quiet TensorFlow start)

from absl import app, flags

from quickdraw.testing import synthetic
from quickdraw.cli import common

flags.DEFINE_integer("synthetic_rows", 300, "Drawings written per category.",
                     lower_bound=1)
FLAGS = flags.FLAGS


def main(argv: Sequence[str]) -> None:
  del argv
  names = common.category_names_from_flags() or [
      "circle", "square", "triangle", "line"]
  paths = synthetic.write_category_files(FLAGS.data_dir, names,
                                         FLAGS.synthetic_rows, seed=FLAGS.seed)
  print("\n".join(paths))


if __name__ == "__main__":
  app.run(common.guarded(main))
