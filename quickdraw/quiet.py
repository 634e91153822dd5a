"""Keeping TensorFlow's and LiteRT's native start-up chatter off the terminal.

`TF_CPP_MIN_LOG_LEVEL=3` hides TensorFlow's C++ logging, but some lines
ignore it: the ones written while TensorFlow's libraries load, before their
logging is set up (the oneDNN and CUDA notices), the converter's
calibration summary and LiteRT's "Created TensorFlow Lite XNNPACK delegate".
Where quickdraw triggers them it silences the process's stderr (file
descriptor 2) for that call, but only when TF_CPP_MIN_LOG_LEVEL is 3: the
entry points set that unless the user set the variable, so
`TF_CPP_MIN_LOG_LEVEL=0 quickdraw-train ...` shows everything.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator


def wanted() -> bool:
  """Whether native logging is to be hidden (TF_CPP_MIN_LOG_LEVEL=3)."""
  return os.environ.get("TF_CPP_MIN_LOG_LEVEL") == "3"


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
  """Sends what native code writes to stderr in the block to /dev/null.

  Python exceptions are unaffected: they carry their messages and are
  printed after the block. Does nothing unless `wanted()`.
  """
  if not wanted():
    yield
    return
  sys.stderr.flush()
  saved = os.dup(2)
  devnull = os.open(os.devnull, os.O_WRONLY)
  try:
    os.dup2(devnull, 2)
    yield
  finally:
    sys.stderr.flush()
    os.dup2(saved, 2)
    os.close(saved)
    os.close(devnull)
