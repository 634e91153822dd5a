"""Writing files so that readers never see half of one.

Everything quickdraw writes goes to a temporary file in the destination's
folder and is renamed over the destination only when complete: a crash or
Ctrl-C leaves the previous version (or nothing), never a torn file.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator

from quickdraw.errors import QuickDrawError


def temp_beside(path: str) -> str:
  """Creates an empty temporary file beside `path` and returns its name.

  It sits in the destination's folder (same filesystem, so a rename onto
  `path` is atomic), keeps the extension for writers that look at it, and
  gets the permissions a plain new file would (mkstemp's are owner-only).

  Raises:
    QuickDrawError: the destination folder cannot be created or written.
  """
  folder = os.path.dirname(os.path.abspath(path))
  base, ext = os.path.splitext(os.path.basename(path))
  try:
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{base}.", suffix=f".tmp{ext}",
                               dir=folder)
  except OSError as e:
    raise QuickDrawError(
        f"cannot write {path}: {e.strerror or e}; choose a writable "
        "location") from None
  os.close(fd)
  umask = os.umask(0)
  os.umask(umask)
  os.chmod(tmp, 0o666 & ~umask)
  return tmp


@contextlib.contextmanager
def atomic_path(path: str) -> Iterator[str]:
  """Yields a temporary path to write; renames it to `path` on success.

  The temporary file (see `temp_beside`) is removed if the block raises.

  Raises:
    QuickDrawError: the destination folder cannot be created or written.
  """
  tmp = temp_beside(path)
  try:
    yield tmp
    os.replace(tmp, path)
  except BaseException:
    with contextlib.suppress(FileNotFoundError):
      os.unlink(tmp)
    raise


def write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` atomically."""
  with atomic_path(path) as tmp, open(tmp, "wb") as f:
    f.write(data)


def write_text(path: str, text: str) -> None:
  """Writes `text` (UTF-8) to `path` atomically."""
  write_bytes(path, text.encode("utf-8"))
