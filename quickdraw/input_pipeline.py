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
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from quickdraw import preprocessing
from quickdraw.data_source import QuickDrawSource, SplitIndex
from quickdraw.errors import QuickDrawError
from quickdraw.npy_files import PIXELS
from quickdraw.splits import Split

_FOREVER = 2**62


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
  if drop_remainder:
    num_batches = num_examples // batch_size
    if num_batches == 0:
      raise ValueError(
          f"batch size {batch_size} exceeds the split's {num_examples} drawings")
  else:
    num_batches = -(-num_examples // batch_size)

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

  return tf.data.Dataset.range(first_epoch, last).flat_map(one_epoch)


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


def make_dataset(source: QuickDrawSource, split: Split | str, batch_size: int,
                 *, image_size: int | None = None, shuffle: bool = True,
                 epochs: int | None = 1, first_epoch: int = 0,
                 drop_remainder: bool = False) -> tf.data.Dataset:
  """The input pipeline for one split.

  Args:
    source: The opened drawings.
    split: "train", "validation" or "test".
    batch_size: Drawings per batch.
    image_size: None for 28x28x1 uint8 drawings in [0, 255]; else the side
      of float32 RGB images in [-1, 1] (e.g. 224).
    shuffle: Shuffle across classes every epoch (seeded by the config's seed
      and the epoch number).
    epochs: Passes over the split; None for endless.
    first_epoch: The epoch to start at, for resuming.
    drop_remainder: Drop the last smaller batch of each epoch.

  Returns:
    A dataset of (images, labels) batches; labels are int32 class indices in
    `source.categories` order.
  """
  index = source.index(split)
  if len(index) == 0:
    raise QuickDrawError(
        f"the {Split(split).value} split has no drawings; raise "
        "--samples_per_class or that split's percentage")
  positions = epoch_position_batches(
      len(index), batch_size, shuffle=shuffle, seed=source.config.seed,
      epochs=epochs, first_epoch=first_epoch, drop_remainder=drop_remainder)
  ds = read_batches(source, index, positions)
  if image_size is not None:
    ds = ds.map(lambda x, y: (preprocessing.upsample_to_rgb(x, image_size), y),
                num_parallel_calls=tf.data.AUTOTUNE)
  return ds.prefetch(tf.data.AUTOTUNE)
