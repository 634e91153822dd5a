"""Doodles of other things: QuickDraw categories outside the run.

An app that knows 10 kinds of drawing meets every other kind too. Drawings
of categories the run did not choose serve twice:

* outlier exposure: with `TrainConfig.other_share`, most of them join the
  training batches (`outliers.add_junk`, beside the junk), with their pen
  re-draws, trained to the none class (`losses.softmax_with_none`), so the
  model learns to give doodles of other things no confident answer;
* the threshold: the rest (`held_out`), categories no training batch used,
  are scored at calibration, so the threshold's "not sure" is measured on
  kinds of doodle the model never saw (`calibration.threshold_curve`).

Which categories (`DataConfig.other_categories`): by default every
official name not chosen, fetched by the row fetch (`remote_rows`); with
`--nodownload`, or when the fetch fails, whatever files the data folder
holds beyond the chosen ones. "none" turns it off; a list names them. Each
gives `drawings_per_category(count)` rows: ROWS in all, at least one
sampling block (32 rows, one request) and at most DRAWINGS_PER_CATEGORY of
each, so 335 categories give 32 each (10,720 drawings, 8.4 MB) and 100 or
fewer give 100.

Why every category, few drawings each: a doodle of a kind the training
batches held is refused far more often than one of a kind they did not
(frozen MobileNetV2 0.5, 10 categories: 80% of held-back drawings of the 6
exposure categories against 53% of 6 unseen ones), and 32 drawings of a
kind refused unseen doodles as well as 300 did (scripts/README.md, "Other
categories"). An app's user draws kinds from the same 345, so the more of
them training holds, the more of what users draw it has seen.
"""

from __future__ import annotations

import dataclasses
import hashlib
import sys
from collections.abc import Sequence

import numpy as np
from absl import logging

from quickdraw import categories as categories_lib
from quickdraw import image_folders
from quickdraw import npy_files
from quickdraw import splits
from quickdraw.config import DataConfig
from quickdraw.errors import QuickDrawError

AUTO, NONE = "", "none"
# Drawings of other categories in all, spread over them, and the most of
# one category (a short list, offline: the data folder's other files).
ROWS = 10_000
DRAWINGS_PER_CATEGORY = 100
# Of the other categories, about this share (by a hash of the name) is held
# out of training for the threshold; at least one when there are two or
# more.
HELD_OUT_SHARE = 0.25


@dataclasses.dataclass(frozen=True)
class OtherDrawings:
  """Drawings of other categories, uint8 (N, 784) each, and their names."""
  exposure: np.ndarray
  exposure_categories: tuple[str, ...]
  held_out: np.ndarray
  held_out_categories: tuple[str, ...]

  @property
  def categories(self) -> tuple[str, ...]:
    return self.exposure_categories + self.held_out_categories

  @property
  def drawings_per_category(self) -> int:
    """Rows read of each (`drawings_per_category` of their count)."""
    return drawings_per_category(len(self.categories))


NO_OTHERS = OtherDrawings(np.zeros((0, 784), np.uint8), (),
                          np.zeros((0, 784), np.uint8), ())


def chosen_names(data: DataConfig) -> set[str]:
  """The run's classes: its categories and its image folders' labels (a
  folder named for a QuickDraw category is never an other category)."""
  return set(data.categories) | set(
      image_folders.class_names(data.image_dir) if data.image_dir else ())


def unchosen_names(data: DataConfig) -> list[str]:
  """Every official category not chosen, in the official order: the
  default other categories."""
  chosen = chosen_names(data)
  return [n for n in categories_lib.official_categories() if n not in chosen]


def local_extras(data: DataConfig) -> list[str]:
  """Official categories with a file in the data folder, not chosen."""
  return [name for name in unchosen_names(data)
          if npy_files.find_category_file(data.data_dir, name)]


def drawings_per_category(count: int) -> int:
  """Rows of each of `count` other categories: ROWS spread over them, at
  least one sampling block (one request each) and at most
  DRAWINGS_PER_CATEGORY."""
  return min(DRAWINGS_PER_CATEGORY,
             max(splits.SAMPLE_BLOCK_ROWS, ROWS // max(count, 1)))


def choose(data: DataConfig) -> list[str]:
  """The other categories a run's setting names, before any fetch.

  Raises:
    QuickDrawError: a named category is unknown or one of the chosen ones.
  """
  setting = data.other_categories.strip()
  if setting.lower() == NONE:
    return []
  if setting == AUTO:
    return unchosen_names(data) if data.download else local_extras(data)
  names = [n.strip().strip('"').strip() for n in setting.split(",")
           if n.strip().strip('"').strip()]
  categories_lib.resolve_categories(names)  # unknown names: one line
  both = sorted(set(names) & chosen_names(data))
  if both:
    raise QuickDrawError(
        f"--other_categories names {', '.join(map(repr, both))}, which "
        "--categories (or --image_dir) chose too; an other category must be "
        "one the model does not learn")
  return names


def split_names(names: list[str], seed: int) -> tuple[list[str], list[str]]:
  """(exposure, held out): a name is held out when a hash of it and the
  seed falls in the first HELD_OUT_SHARE of the range, so adding names
  moves none; with two or more names and none held out so, the lowest
  hash is."""
  def position(name):
    digest = hashlib.sha256(f"{seed}\0{name}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0 ** 64
  held_out = {n for n in names if position(n) < HELD_OUT_SHARE}
  if not held_out and len(names) >= 2:
    held_out = {min(names, key=position)}
  return ([n for n in names if n not in held_out],
          [n for n in names if n in held_out])


def _drawings(data: DataConfig, names: list[str], per_category: int,
              rows_only: bool = False) -> np.ndarray:
  """`per_category` rows of each name, read from the data folder or
  fetched. With `rows_only`, categories not on disk come by row fetch
  alone (never a whole-file download), or the call fails."""
  from quickdraw import remote_rows  # no import circle
  from quickdraw.data_source import QuickDrawSource
  if not names:
    return np.zeros((0, 784), np.uint8)
  config = _rows_config(data, names, per_category)
  if rows_only:
    records = categories_lib.resolve_categories(names)
    absent = [r for r in records
              if not npy_files.find_category_file(data.data_dir, r.name)]
    fetched = remote_rows.open_sampled(absent, config, sys.stderr)
    if any(f is None for f in fetched):
      raise QuickDrawError("the server does not answer range requests")
  source = QuickDrawSource.open(config, progress_stream=sys.stderr)
  return np.concatenate([
      source.read_rows(c, source.selected_rows(c))
      for c in range(source.num_classes)]).reshape(-1, 784)


def _rows_config(data: DataConfig, names: Sequence[str], per_category: int
                 ) -> DataConfig:
  """The run's data settings, on `names` alone, taking `per_category` rows
  of each (the run's seed picks them) in one split."""
  return dataclasses.replace(
      data, categories=tuple(names), other_categories=NONE, image_dir="",
      samples_per_class=per_category, validation_percentage=0.0,
      testing_percentage=0.0)


def held_back(data: DataConfig, names: Sequence[str], per_category: int,
              count: int) -> np.ndarray:
  """`count` drawings of each of `names` (files in the data folder), spread
  over the rows a run with `data` did not read when it took
  `per_category` of each: new drawings of kinds its training batches or
  its threshold saw, as an app's users draw them."""
  from quickdraw.data_source import QuickDrawSource
  if not names:
    return np.zeros((0, 784), np.uint8)
  source = QuickDrawSource.open(dataclasses.replace(
      _rows_config(data, names, per_category), download=False))
  drawings = []
  for c in range(source.num_classes):
    rest = np.setdiff1d(np.arange(len(source.files[c])),
                        source.selected_rows(c))
    drawings.append(source.read_rows(c, rest[splits.spread(len(rest),
                                                           count)]))
  return np.concatenate(drawings).reshape(-1, 784)


def open_others(data: DataConfig, exposure: bool = True) -> OtherDrawings:
  """The run's other categories' drawings, split into exposure and held
  out (`choose`, `split_names`). Without `exposure` (a run that trains on
  none of them, or an export) the exposure categories are named but their
  drawings are not read or fetched.

  The default sample comes by row fetch only, and when the server does not
  answer (offline, a `file://` mirror) or a fetch fails, from the data
  folder's other files instead, with a warning. Named categories that
  cannot be had are an error, as the chosen ones are.
  """
  names = choose(data)
  if not names:
    return NO_OTHERS
  auto = data.other_categories.strip() == AUTO
  try:
    if auto and data.download:  # else names are the local files
      from quickdraw import remote_rows  # no import circle
      first = categories_lib.official_categories()[names[0]]
      if not remote_rows.answers_ranges(first, data):
        raise QuickDrawError(f"no answer from the server for {first.name!r}")
    trained, held_out = split_names(names, data.seed)
    per = drawings_per_category(len(names))
    result = OtherDrawings(
        _drawings(data, trained if exposure else [], per, auto),
        tuple(trained), _drawings(data, held_out, per, auto), tuple(held_out))
  except QuickDrawError as e:
    if not auto:
      raise
    extras = local_extras(data)
    logging.warning("Other categories (doodles to answer 'not sure' to) "
                    "not fetched (%s); using the %d other files in %s",
                    e, len(extras), data.data_dir)
    return open_others(dataclasses.replace(
        data, other_categories=",".join(extras) or NONE), exposure)
  logging.info("Other categories: %d for training batches, %d held out for "
               "the threshold", len(trained), len(held_out))
  return result


def describe(others: OtherDrawings) -> dict:
  """What run.json and the export report say of them."""
  return {"exposure": list(others.exposure_categories),
          "held_out": list(others.held_out_categories),
          "drawings_per_category": others.drawings_per_category}

