"""The chosen categories' files, opened, sampled and split.

`QuickDrawSource.open(config)` is the one call that turns a `DataConfig` into
memmapped drawings: it checks the category names, finds or downloads each
file, checks it, and picks the rows to use. `index(split)` lists a split's
drawings as (class, row) pairs and `gather` reads any batch of them with one
numpy call per category, not one per drawing.

Nothing else needs that index, which at full size (50 million drawings)
would be the largest thing in memory: `split_counts` counts a split a
million rows at a time, `split_rows` gives the split's rows within any run
of positions (a block to stream), `read_rows` reads a block with one file
read, and `read_positions` finds a few drawings by position.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import TextIO

import numpy as np
from absl import logging

from quickdraw import categories as categories_lib
from quickdraw import download as download_lib
from quickdraw import image_folders
from quickdraw import npy_files
from quickdraw import remote_rows
from quickdraw import splits
from quickdraw.config import DataConfig
from quickdraw.errors import QuickDrawError

# Rows hashed at a time when counting a split: 8 MB of uint64 per step.
_COUNT_CHUNK = 1 << 20

@dataclasses.dataclass(frozen=True)
class SplitIndex:
  """A split's drawings, sorted by class then row.

  Attributes:
    class_ids: class index of each drawing (position in `categories`); int16
      (there are at most 345 classes), to keep large indexes small.
    rows: row of each drawing in its class's file; int32 (official files hold
      at most about 300,000 rows).
  """
  class_ids: np.ndarray
  rows: np.ndarray

  def __len__(self) -> int:
    return len(self.rows)

  def class_counts(self, num_classes: int) -> np.ndarray:
    return np.bincount(self.class_ids, minlength=num_classes)


def locate_or_download(category: categories_lib.Category, config: DataConfig,
                       progress_stream: TextIO | None = None) -> str:
  """Returns the path of `category`'s file, downloading it if allowed.

  Raises:
    QuickDrawError: the file is missing and `config.download` is false, or
      the download fails.
  """
  path = npy_files.find_category_file(config.data_dir, category.name)
  if path is not None:
    return path
  if not config.download:
    looked = " or ".join(
        npy_files.candidate_paths(config.data_dir, category.name))
    raise QuickDrawError(
        f"no file for category {category.name!r}: looked for {looked}; copy "
        "it there, or run without --nodownload to fetch it")
  download_lib.remove_stale_downloads(config.data_dir, category)
  logging.info("%s is not in %s; downloading it", category.filename,
               config.data_dir)
  return download_lib.download_category(
      category, config.data_dir, config.download_base_url or None,
      progress_stream=progress_stream)


class QuickDrawSource:
  """Memory-mapped drawings of the chosen categories, sampled and split."""

  def __init__(self, config: DataConfig,
               files: Sequence[npy_files.DrawingFile]):
    """Use `QuickDrawSource.open`; this takes files already opened."""
    self.config = config
    self.files = list(files)
    self.categories = tuple(f.category for f in self.files)
    # None means every row: no need to hold an arange per file.
    self._selected = [_selected_rows(f, config) for f in self.files]
    self._counts: dict[splits.Split, np.ndarray] = {}

  @classmethod
  def open(cls, config: DataConfig,
           progress_stream: TextIO | None = None) -> QuickDrawSource:
    """Resolves, fetches if needed, checks and maps `config`'s categories.

    With `config.image_dir`, its class folders' pictures join
    (`image_folders.merge`): added to the QuickDraw category a folder is
    named for, or classes of their own after QuickDraw's.

    Raises:
      QuickDrawError: an unknown category, a missing or bad file, a failed
        download, or a bad image folder; the message names it.
    """
    pictures = (image_folders.read_image_dir(config.image_dir,
                                             config.min_images_per_class)
                if config.image_dir else [])
    records = (categories_lib.resolve_categories(config.categories)
               if config.categories or not pictures else [])
    paths = [npy_files.find_category_file(config.data_dir, r.name)
             for r in records]
    # Categories not on disk: a sampled run takes its rows from the row
    # cache, fetching the rows it lacks (remote_rows); others the whole file.
    missing = [i for i, path in enumerate(paths) if path is None]
    files: list = [None] * len(records)
    for i, rows in zip(missing, remote_rows.open_sampled(
        [records[i] for i in missing], config, progress_stream)):
      files[i] = rows
    absent = [records[i].name for i in missing if files[i] is None]
    if len(absent) > 1 and not config.download:
      raise QuickDrawError(
          f"no files for {len(absent)} categories in {config.data_dir}: "
          f"{', '.join(map(repr, absent))} (looked for <category>.npy and "
          f"{npy_files.GSUTIL_PREFIX}<category>.npy); copy them there, or "
          "run without --nodownload to fetch them")
    for i, record in enumerate(records):
      if files[i] is None:
        path = locate_or_download(record, config, progress_stream)
        files[i] = npy_files.open_drawings(path, record.name)
    source = cls(config, image_folders.merge(
        files, [r.name for r in records], pictures))
    source._warn_short_files()
    return source

  @property
  def num_classes(self) -> int:
    return len(self.files)

  def selected_rows(self, class_id: int) -> np.ndarray:
    """The rows of class `class_id` in use, across all splits, ascending."""
    selected = self._selected[class_id]
    if selected is None:
      return np.arange(len(self.files[class_id]), dtype=np.int64)
    return selected

  def _warn_short_files(self) -> None:
    wanted = self.config.samples_per_class
    if wanted <= 0:
      return
    for f in self.files:
      own = getattr(f, "base", f)  # a category's own file, pictures aside
      if not isinstance(own, image_folders.PictureClass) and len(own) < wanted:
        logging.warning(
            "%r has %d drawings, fewer than --samples_per_class=%d; using all "
            "of them", f.category, len(own), wanted)

  def num_selected(self, class_id: int) -> int:
    """How many rows of class `class_id` are in use, across all splits."""
    selected = self._selected[class_id]
    return len(self.files[class_id]) if selected is None else len(selected)

  def split_rows(self, class_id: int, split: splits.Split | str,
                 start: int = 0, stop: int | None = None) -> np.ndarray:
    """Rows of `split` among selected positions [start, stop) of a class.

    Positions count the class's rows in use (`selected_rows`), so a block of
    positions maps to a run of rows: all rows, or the sampled ones.

    Returns:
      int64 rows in the class's file, ascending.
    """
    stop = self.num_selected(class_id) if stop is None else min(
        stop, self.num_selected(class_id))
    selected = self._selected[class_id]
    rows = (np.arange(start, stop, dtype=np.int64) if selected is None
            else selected[start:stop])
    f = self.files[class_id]
    scores = (f.split_scores(self.config.seed, rows)
              if hasattr(f, "split_scores") else
              splits.split_scores(self.config.seed, f.category, rows))
    return rows[splits.in_split(scores, split,
                                self.config.validation_percentage,
                                self.config.testing_percentage)]

  def split_counts(self, split: splits.Split | str) -> np.ndarray:
    """Drawings of `split` per class, int64 (num_classes,).

    Counted a million rows at a time and remembered: 50 million drawings
    never need an index in memory just to know how many batches an epoch has.
    """
    split = splits.Split(split)
    if split not in self._counts:
      self._counts[split] = np.array([
          sum(len(self.split_rows(c, split, start, start + _COUNT_CHUNK))
              for start in range(0, self.num_selected(c), _COUNT_CHUNK))
          for c in range(self.num_classes)], dtype=np.int64)
    return self._counts[split]

  def split_size(self, split: splits.Split | str) -> int:
    """How many drawings `split` holds."""
    return int(self.split_counts(split).sum())

  def split_labels(self, split: splits.Split | str) -> np.ndarray:
    """Class of each drawing of `split` in index order, int32 (N,)."""
    return np.repeat(np.arange(self.num_classes, dtype=np.int32),
                     self.split_counts(split))

  def index(self, split: splits.Split | str) -> SplitIndex:
    """Lists the drawings of `split`, sorted by class then row.

    Holds 6 bytes a drawing: for small and medium splits. The input pipeline
    streams large ones without it (`input_pipeline.stream_batches`).
    """
    rows = [self.split_rows(c, split).astype(np.int32)
            for c in range(self.num_classes)]
    class_ids = [np.full(len(r), c, dtype=np.int16)
                 for c, r in enumerate(rows)]
    return SplitIndex(np.concatenate(class_ids), np.concatenate(rows))

  def read_positions(self, split: splits.Split | str, positions: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
    """Reads drawings by position in `split`'s index order, without an index.

    Only the classes the positions fall in are hashed: a handful of drawings
    from a 50-million-drawing split costs milliseconds.

    Returns:
      (uint8 (B, 784) drawings, int32 (B,) labels), in `positions` order.
    """
    positions = np.asarray(positions, dtype=np.int64)
    ends = np.cumsum(self.split_counts(split))
    if len(positions) and (positions.min() < 0 or positions.max() >= ends[-1]):
      raise IndexError(f"positions outside the {splits.Split(split).value} "
                       f"split's {ends[-1]} drawings")
    class_ids = np.searchsorted(ends, positions, side="right")
    offsets = positions - (ends - self.split_counts(split))[class_ids]
    rows = np.empty_like(positions)
    for c in np.unique(class_ids):
      here = class_ids == c
      rows[here] = self.split_rows(int(c), split)[offsets[here]]
    return self.gather(class_ids, rows), class_ids.astype(np.int32)

  def read_rows(self, class_id: int, rows: np.ndarray) -> np.ndarray:
    """Reads ascending `rows` of one class: uint8 (len(rows), 784)
    (`DrawingFile.read_rows`, or `remote_rows.RowFile.read_rows`)."""
    return self.files[class_id].read_rows(rows)

  def gather(self, class_ids: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Reads drawings by (class, row), in the given order.

    Args:
      class_ids: int class indices, shape (B,).
      rows: row of each drawing in its class's file, shape (B,).

    Returns:
      uint8 array (B, 784).
    """
    class_ids = np.asarray(class_ids)
    rows = np.asarray(rows)
    out = np.empty((len(rows), npy_files.PIXELS), dtype=np.uint8)
    # Sorting by (class, row) gives `read_rows` each class's rows ascending,
    # in file order.
    order = np.lexsort((rows, class_ids))
    sorted_ids = class_ids[order]
    bounds = np.flatnonzero(np.diff(sorted_ids)) + 1
    for chunk in np.split(order, bounds):
      if len(chunk):
        out[chunk] = self.read_rows(int(class_ids[chunk[0]]), rows[chunk])
    return out

  def gather_positions(self, index: SplitIndex,
                       positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Reads the drawings at `positions` of `index`: (images, labels)."""
    class_ids = index.class_ids[positions]
    return self.gather(class_ids, index.rows[positions]), class_ids

  def pictures_identity(self) -> str:
    """What the image folders' pictures hash to ("" without any)."""
    return "".join(f.identity() for f in self.files
                   if hasattr(f, "selected_rows"))

  def report_class_counts(self, class_weight: str) -> None:
    """Says how many training drawings each class has when they differ a
    lot (a folder of pictures beside QuickDraw's files), and what to do."""
    counts = self.split_counts(splits.Split.TRAIN)
    if not len(counts) or counts.max() <= 2 * max(counts.min(), 1):
      return
    logging.info("Training drawings per class: %s", ", ".join(
        f"{c} {n}" for c, n in zip(self.categories, counts)))
    if class_weight == "none":
      logging.warning(
          "the classes' training drawings range from %d (%r) to %d (%r): "
          "the head will favour the large ones; --class_weight=balanced "
          "weighs them alike", counts.min(),
          self.categories[counts.argmin()], counts.max(),
          self.categories[counts.argmax()])

  def summary(self) -> list[dict[str, object]]:
    """Per category: its file, rows in the file, rows used, split sizes."""
    per_split = {s: self.split_counts(s) for s in splits.Split}
    return [{
        "category": f.category,
        "file": f.path,
        "rows_in_file": len(f),
        "used": self.num_selected(i),
        **{s.value: int(per_split[s][i]) for s in splits.Split},
    } for i, f in enumerate(self.files)]


def _selected_rows(f, config: DataConfig) -> np.ndarray | None:
  """A file's rows in use, ascending; None for all of them. Files of
  pictures choose their own (`image_folders`); QuickDraw's are sampled."""
  if hasattr(f, "selected_rows"):
    return f.selected_rows(config.seed, config.samples_per_class)
  if splits.uses_all_rows(config.samples_per_class, len(f)):
    return None
  return splits.sample_rows(config.seed, f.category, len(f),
                            config.samples_per_class)


def positions_from_split(source: QuickDrawSource, split: splits.Split | str,
                         count: int) -> np.ndarray:
  """The positions in the split (its index, and its bottleneck cache's
  rows) of `drawings_from_split`'s drawings."""
  return splits.spread(source.split_size(split), count)


def drawings_from_split(source: QuickDrawSource, split: splits.Split | str,
                        count: int) -> tuple[np.ndarray, np.ndarray]:
  """Up to `count` drawings spread evenly over a split (which is sorted by
  class, so every class has its share).

  Returns:
    (uint8 (n, 784) drawings, int64 (n,) labels).
  """
  drawings, labels = source.read_positions(
      split, positions_from_split(source, split, count))
  return drawings, labels.astype(np.int64)
