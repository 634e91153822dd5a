"""The 345 official QuickDraw categories and where each one's file lives.

The names, URLs, sizes and sha256 sums come from the metadata that
tensorflow-datasets ships for its `quickdraw_bitmap` builder, so they are
never copied by hand. The files are read straight from the installed package,
without importing `tensorflow_datasets` (which would import TensorFlow and
take seconds).
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib.util
import os
from collections.abc import Iterable, Sequence

from quickdraw.errors import QuickDrawError

# Where the builder's metadata lives inside the tensorflow_datasets package.
_TFDS_METADATA_DIR = ("datasets", "quickdraw_bitmap")


@dataclasses.dataclass(frozen=True)
class Category:
  """One official category and its numpy bitmap file.

  Attributes:
    name: The official name, e.g. "smiley face".
    url: The official download URL of `<name>.npy`.
    size: The official file's size in bytes.
    sha256: The official file's sha256, hex.
  """
  name: str
  url: str
  size: int
  sha256: str

  @property
  def filename(self) -> str:
    """The file name used on disk and on the server: `<name>.npy`."""
    return f"{self.name}.npy"


def _tfds_metadata_path(filename: str) -> str:
  spec = importlib.util.find_spec("tensorflow_datasets")
  if spec is None or not spec.submodule_search_locations:
    raise QuickDrawError(
        "tensorflow-datasets is not installed; it ships the official QuickDraw "
        "category list: pip install tensorflow-datasets")
  root = list(spec.submodule_search_locations)[0]
  path = os.path.join(root, *_TFDS_METADATA_DIR, filename)
  if not os.path.exists(path):
    raise QuickDrawError(
        f"{path} is missing from tensorflow-datasets; reinstall it: "
        "pip install --force-reinstall tensorflow-datasets")
  return path


@functools.cache
def official_categories() -> dict[str, Category]:
  """Returns every official category, keyed by name, in the official order.

  The order is the one of tensorflow-datasets' `labels.txt` (alphabetical,
  capitalised names first), which is also its class-label order.
  """
  with open(_tfds_metadata_path("labels.txt"), encoding="utf-8") as f:
    names = [line.strip() for line in f if line.strip()]
  records = {}
  with open(_tfds_metadata_path("checksums.tsv"), encoding="utf-8") as f:
    for line in f:
      if not line.strip() or line.startswith("#"):
        continue
      url, size, sha256 = line.rstrip("\n").split("\t")[:3]
      name = os.path.splitext(url.rsplit("/", 1)[1])[0]
      records[name] = Category(name, url, int(size), sha256)
  missing = [n for n in names if n not in records]
  if missing:
    raise QuickDrawError(
        f"tensorflow-datasets' quickdraw_bitmap metadata lists {missing[0]!r} "
        "without a checksum; reinstall tensorflow-datasets")
  return {name: records[name] for name in names}


def _edits(a: str, b: str) -> int:
  """Edits from `a` to `b`, a swap of neighbours counting one (so "dgo" is
  one edit from "dog", three from "dragon")."""
  d = [[i + j if not i * j else 0 for j in range(len(b) + 1)]
       for i in range(len(a) + 1)]
  for i in range(1, len(a) + 1):
    for j in range(1, len(b) + 1):
      d[i][j] = min(d[i - 1][j] + 1, d[i][j - 1] + 1,
                    d[i - 1][j - 1] + (a[i - 1] != b[j - 1]))
      if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
        d[i][j] = min(d[i][j], d[i - 2][j - 2] + 1)
  return d[len(a)][len(b)]


def _closest(name: str, official: Sequence[str]) -> list[str]:
  """Official names closest to `name`: a case-insensitive match, else the best
  difflib matches (several only when about equally close), closest first:
  fewest edits, then difflib's ratio."""
  by_lower = {n.lower(): n for n in official}
  if name.lower() in by_lower:
    return [by_lower[name.lower()]]
  scored = []
  for lower, original in by_lower.items():
    matcher = difflib.SequenceMatcher(None, name.lower(), lower)
    if matcher.real_quick_ratio() >= 0.6 and matcher.quick_ratio() >= 0.6:
      scored.append((matcher.ratio(), original))
  scored = sorted((s for s in scored if s[0] >= 0.6), reverse=True)
  if not scored:
    return []
  best = scored[0][0]
  close = [n for r, n in scored[:3] if r >= best - 0.05]
  ratio = dict((n, r) for r, n in scored)
  return sorted(close, key=lambda n: (_edits(name.lower(), n.lower()),
                                      -ratio[n]))


def _suggestion(name: str, official: Sequence[str]) -> str:
  quoted = [repr(c) for c in _closest(name, official)]
  if len(quoted) <= 1:
    return "".join(quoted)
  return ", ".join(quoted[:-1]) + " or " + quoted[-1]


_LIST_HINT = ("run quickdraw-prepare --list_categories to see the 345 "
              "official names")


def _unknown_category_message(names: Sequence[str],
                              official: Sequence[str]) -> str:
  """One line for every unknown name, each with its closest names."""
  if len(names) == 1:
    suggestion = _suggestion(names[0], official)
    return (f"{names[0]!r} is not a QuickDraw category; " +
            (f"did you mean {suggestion}?" if suggestion else _LIST_HINT))
  parts = []
  for name in names:
    suggestion = _suggestion(name, official)
    parts.append(f"{name!r}" + (f" (did you mean {suggestion}?)"
                                if suggestion else ""))
  return (f"{len(names)} names are not QuickDraw categories: "
          f"{', '.join(parts)}; {_LIST_HINT}")


def resolve_categories(names: Iterable[str]) -> list[Category]:
  """Checks category names against the official list.

  Args:
    names: Official category names, in the order the model's outputs should
      take. Surrounding whitespace is ignored.

  Returns:
    The matching `Category` records, in the given order.

  Raises:
    QuickDrawError: a name is not official (the message suggests the closest
      official names), is given twice, or no name is given.
  """
  official = official_categories()
  names = [raw.strip() for raw in names if raw.strip()]
  unknown = [name for name in names if name not in official]
  if unknown:
    raise QuickDrawError(_unknown_category_message(unknown, list(official)))
  resolved = []
  seen = set()
  for name in names:
    if name in seen:
      raise QuickDrawError(
          f"category {name!r} is listed twice; list each category once")
    seen.add(name)
    resolved.append(official[name])
  if not resolved:
    raise QuickDrawError(
        "no categories chosen; pass --categories=cat,dog,... or "
        "--categories_file=PATH (one name per line), or --image_dir=DIR "
        "(a folder of class folders of pictures)")
  return resolved


def read_categories_file(path: str) -> list[str]:
  """Reads category names from a text file, one per line.

  Blank lines and lines starting with `#` are skipped, so a file can carry
  comments. Names may contain spaces ("smiley face").

  Raises:
    QuickDrawError: the file cannot be read.
  """
  try:
    with open(path, encoding="utf-8") as f:
      lines = f.read().splitlines()
  except OSError as e:
    raise QuickDrawError(
        f"cannot read --categories_file {path}: {e.strerror or e}") from None
  return [line.strip() for line in lines
          if line.strip() and not line.lstrip().startswith("#")]
