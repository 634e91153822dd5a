"""absl entry points: parse flags, build a config, call the library, report.

Importing this package sets up a quiet start: unless the user chose a
TF_CPP_MIN_LOG_LEVEL, TensorFlow's C++ logging is hidden (level 3: no
oneDNN, CUDA-probe or converter lines before the command's own output), and
TensorFlow is imported here with its load-time lines silenced (see
`quickdraw.quiet`).

It also turns on TensorFlow's oneDNN kernels unless the user chose
(TF_ENABLE_ONEDNN_OPTS): TensorFlow enables them by itself only on CPUs
with AVX-512 VNNI, BF16 or AMX, and without them its depthwise
convolutions, most of a MobileNet's work, ran 3.8x slower on a 2-core AMD
EPYC (AVX2) VM (see scripts/README.md).
"""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "1")

from quickdraw import quiet  # noqa: E402

with quiet.native_stderr_silenced():
  import tensorflow  # noqa: E402,F401
