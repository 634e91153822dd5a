"""absl entry points: parse flags, build a config, call the library, report.

Importing this package sets up a quiet start: unless the user chose a
TF_CPP_MIN_LOG_LEVEL, TensorFlow's C++ logging is hidden (level 3: no
oneDNN, CUDA-probe or converter lines before the command's own output), and
TensorFlow is imported here with its load-time lines silenced (see
`quickdraw.quiet`).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from quickdraw import quiet  # noqa: E402

with quiet.native_stderr_silenced():
  import tensorflow  # noqa: E402,F401
