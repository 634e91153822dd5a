"""The tf.data pipeline: batches of (image, label) from memmapped drawings.

Order of the stages, and why:

1. Per epoch, a permutation of the split's positions, drawn statelessly from
   (seed, epoch): every epoch is shuffled across all classes, and a run that
   restarts at epoch E sees the very batches it would have seen.
2. The permutation is cut into batches of positions *before* any drawing is
   read, so reading is per batch: one numpy call per category per batch.
3. Reading (`tf.numpy_function` over the memmaps) runs in parallel.
4. Upsampling, when asked for, runs after batching: two batched matrix
   products are far cheaper than per-image resizes.
5. Prefetch last, so the model never waits on the host.

Nothing is cached at the larger size; the 28x28 uint8 stage is available on
its own (`image_size=None`).

Large splits (over `INDEX_LIMIT` drawings, such as all 345 categories with
`--samples_per_class=0`: 40 million training drawings) and unshuffled passes
skip the index and the global permutation: `stream_batches` reads files in
blocks of consecutive rows (sequential reads), visits the blocks in a
shuffled order, and shuffles the drawings of a window of blocks from many
classes, the way sharded datasets are streamed. Memory stays at a few
windows, whatever the split's size.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from quickdraw import outliers
from quickdraw import preprocessing
from quickdraw.data_source import QuickDrawSource, SplitIndex
from quickdraw.errors import QuickDrawError
from quickdraw.npy_files import PIXELS
from quickdraw.splits import Split

_FOREVER = 2**62

# Shuffled splits up to this size use an index and an exact permutation per
# epoch (6 + 4 bytes a drawing); larger ones stream (`stream_batches`).
INDEX_LIMIT = 4_000_000
# Unshuffled single passes over cached features up to this size are served
# from memory (`feature_dataset`).
_IN_MEMORY_FEATURES = 256 * 2**20
# Streaming: rows per block (200 KB read in one go) and blocks per window
# (about 26,000 drawings, 20 MB, drawn from up to 128 classes).
BLOCK_ROWS = 256
WINDOW_BLOCKS = 128


def batches_per_epoch(num_examples: int, batch_size: int,
                      drop_remainder: bool = False) -> int:
  """Batches in one pass over `num_examples` (at least 1)."""
  if drop_remainder:
    if num_examples < batch_size:
      raise ValueError(
          f"batch size {batch_size} exceeds the split's {num_examples} drawings")
    return num_examples // batch_size
  return -(-num_examples // batch_size)


def epoch_position_batches(num_examples: int, batch_size: int, *,
                           shuffle: bool, seed: int, epochs: int | None,
                           first_epoch: int = 0,
                           drop_remainder: bool = False) -> tf.data.Dataset:
  """Batches of positions into a split, epoch after epoch.

  Args:
    num_examples: Size of the split.
    batch_size: Positions per batch.
    shuffle: Shuffle each epoch (by (seed, epoch)); else keep index order.
    seed: The shuffle seed.
    epochs: How many epochs; None repeats forever.
    first_epoch: Epoch number to start at (resuming a run).
    drop_remainder: Drop each epoch's last, smaller batch.

  Returns:
    A dataset of int32 vectors of positions (int64 past 2**31 drawings).
  """
  if num_examples == 0:
    raise ValueError("the split is empty")
  last = _FOREVER if epochs is None else first_epoch + epochs
  num_batches = batches_per_epoch(num_examples, batch_size, drop_remainder)

  # int32 halves the per-epoch permutation (32 MB for 8 million drawings).
  dtype = tf.int32 if num_examples < 2**31 else tf.int64

  def one_epoch(epoch):
    positions = tf.range(num_examples, dtype=dtype)
    if shuffle:
      positions = tf.random.experimental.stateless_shuffle(
          positions, seed=tf.stack([tf.constant(seed, tf.int64), epoch]))
    # Slicing a captured permutation is much faster than
    # from_tensor_slices(...).batch(...), which handles scalars one by one.
    return tf.data.Dataset.range(num_batches, output_type=dtype).map(
        lambda b: positions[b * batch_size:(b + 1) * batch_size])

  ds = tf.data.Dataset.range(first_epoch, last).flat_map(one_epoch)
  if epochs is not None:
    # flat_map hides the length; Keras needs it to end validation passes
    # cleanly (it warns "ran out of data" otherwise).
    ds = ds.apply(tf.data.experimental.assert_cardinality(epochs * num_batches))
  return ds


def read_batches(source: QuickDrawSource, index: SplitIndex,
                 positions: tf.data.Dataset) -> tf.data.Dataset:
  """Maps batches of positions to (uint8 (B, 28, 28, 1), int32 (B,)) batches."""

  def read(pos):
    images, labels = source.gather_positions(index, pos)
    return images, labels.astype(np.int32)

  def read_op(pos):
    images, labels = tf.numpy_function(read, [pos], [tf.uint8, tf.int32],
                                       stateful=False)
    images.set_shape([None, PIXELS])
    labels.set_shape([None])
    return preprocessing.rows_to_images(images), labels

  return positions.map(read_op, num_parallel_calls=tf.data.AUTOTUNE)


def stream_batches(source: QuickDrawSource, split: Split | str,
                   batch_size: int, *, shuffle: bool, seed: int,
                   epochs: int | None, first_epoch: int = 0,
                   drop_remainder: bool = False, block_rows: int | None = None,
                   window_blocks: int | None = None) -> tf.data.Dataset:
  """(uint8 (B, 28, 28, 1), int32 (B,)) batches, read block by block.

  No index of the split is built: each class's rows in use are cut into
  blocks of `block_rows` consecutive positions, whose split members are
  found by hashing just that block.

  Unshuffled, blocks are read in order, so the drawings come in index order
  (class, then row) exactly as `source.index(split)` lists them. Shuffled,
  each epoch visits the blocks in a permutation drawn from (seed, epoch), and
  the drawings of each window of `window_blocks` blocks are permuted by
  (seed, epoch, window) before batching: every drawing once per epoch, a
  different order each epoch, and the same order when a run resumes.

  Args: as `epoch_position_batches`, plus the block and window sizes (None:
    `BLOCK_ROWS`, `WINDOW_BLOCKS`).
  """
  split = Split(split)
  block_rows = block_rows or BLOCK_ROWS
  window_blocks = window_blocks or WINDOW_BLOCKS
  num_examples = source.split_size(split)
  if num_examples == 0:
    raise ValueError("the split is empty")
  blocks = [(c, start) for c in range(source.num_classes)
            for start in range(0, source.num_selected(c), block_rows)]
  block_class = np.array([c for c, _ in blocks], np.int32)
  block_start = np.array([s for _, s in blocks], np.int64)
  num_windows = -(-len(blocks) // window_blocks)
  last = _FOREVER if epochs is None else first_epoch + epochs
  seed_word = seed % 2**32

  def read_window(block_ids, epoch, window):
    block_ids = np.sort(block_ids)  # file order within the window
    rows = [source.split_rows(int(block_class[b]), split,
                              int(block_start[b]),
                              int(block_start[b]) + block_rows)
            for b in block_ids]
    n = sum(len(r) for r in rows)
    # Where each drawing goes: its place in a permutation of the window, or
    # in order. Writing every block straight there keeps one window-sized
    # array, not three (read, joined, shuffled).
    place = (np.random.default_rng([seed_word, epoch, window]).permutation(n)
             if shuffle else np.arange(n))
    images = np.empty((n, PIXELS), np.uint8)
    labels = np.empty(n, np.int32)
    offset = 0
    for b, r in zip(block_ids, rows):
      c = int(block_class[b])
      here = place[offset:offset + len(r)]
      images[here] = source.read_rows(c, r)
      labels[here] = c
      offset += len(r)
    return images, labels

  def one_epoch(epoch):
    ids = tf.range(len(blocks), dtype=tf.int64)
    if shuffle:
      ids = tf.random.experimental.stateless_shuffle(
          ids, seed=tf.stack([tf.constant(seed, tf.int64), epoch]))

    def window(w):
      images, labels = tf.numpy_function(
          read_window, [ids[w * window_blocks:(w + 1) * window_blocks], epoch,
                        w], [tf.uint8, tf.int32], stateful=False)
      images.set_shape([None, PIXELS])
      labels.set_shape([None])
      return images, labels

    # Two windows in flight: enough to overlap reads (one reads at over a
    # million drawings/s), and memory stays bounded on many-core machines.
    return tf.data.Dataset.range(num_windows).map(
        window, num_parallel_calls=min(2, os.cpu_count() or 1),
        deterministic=True).rebatch(batch_size, drop_remainder=drop_remainder)

  ds = tf.data.Dataset.range(first_epoch, last).flat_map(one_epoch)
  ds = ds.map(lambda x, y: (preprocessing.rows_to_images(x), y))
  if epochs is not None:
    ds = ds.apply(tf.data.experimental.assert_cardinality(
        epochs * batches_per_epoch(num_examples, batch_size, drop_remainder)))
  return ds


def make_dataset(source: QuickDrawSource, split: Split | str, batch_size: int,
                 *, image_size: int | None = None, shuffle: bool = True,
                 epochs: int | None = 1, first_epoch: int = 0,
                 drop_remainder: bool = False, augment: bool = False,
                 stream: bool | None = None,
                 value_range: tuple[float, float] | None,
                 exposure: Sequence[tuple] = (), mixes: int | None = None
                 ) -> tf.data.Dataset:
  """The input pipeline for one split.

  Args:
    source: The opened drawings.
    split: "train", "validation" or "test".
    batch_size: Drawings per batch.
    image_size: None for 28x28x1 uint8 drawings in [0, 255]; else the side
      of float32 RGB images in `value_range` (e.g. 224).
    shuffle: Shuffle across classes every epoch (seeded by the config's seed
      and the epoch number).
    epochs: Passes over the split; None for endless.
    first_epoch: The epoch to start at, for resuming.
    drop_remainder: Drop the last smaller batch of each epoch.
    augment: Randomly rotate, zoom and shift each drawing while upsampling
      (needs `image_size`). The draws are seeded by the seed and the batch's
      number since the first epoch, so a resumed run repeats them.
    stream: Read block by block without an index (`stream_batches`); None
      streams unshuffled passes and splits over `INDEX_LIMIT` drawings.
    value_range: The images' values: the backbone's input range
      (`backbones`); None only without `image_size` (uint8 drawings).
    exposure: For training, (pool, count[, labels]) tuples: `count`
      drawings of each pool (uint8 (N, 28, 28, 1)) are appended to each
      batch, before upsampling and augmentation, with label
      `outliers.JUNK_LABEL` (none of the classes: `outliers`' junk, other
      categories' doodles) or their own `labels` (pen re-draws:
      `redraws`).
    mixes: None for (images, labels) batches; else ((images, pairs,
      shares), labels) for a model that mixes features
      (`model.build_mixing_trainer`), with this many pairs of each batch's
      drawings (`outliers.add_mix_pairs`; 0 for its validation).

  Returns:
    A dataset of (images, labels) batches, or ((images, pairs, shares),
    labels) with `mixes`; labels are int32 class indices in
    `source.categories` order.
  """
  num_examples = source.split_size(split)
  if num_examples == 0:
    raise QuickDrawError(
        f"the {Split(split).value} split has no drawings; raise "
        "--samples_per_class or that split's percentage")
  if stream is None:
    stream = not shuffle or num_examples > INDEX_LIMIT
  schedule = dict(shuffle=shuffle, seed=source.config.seed, epochs=epochs,
                  first_epoch=first_epoch, drop_remainder=drop_remainder)
  if stream:
    ds = stream_batches(source, split, batch_size, **schedule)
  else:
    index = source.index(split)
    ds = read_batches(source, index, epoch_position_batches(
        num_examples, batch_size, **schedule))
  seed = source.config.seed
  first_batch = first_epoch * batches_per_epoch(num_examples, batch_size,
                                                drop_remainder)
  if image_size is not None and value_range is None:
    raise ValueError("images need a value_range (the backbone's input range)")
  ds = outliers.add_exposure(ds, exposure, seed, first_batch)
  if augment:
    if image_size is None:
      raise ValueError("augment needs an image_size")

    def distort(batch_number, batch):
      images, labels = batch
      return preprocessing.random_affine_upsample_to_rgb(
          images, image_size, tf.stack([tf.constant(seed, tf.int64),
                                        batch_number]), value_range), labels

    ds = ds.enumerate(start=first_batch).map(
        distort, num_parallel_calls=tf.data.AUTOTUNE)
  elif image_size is not None:
    ds = ds.map(lambda x, y: (preprocessing.upsample_to_rgb(
        x, image_size, value_range), y), num_parallel_calls=tf.data.AUTOTUNE)
  if mixes is not None:
    # Seeded as `feature_dataset`'s mixes: the pool after the last.
    ds = outliers.add_mix_pairs(ds, mixes,
                                outliers.pool_seed(len(exposure), seed),
                                first_batch)
  return ds.prefetch(tf.data.AUTOTUNE)


def with_class_weights(ds: tf.data.Dataset, counts: np.ndarray
                       ) -> tf.data.Dataset:
  """(x, labels) batches -> (x, labels, sample weights): each drawing
  weighs N / (classes x its class's count) of the classes' training
  `counts` (scikit-learn's "balanced"), junk (a negative label) 1."""
  counts = np.asarray(counts, np.float64)
  table = tf.constant(
      (counts.sum() / (len(counts) * np.maximum(counts, 1))).astype(
          np.float32))

  def weigh(x, labels):
    known = labels >= 0
    picked = tf.gather(table, tf.where(known, labels, tf.zeros_like(labels)))
    return x, labels, tf.where(known, picked, tf.ones_like(picked))

  return ds.map(weigh, num_parallel_calls=tf.data.AUTOTUNE)


def pad_batches(ds: tf.data.Dataset, multiple: int) -> tf.data.Dataset:
  """Pads each batch to a multiple of `multiple` rows, with zero weights.

  For evaluation over several replicas: Keras 3 fails on a batch that does
  not split evenly over them (an AddN shape error), and a pass must not drop
  drawings. The padding repeats the batch's first rows and gets sample
  weight 0, so losses and weighted metrics count every drawing once.

  Returns:
    A dataset of (x, y, weights) batches.
  """

  def pad(x, y):
    size = tf.shape(y)[0]
    extra = (multiple - size % multiple) % multiple
    fill = tf.range(extra) % tf.maximum(size, 1)
    weights = tf.concat([tf.ones([size]), tf.zeros([extra])], 0)
    return (tf.concat([x, tf.gather(x, fill)], 0),
            tf.concat([y, tf.gather(y, fill)], 0), weights)

  return ds.map(pad)


def untuned() -> tf.data.Options:
  """Options for short, finite passes: tf.data's autotuning off.

  Reading 28x28 drawings or cached features is far faster than the model
  that consumes them, so tuning buys nothing; and an autotuned iterator can
  take over a second to shut down (its tuning thread wakes on a timer),
  which was measured as 1.4 s lost on one pass in three.
  """
  options = tf.data.Options()
  options.autotune.enabled = False
  return options


def feature_dataset(features: np.ndarray, labels: np.ndarray,
                    batch_size: int, *, shuffle: bool, seed: int,
                    epochs: int | None = 1, first_epoch: int = 0,
                    drop_remainder: bool = False,
                    exposure: Sequence[tuple] = (),
                    mixes: int = 0) -> tf.data.Dataset:
  """Batches of cached bottleneck features, shuffled like `make_dataset`,
  with its exposure rows and mixes of the batch's own features.

  Args:
    features: float32 (N, D), typically a memmap of the bottleneck cache;
      only the rows of each batch are read.
    labels: int (N,) class indices.
    batch_size: Rows per batch.
    shuffle: Shuffle every epoch, seeded by (seed, epoch).
    seed: The shuffle seed.
    epochs: Passes; None for endless.
    first_epoch: The epoch to start at, for resuming.
    drop_remainder: Drop each epoch's last, smaller batch.
    exposure: As `make_dataset`'s, of features (seeded alike).
    mixes: Mixes of two of each batch's drawings' features added to it
      (`outliers.add_mixes`), after the exposure rows.

  Returns:
    A dataset of (float32 (B, D), int32 (B,)) batches.
  """
  labels = np.asarray(labels, np.int32)
  dim = features.shape[1]
  if (not shuffle and epochs == 1 and not first_epoch and not drop_remainder
      and not exposure and not mixes
      and features.nbytes <= _IN_MEMORY_FEATURES):
    # A small single pass (validation, test) from memory: each epoch's
    # validation in `fit` then costs a third as much (measured 1.3 s
    # against 2.0 s for 30 epochs of a 1,000-drawing split).
    return tf.data.Dataset.from_tensor_slices(
        (np.asarray(features, np.float32), labels)).batch(batch_size)

  def read(pos):
    # Reading rows in file order is kinder to a memmap than shuffled order.
    order = np.argsort(pos)
    out = np.empty((len(pos), dim), np.float32)
    out[order] = features[pos[order]]
    return out, labels[pos]

  def read_op(pos):
    x, y = tf.numpy_function(read, [pos], [tf.float32, tf.int32],
                             stateful=False)
    x.set_shape([None, dim])
    y.set_shape([None])
    return x, y

  positions = epoch_position_batches(len(labels), batch_size, shuffle=shuffle,
                                     seed=seed, epochs=epochs,
                                     first_epoch=first_epoch,
                                     drop_remainder=drop_remainder)
  ds = positions.map(read_op, num_parallel_calls=tf.data.AUTOTUNE)
  first_batch = first_epoch * batches_per_epoch(len(labels), batch_size,
                                                drop_remainder)
  ds = outliers.add_exposure(ds, exposure, seed, first_batch, mixes)
  return ds.prefetch(tf.data.AUTOTUNE).with_options(untuned())
