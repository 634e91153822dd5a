"""Downloading official category files, verified and written atomically.

A file is streamed into a hidden temporary file beside its destination while
its sha256 is computed, and renamed to `<name>.npy` only once its size and
sha256 match the tensorflow-datasets record. Any failure (offline, HTTP error,
mismatch, Ctrl-C) removes the temporary file, so the data directory never
holds a partial download under a name the loader would pick up.
"""

from __future__ import annotations

import hashlib
import os
import sys
import tempfile
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import BinaryIO, TextIO

from quickdraw import atomic_files
from quickdraw.categories import Category
from quickdraw.errors import QuickDrawError

OFFICIAL_BASE_URL = (
    "https://storage.googleapis.com/quickdraw_dataset/full/numpy_bitmap")
GSUTIL_BASE = "gs://quickdraw_dataset/full/numpy_bitmap"
_CHUNK = 1 << 20
TEMP_SUFFIX = ".part"


def category_url(category: Category, base_url: str | None = None) -> str:
  """The URL to fetch `category` from: official, or under a mirror's base."""
  if not base_url:
    # The record's URL holds a raw space ("smiley face.npy"); quote the path.
    return _quote_path(category.url)
  return base_url.rstrip("/") + "/" + urllib.parse.quote(category.filename)


def _quote_path(url: str) -> str:
  parts = urllib.parse.urlsplit(url)
  return urllib.parse.urlunsplit(
      parts._replace(path=urllib.parse.quote(parts.path)))


class Progress:
  """A one-line byte counter on a terminal; a line every 25% otherwise."""

  def __init__(self, label: str, total: int, stream: TextIO | None = None):
    self._label = label
    self._total = max(total, 1)
    self._stream = stream if stream is not None else sys.stderr
    self._tty = getattr(self._stream, "isatty", lambda: False)()
    self._start = time.monotonic()
    self._last_draw = 0.0
    self._next_quarter = 25

  def update(self, done: int) -> None:
    percent = 100 * done // self._total
    now = time.monotonic()
    if self._tty:
      if now - self._last_draw < 0.2 and done < self._total:
        return
      self._last_draw = now
      self._stream.write("\r" + self._line(done, now))
    elif percent >= self._next_quarter:
      self._next_quarter = (percent // 25 + 1) * 25
      self._stream.write(self._line(done, now) + "\n")
    self._stream.flush()

  def close(self) -> None:
    if self._tty:
      self._stream.write("\n")
      self._stream.flush()

  def _line(self, done: int, now: float) -> str:
    rate = done / max(now - self._start, 1e-6) / 1e6
    return (f"Downloading {self._label}: {done / 1e6:.1f}/"
            f"{self._total / 1e6:.1f} MB ({100 * done // self._total}%) "
            f"{rate:.1f} MB/s")


def _manual_hint(category: Category, data_dir: str) -> str:
  return (f"fetch it yourself (gsutil cp '{GSUTIL_BASE}/{category.filename}' "
          f"'{data_dir}/') or pass --data_dir to a folder that has it")


class _WriteError(Exception):
  """Writing the download failed (not the connection)."""


def _copy_verified(response: BinaryIO, out: BinaryIO, category: Category,
                   on_bytes: Callable[[int], None]) -> tuple[int, str]:
  digest = hashlib.sha256()
  done = 0
  while chunk := response.read(_CHUNK):
    try:
      out.write(chunk)
    except OSError as e:
      raise _WriteError(e) from None
    digest.update(chunk)
    done += len(chunk)
    on_bytes(done)
    if done > category.size:
      break  # Bigger than the record: no need to fetch the rest.
  return done, digest.hexdigest()


def download_category(category: Category, data_dir: str,
                      base_url: str | None = None,
                      progress_stream: TextIO | None = None,
                      timeout_s: float = 60.0) -> str:
  """Downloads `category`'s official file into `data_dir`, verified.

  Args:
    category: The record giving the file's URL, size and sha256.
    data_dir: The folder to write `<name>.npy` into (created if missing).
    base_url: A mirror holding `<name>.npy` files (`http://`, `https://` or
      `file://`); None for the official URL.
    progress_stream: Where progress goes; stderr by default.
    timeout_s: Socket timeout for the connection and each read.

  Returns:
    The path of the verified file.

  Raises:
    QuickDrawError: the folder is not writable, the download fails, or the
      bytes do not match the record. Nothing is left behind in any case.
  """
  url = category_url(category, base_url)
  dest = os.path.join(data_dir, category.filename)
  try:
    os.makedirs(data_dir, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{category.filename}.",
                               suffix=TEMP_SUFFIX, dir=data_dir)
  except OSError as e:
    raise QuickDrawError(
        f"cannot write to data directory {data_dir}: {e.strerror or e}; pass "
        "--data_dir pointing to a writable folder") from None
  progress = Progress(category.filename, category.size, progress_stream)
  try:
    with os.fdopen(fd, "wb") as out:
      try:
        with urllib.request.urlopen(url, timeout=timeout_s) as response:
          size, sha256 = _copy_verified(response, out, category,
                                        progress.update)
      except _WriteError as e:
        error = e.args[0]
        if atomic_files.is_disk_full(error):
          raise atomic_files.disk_full_error(
              data_dir, category.filename, category.size,
              "; or pass --samples_per_class to fetch only the rows used"
          ) from None
        raise QuickDrawError(
            f"cannot write {category.filename} into {data_dir}: "
            f"{error.strerror or error}; pass a writable --data_dir") from None
      except urllib.error.HTTPError as e:
        raise QuickDrawError(
            f"could not download {category.name!r} from {url}: HTTP {e.code} "
            f"{e.reason}; {_manual_hint(category, data_dir)}") from None
      except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", None) or e.strerror or e
        raise QuickDrawError(
            f"could not download {category.name!r} from {url}: {reason} "
            "(offline?); check the connection or pass --download_base_url "
            f"for a mirror, or {_manual_hint(category, data_dir)}") from None
      finally:
        progress.close()  # end a terminal's progress line before any error
    if size != category.size or sha256 != category.sha256:
      got = f"{size} bytes, sha256 {sha256[:16]}..."
      want = f"{category.size} bytes, sha256 {category.sha256[:16]}..."
      # From a mirror, another try fetches the same file: say what is
      # wrong with it. From the official storage, a transfer went wrong.
      advice = (f"the mirror's {category.filename} is not the official file "
                "(a subset, or another version); point --download_base_url "
                "at a full copy of the official files, or "
                if base_url else "try again, or ")
      raise QuickDrawError(
          f"download of {category.name!r} from {url} does not match the "
          f"official record (got {got}, expected {want}); nothing was kept; "
          f"{advice}{_manual_hint(category, data_dir)}")
    os.replace(tmp, dest)
  except BaseException:
    # Whatever went wrong (including Ctrl-C), leave no partial file behind.
    try:
      os.unlink(tmp)
    except FileNotFoundError:
      pass
    raise
  return dest


def remove_stale_downloads(data_dir: str, category: Category) -> None:
  """Removes temporary files of `category` left by a run that was killed."""
  prefix = f".{category.filename}."
  try:
    names = os.listdir(data_dir)
  except OSError:
    return
  for name in names:
    if name.startswith(prefix) and name.endswith(TEMP_SUFFIX):
      try:
        os.unlink(os.path.join(data_dir, name))
      except OSError:
        pass
