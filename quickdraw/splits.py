"""Which drawings are used, and in which split each one falls.

The rule, as the README states it: a drawing is identified by its category
name and its row in that category's file. Two independent hashes of
(seed, category, row) give it

* a *split score* in [0, 100): below `validation_percentage` it is a
  validation drawing, below `validation_percentage + testing_percentage` a
  test drawing, otherwise a training drawing (retrain.py's rule, with rows in
  place of file names);
* a *sampling key* per block of SAMPLE_BLOCK_ROWS consecutive rows: with
  `samples_per_class=K`, the blocks with the smallest keys are used, whole,
  until K rows are reached (the last one's first rows). Whole blocks let a
  sampled run fetch its rows from a remote file in one request a block
  (`remote_rows`), and neighbouring rows of the official files are no more
  alike than any two (measured: the same pixel correlation).

Neither hash looks at any other drawing, category or flag, so raising
`samples_per_class` only adds drawings, adding categories changes nothing for
the others, and no drawing ever moves between splits. The hashes are
splitmix64 over numpy uint64 arrays: a file's 300,000 rows take milliseconds.
"""

from __future__ import annotations

import enum
import hashlib

import numpy as np


class Split(str, enum.Enum):
  TRAIN = "train"
  VALIDATION = "validation"
  TEST = "test"


# Rows sampled together: 32 rows are 25 KB, one HTTP request.
SAMPLE_BLOCK_ROWS = 32

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_MIX1 = np.uint64(0xBF58476D1CE4E5B9)
_MIX2 = np.uint64(0x94D049BB133111EB)


def _category_key(seed: int, category: str, purpose: str) -> np.uint64:
  # hashlib, not hash(): Python salts str hashes per process.
  digest = hashlib.sha256(f"{seed}\0{category}\0{purpose}".encode()).digest()
  return np.uint64(int.from_bytes(digest[:8], "little"))


def _splitmix64(x: np.ndarray) -> np.ndarray:
  with np.errstate(over="ignore"):
    x = x + _GOLDEN
    x = (x ^ (x >> np.uint64(30))) * _MIX1
    x = (x ^ (x >> np.uint64(27))) * _MIX2
    return x ^ (x >> np.uint64(31))


def _row_hash(seed: int, category: str, rows: np.ndarray,
              purpose: str) -> np.ndarray:
  key = _category_key(seed, category, purpose)
  with np.errstate(over="ignore"):
    return _splitmix64(np.asarray(rows, dtype=np.uint64) * _GOLDEN ^ key)


def split_scores(seed: int, category: str, rows: np.ndarray) -> np.ndarray:
  """Each row's split score, uniform in [0, 100)."""
  h = _row_hash(seed, category, rows, "split")
  return (h >> np.uint64(11)).astype(np.float64) * (100.0 / 2.0**53)


def assign_splits(seed: int, category: str, rows: np.ndarray,
                  validation_percentage: float,
                  testing_percentage: float) -> np.ndarray:
  """Returns each row's split name ("train", "validation", "test")."""
  scores = split_scores(seed, category, rows)
  out = np.full(scores.shape, Split.TRAIN.value, dtype="<U10")
  out[scores < validation_percentage + testing_percentage] = Split.TEST.value
  out[scores < validation_percentage] = Split.VALIDATION.value
  return out


def split_mask(seed: int, category: str, rows: np.ndarray, split: Split,
               validation_percentage: float,
               testing_percentage: float) -> np.ndarray:
  """A boolean mask of the rows that fall in `split`."""
  return in_split(split_scores(seed, category, rows), split,
                  validation_percentage, testing_percentage)


def in_split(scores: np.ndarray, split: Split, validation_percentage: float,
             testing_percentage: float) -> np.ndarray:
  """A boolean mask of the split scores that fall in `split`."""
  low, high = {
      Split.VALIDATION: (0.0, validation_percentage),
      Split.TEST: (validation_percentage,
                   validation_percentage + testing_percentage),
      # Up to 100 included: retrain.py's path scores reach it.
      Split.TRAIN: (validation_percentage + testing_percentage, np.inf),
  }[Split(split)]
  return (scores >= low) & (scores < high)


def spread(total: int, count: int) -> np.ndarray:
  """Up to `count` positions of `total`, evenly spread from the first to
  the last (int64, ascending, no repeats): a sample of a sorted-by-class
  split or a file that every part of it shares in."""
  return np.unique(np.linspace(0, total - 1, min(count, total)).round()
                   .astype(np.int64))


def uses_all_rows(samples_per_class: int, num_rows: int) -> bool:
  """Whether `samples_per_class` asks for every row of a `num_rows` file."""
  return samples_per_class <= 0 or samples_per_class >= num_rows


def sample_rows(seed: int, category: str, num_rows: int,
                samples_per_class: int) -> np.ndarray:
  """The rows of a file to use, ascending.

  Args:
    seed: The run's seed.
    category: The category name.
    num_rows: How many rows the file has.
    samples_per_class: How many to use; 0 (or at least `num_rows`) for all.

  Returns:
    int64 row indices, sorted, so reads sweep the file in order.
  """
  if uses_all_rows(samples_per_class, num_rows):
    return np.arange(num_rows, dtype=np.int64)
  size = SAMPLE_BLOCK_ROWS
  blocks = -(-num_rows // size)
  order = np.argsort(_row_hash(seed, category, np.arange(blocks),
                               "sample-block"), kind="stable")
  lengths = np.minimum(size, num_rows - order * size)
  used = int(np.searchsorted(np.cumsum(lengths), samples_per_class)) + 1
  rows = np.concatenate([np.arange(b * size, b * size + n) for b, n in
                         zip(order[:used], lengths[:used])])
  return np.sort(rows[:samples_per_class]).astype(np.int64)
