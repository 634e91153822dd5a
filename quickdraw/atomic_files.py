"""Writing files so that readers never see half of one.

Everything quickdraw writes goes to a temporary file in the destination's
folder and is renamed over the destination only when complete: a crash or
Ctrl-C leaves the previous version (or nothing), never a torn file.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence

import numpy as np

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


def check_writable_folder(folder: str, what: str) -> None:
  """Fails now if `folder` cannot be created or written, creating nothing.

  The nearest part of the path that exists must be a folder this process
  may write into (a path under a regular file fails even for root).

  Raises:
    QuickDrawError: naming `what` (a flag) and the reason.
  """
  path = os.path.abspath(os.path.expanduser(folder))
  probe = path
  while not os.path.lexists(probe) and os.path.dirname(probe) != probe:
    probe = os.path.dirname(probe)
  if not os.path.isdir(probe):
    raise QuickDrawError(f"cannot write to {what} {folder}: {probe} is a "
                         "file, not a folder; pass a writable folder")
  if not os.access(probe, os.W_OK | os.X_OK):
    raise QuickDrawError(f"cannot write to {what} {folder}: {probe} is not "
                         "writable; pass a writable folder")


@contextlib.contextmanager
def removed_if_empty_on_failure(folders: Sequence[str]) -> Iterator[None]:
  """Removes the given folders that the block created, if it fails and
  they hold nothing (no files, only empty subfolders)."""
  new = [f for f in folders if not os.path.exists(f)]
  try:
    yield
  except BaseException:
    for folder in new:
      for root, _, _ in sorted(os.walk(folder), key=lambda w: -len(w[0])):
        with contextlib.suppress(OSError):
          os.rmdir(root)  # fails, as wanted, on a folder with files
    raise


def write_bytes(path: str, data: bytes) -> None:
  """Writes `data` to `path` atomically."""
  with atomic_path(path) as tmp, open(tmp, "wb") as f:
    f.write(data)


def write_text(path: str, text: str) -> None:
  """Writes `text` (UTF-8) to `path` atomically."""
  write_bytes(path, text.encode("utf-8"))


# Set (to seconds) by tests that kill a process between an export's renames.
PAUSE_ENV = "QUICKDRAW_PAUSE_BETWEEN_RENAMES"


def is_disk_full(e: OSError) -> bool:
  return e.errno in (errno.ENOSPC, errno.EDQUOT)


def disk_full_error(folder: str, what: str, needed_bytes: int,
                    hint: str = "") -> QuickDrawError:
  """The one line for a full disk: the folder, the step, the space."""
  return QuickDrawError(
      f"no space left in {folder} for {what} (about "
      f"{max(needed_bytes, 1) / 1e6:,.1f} MB needed); free some space and "
      f"run again, it goes on from what was complete{hint}")


@contextlib.contextmanager
def disk_full_is_an_error(folder: str, what: str,
                          needed_bytes: int | Callable[[], int],
                          hint: str = "") -> Iterator[None]:
  """Turns a full disk inside the block into `disk_full_error`'s one
  line (`needed_bytes` may be a function, asked when it happens); other
  errors pass through."""
  try:
    yield
  except OSError as e:
    if not is_disk_full(e):
      raise
    needed = needed_bytes() if callable(needed_bytes) else needed_bytes
    raise disk_full_error(folder, what, needed, hint) from None


def file_sha256(path: str) -> str:
  """sha256 of a file, read 16 MB at a time."""
  digest = hashlib.sha256()
  with open(path, "rb", buffering=0) as f:
    while chunk := f.read(1 << 24):
      digest.update(chunk)
  return digest.hexdigest()


def file_sums(folder: str, names: Sequence[str]) -> dict[str, str]:
  """{name: sha256} of files in `folder`, to record beside them."""
  return {name: file_sha256(os.path.join(folder, name)) for name in names}


def sums_match(folder: str, sums: Mapping[str, str]) -> bool:
  """Whether every file `file_sums` recorded still has its sha256 (False
  for a missing file or a malformed record)."""
  try:
    return all(file_sha256(os.path.join(folder, name)) == digest
               for name, digest in sums.items())
  except (OSError, AttributeError, TypeError):
    return False


def save_checked_npy(path: str, array: np.ndarray) -> None:
  """Writes `array` to `path` and its sha256 to `path`.sha256, each by
  rename (see `load_checked_npy`); a `.npz` path is compressed (app
  canvases, mostly flat paper, shrink 60-fold)."""
  with atomic_path(path) as tmp:
    if path.endswith(".npz"):
      with open(tmp, "wb") as f:
        np.savez_compressed(f, array=array)
    else:
      np.save(tmp, array)
  write_text(path + ".sha256", file_sha256(path))


def load_checked_npy(path: str) -> np.ndarray | None:
  """`save_checked_npy`'s array, or None if it is missing or does not
  match its sha256."""
  try:
    with open(path + ".sha256") as f:
      if file_sha256(path) == f.read().strip():
        if path.endswith(".npz"):
          with np.load(path) as kept:
            return kept["array"]
        return np.load(path)
  except (OSError, ValueError, KeyError):
    pass
  return None


def array_key(prefix: str, array: np.ndarray) -> str:
  """A cache key (20 hex digits) of a text `prefix` (what made the entry:
  settings joined by NUL) and `array`'s bytes."""
  return hashlib.sha256(
      prefix.encode() +
      hashlib.sha256(np.ascontiguousarray(array).tobytes()).digest()
  ).hexdigest()[:20]


def cached_npy(path: str, make: Callable[[], np.ndarray]) -> np.ndarray:
  """The array kept at `path` (`save_checked_npy`), else `make()`'s, then
  kept there. A cache only: a damaged entry is made again, and a folder
  that cannot be written is left as it is."""
  array = load_checked_npy(path)
  if array is not None:
    return array
  array = make()
  try:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    save_checked_npy(path, array)
  except OSError:
    pass
  return array


def finish_interrupted(journal: str) -> int:
  """Completes the renames of a `staged` call killed half-way (its
  journal lists them, written once every temporary was complete): the
  destinations then all hold the new files, never a mix.

  Returns:
    How many files it renamed (0: there was nothing to finish).
  """
  try:
    with open(journal) as f:
      pairs = json.load(f)
  except FileNotFoundError:
    return 0
  except (OSError, ValueError):
    pairs = []  # written half: no rename had started
  finished = 0
  for path, tmp in pairs:
    if tmp is None:  # a file the transaction removes
      if os.path.lexists(path):
        os.unlink(path)
        finished += 1
    elif os.path.exists(tmp):
      os.replace(tmp, path)
      finished += 1
  os.unlink(journal)
  return finished


def _backup_name(path: str) -> str:
  folder, name = os.path.split(os.path.abspath(path))
  return os.path.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.previous")


def _replace_all(temps: dict[str, str], journal: str | None = None,
                 removed: Sequence[str] = ()) -> None:
  """Renames each temporary onto its destination, and removes each of
  `removed` that exists; all or none.

  A destination that already exists is first linked (or copied) to a
  backup beside it, so that if a later rename fails, every file replaced so
  far is put back.

  With a `journal`, the renames are listed there first (atomically), so
  that a process killed between them is finished by `finish_interrupted`.

  Raises:
    QuickDrawError: a rename failed; every destination is as it was.
  """
  done: list[tuple[str, str | None]] = []
  backups: list[str] = []
  pause = float(os.environ.get(PAUSE_ENV, "0") or 0)
  # A removal is a pair with no temporary (None in the journal).
  changes = list(temps.items()) + [(path, None) for path in removed
                                   if os.path.lexists(path)]
  if journal:
    write_text(journal, json.dumps(changes))
  try:
    for path, tmp in changes:
      if pause and done:
        time.sleep(pause)
      backup = None
      if os.path.lexists(path):
        backup = _backup_name(path)
        try:
          os.link(path, backup)
        except OSError:  # a filesystem without hard links
          shutil.copy2(path, backup)
        backups.append(backup)
      if tmp is None:
        os.unlink(path)
      else:
        os.replace(tmp, path)
      done.append((path, backup))
  except OSError as e:
    for replaced, backup in reversed(done):
      with contextlib.suppress(OSError):
        if backup:
          os.replace(backup, replaced)
        else:
          os.unlink(replaced)
    raise QuickDrawError(
        f"cannot write {path}: {e.strerror or e}; nothing was replaced, "
        "fix the path and run again") from None
  finally:
    if journal:
      with contextlib.suppress(FileNotFoundError):
        os.unlink(journal)
    for backup in backups:
      with contextlib.suppress(FileNotFoundError):
        os.unlink(backup)


@contextlib.contextmanager
def staged(paths: Sequence[str], journal: str | None = None,
           removed: Sequence[str] = ()) -> Iterator[dict[str, str]]:
  """Temporary files beside each of `paths`, renamed in together, and the
  files of `removed` (that exist) removed in the same transaction.

  Every destination is checked and given its temporary before the block
  runs, so an unwritable one fails first. The block writes (and may check)
  the temporaries; when it completes, all are renamed into place, and if
  any rename fails the ones done are undone. If the block raises, nothing
  is replaced. Temporaries never outlive the call, except when the
  process is killed: then a `journal` lets `finish_interrupted` complete
  the renames.

  Yields:
    {destination: temporary path}.

  Raises:
    QuickDrawError: a destination is a folder or cannot be written, or a
      rename failed; every destination is as it was.
  """
  temps: dict[str, str] = {}
  try:
    for path in paths:
      if os.path.isdir(path):
        raise QuickDrawError(f"cannot write {path}: it is a folder; move it "
                             "away or choose another path")
      temps[path] = temp_beside(path)
    yield temps
    _replace_all(temps, journal, removed)
  finally:
    for tmp in temps.values():
      with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
