"""Writing files so that readers never see half of one.

Everything quickdraw writes goes to a temporary file in the destination's
folder and is renamed over the destination only when complete: a crash or
Ctrl-C leaves the previous version (or nothing), never a torn file.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator, Sequence

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


def _backup_name(path: str) -> str:
  folder, name = os.path.split(os.path.abspath(path))
  return os.path.join(folder, f".{name}.{uuid.uuid4().hex[:12]}.previous")


def _replace_all(temps: dict[str, str]) -> None:
  """Renames each temporary onto its destination; all or none.

  A destination that already exists is first linked (or copied) to a
  backup beside it, so that if a later rename fails, every file replaced so
  far is put back.

  Raises:
    QuickDrawError: a rename failed; every destination is as it was.
  """
  done: list[tuple[str, str | None]] = []
  backups: list[str] = []
  try:
    for path, tmp in temps.items():
      backup = None
      if os.path.lexists(path):
        backup = _backup_name(path)
        try:
          os.link(path, backup)
        except OSError:  # a filesystem without hard links
          shutil.copy2(path, backup)
        backups.append(backup)
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
    for backup in backups:
      with contextlib.suppress(FileNotFoundError):
        os.unlink(backup)


@contextlib.contextmanager
def staged(paths: Sequence[str]) -> Iterator[dict[str, str]]:
  """Temporary files beside each of `paths`, renamed in together.

  Every destination is checked and given its temporary before the block
  runs, so an unwritable one fails first. The block writes (and may check)
  the temporaries; when it completes, all are renamed into place, and if
  any rename fails the ones done are undone. If the block raises, nothing
  is replaced. Temporaries never outlive the call.

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
    _replace_all(temps)
  finally:
    for tmp in temps.values():
      with contextlib.suppress(FileNotFoundError):
        os.unlink(tmp)
