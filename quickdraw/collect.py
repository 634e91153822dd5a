"""Drawings collected on the demo page, saved as class folders.

`quickdraw-demo --collect_dir=DIR` lets a user save the canvas under a label:
each drawing becomes `DIR/<label>/<time>-<random>.png`, the canvas as the
page sent it (re-encoded as PNG, so nothing but pixels is kept), written
atomically. The folder is an `--image_dir` (`image_folders`):
`quickdraw-train --image_dir=DIR --categories=...` trains on it.

Labels come from a browser, which may be anyone's on a network: a label is
a folder name only if it is 1 to MAX_LABEL characters of letters, digits,
spaces, '-', '_' and "'", not starting with a space (so never '..', a
path, a hidden name or a control character).
"""

from __future__ import annotations

import os
import re
import secrets
import threading
import time

import numpy as np
import tensorflow as tf

from quickdraw import atomic_files, image_folders

MAX_LABEL = 64
_LABEL = re.compile(r"[^\W_][\w '-]*", re.UNICODE)


def check_label(label: str) -> str:
  """The label, trimmed, if it can name a class folder.

  Raises:
    ValueError: it cannot; the message says why.
  """
  label = label.strip()
  if not label:
    raise ValueError("give the drawing a label")
  if len(label) > MAX_LABEL:
    raise ValueError(f"the label is {len(label)} characters; keep it to "
                     f"{MAX_LABEL}")
  if not _LABEL.fullmatch(label):
    raise ValueError(f"the label {label[:MAX_LABEL]!r} may hold letters, "
                     "digits, spaces, '-', '_' and \"'\" only, starting with "
                     "a letter or digit")
  return label


class Collector:
  """Saves labelled canvases under a folder and counts them.

  Args:
    folder: The collection's folder (created when the first drawing is
      saved).

  Raises:
    QuickDrawError: the folder cannot be written.
  """

  def __init__(self, folder: str):
    self.folder = os.path.abspath(os.path.expanduser(folder))
    atomic_files.check_writable_folder(self.folder, "--collect_dir")
    self._lock = threading.Lock()

  def counts(self) -> dict[str, int]:
    """Pictures per label folder, by label."""
    if not os.path.isdir(self.folder):
      return {}
    return {label: len(image_folders.picture_paths(
        os.path.join(self.folder, label)))
            for label in sorted(os.listdir(self.folder))
            if not label.startswith(".")
            and os.path.isdir(os.path.join(self.folder, label))}

  def save(self, label: str, picture: np.ndarray) -> dict:
    """Saves an opaque (H, W, 1 or 3) canvas under `label`.

    Returns:
      {"saved": the file relative to the folder, "label", "counts"}.

    Raises:
      ValueError: a label that cannot name a folder (`check_label`).
    """
    label = check_label(label)
    png = tf.io.encode_png(np.asarray(picture, np.uint8)).numpy()
    name = f"{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(4)}.png"
    path = os.path.join(self.folder, label, name)
    with self._lock:
      os.makedirs(os.path.dirname(path), exist_ok=True)
      atomic_files.write_bytes(path, png)
    return {"saved": f"{label}/{name}", "label": label,
            "counts": self.counts()}
