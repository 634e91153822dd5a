"""Outlier exposure: junk the classifier learns to answer without confidence.

A softmax classifier trained on doodles alone has never been told what a
non-doodle is, so noise, a photo's texture or a line of text gets whatever
class its features lean to, often above the app's score threshold. Outlier
exposure (Hendrycks, Mazeika and Dietterich, "Deep Anomaly Detection with
Outlier Exposure", ICLR 2019) adds pictures that are none of the classes to
the training batches, with the none class as their target
(`losses.softmax_with_none`; Hendrycks et al. used a uniform target over
the classes, which refused fewer doodles of unseen categories here): the
model learns to score them low on every class, so their top score falls
under the threshold while real drawings keep theirs.

The junk is `canvases.junk` (noise, gradients, textures, scribbles, text),
put through the same canvas preprocessing as the app's pictures, with seeds
of its own: the pictures the benchmarks and tests measure junk on are
others (seed 0 and up). That measures new pictures of the kinds trained
on; how little carries over to a kind never seen is measured in
scripts/README.md (the outlier-exposure experiment).
"""

import functools
import os

import numpy as np
import tensorflow as tf

from quickdraw import atomic_files
from quickdraw import canvases
from quickdraw import preprocessing

# The label of a junk picture: its target is the none class.
JUNK_LABEL = -1
# Seeds of the training junk: far from the measured junk's 0, 1, 2, ...
TRAIN_SEED = 7_919_000
# Each exposure pool's draws (junk, then other categories' doodles) are
# seeded this far apart.
POOL_SEED_STEP = 1_000_003
# Pictures drawn per kind for the training pool, and their canvas side.
POOL_PER_KIND = 400
CANVAS_SIDE = 256


@functools.lru_cache(maxsize=2)
def junk_drawings(per_kind: int = POOL_PER_KIND, seed: int = TRAIN_SEED,
                  kinds: tuple[str, ...] = canvases.JUNK_KINDS
                  ) -> np.ndarray:
  """Junk pictures as the canvas model sees them: 28x28 drawings.

  Pictures that the preprocessing already blanks (too little ink) are left
  out: the exported models answer those with equal scores anyway. Made
  once per process (about 10 s on 2 cores) and kept.

  Returns:
    uint8 (N, 28, 28, 1), N <= per_kind * len(kinds), read-only.
  """
  out = []
  read = preprocessing.canvas_reader(per_kind * len(kinds))
  for kind in kinds:
    pictures = canvases.junk(kind, per_kind, CANVAS_SIDE, seed=seed)
    for start in range(0, per_kind, 100):
      drawings = read(pictures[start:start + 100]).numpy()
      out.append(drawings[drawings.max(axis=(1, 2)) > 0])
  drawings = np.concatenate(out).astype(np.uint8)[..., None]
  drawings.flags.writeable = False
  return drawings


def cached_junk_drawings(folder: str | None = None) -> np.ndarray:
  """`junk_drawings()`, kept with their sha256 in `folder` (default: Keras'
  cache folder, `$KERAS_HOME` or `~/.keras`, under `quickdraw_junk`): they
  depend on no data and no backbone, so every run on the machine shares
  them and a new process does not make them again."""
  folder = os.path.expanduser(folder or os.path.join(
      os.environ.get("KERAS_HOME", os.path.join("~", ".keras")),
      "quickdraw_junk"))
  return atomic_files.cached_npy(
      os.path.join(folder, f"junk-drawings-{POOL_PER_KIND}-{TRAIN_SEED}-"
                   f"{CANVAS_SIDE}.npy"), junk_drawings)


def pool_seed(pool: int, seed: int) -> int:
  """The draws' seed of exposure pool number `pool` (0: the junk, whose
  seed is what it was before other pools existed)."""
  return TRAIN_SEED + pool * POOL_SEED_STEP + seed


def per_batch(batch_size: int, share: float, replicas: int = 1) -> int:
  """Junk pictures added to each batch of `batch_size` drawings: `share`
  of it, a multiple of `replicas` so that the batch still splits evenly."""
  if share <= 0:
    return 0
  return max(replicas, replicas * round(batch_size * share / replicas))


def add_junk(ds: tf.data.Dataset, pool: np.ndarray, count: int, seed: int,
             first_batch: int = 0, pool_labels: np.ndarray | None = None
             ) -> tf.data.Dataset:
  """Appends `count` rows of `pool` to each (x, labels) batch of `ds`, with
  labels JUNK_LABEL, or the rows' own `pool_labels` (pen re-draws of the
  training drawings: `redraws`).

  The rows of batch n are drawn from (seed, n) alone, so a run resumed at
  `first_batch` (its first epoch times the batches per epoch) sees the
  junk an uninterrupted run would have.

  Args:
    ds: Batches of (x, int32 labels); x's rows are like `pool`'s.
    pool: The junk: 28x28 drawings or bottleneck features.
    count: Rows per batch; 0 returns `ds` unchanged.
    seed: The draws' seed.
    first_batch: The number of `ds`'s first batch since training began.
    pool_labels: (N,) class indices of `pool`'s rows; None for junk.

  Returns:
    Batches of (x, labels) `count` rows longer.
  """
  if count <= 0 or not len(pool):
    return ds
  pool = tf.constant(pool)
  size = tf.constant(len(pool), tf.int64)
  if pool_labels is not None:
    pool_labels = tf.constant(np.asarray(pool_labels, np.int64))

  def append(batch_number, batch):
    x, labels = batch
    picks = tf.random.stateless_uniform(
        [count], tf.stack([tf.constant(seed, tf.int64), batch_number]),
        maxval=size, dtype=tf.int64)
    added = (tf.fill([count], tf.constant(JUNK_LABEL, labels.dtype))
             if pool_labels is None else
             tf.cast(tf.gather(pool_labels, picks), labels.dtype))
    return (tf.concat([x, tf.cast(tf.gather(pool, picks), x.dtype)], 0),
            tf.concat([labels, added], 0))

  return ds.enumerate(start=first_batch).map(
      append, num_parallel_calls=tf.data.AUTOTUNE)


# Where between two drawings' features a mix lies: far enough from both
# that it is neither (bench: 0.15 to 0.85 refused fewer unseen doodles).
MIX_RANGE = (0.3, 0.7)


def _mix_draws(labels: tf.Tensor, count: int, seed: int,
               batch_number: tf.Tensor, mix_range: tuple[float, float]):
  """(pairs (count, 2) of row indices, first shares (count, 1), labels)
  of `count` mixes of batch `batch_number`, whose labels are `labels`,
  drawn from (seed, batch number) alone."""
  low, high = mix_range
  draws = tf.stack([tf.constant(seed, tf.int64), batch_number])
  # Only the batch's drawings (and re-draws) mix, not its junk or doodles.
  known = tf.reshape(tf.where(labels != JUNK_LABEL), [-1])
  # An all-junk batch (none in training) would leave nothing to pick.
  size = tf.maximum(tf.size(known, tf.int64), 1)
  picks = tf.random.stateless_uniform([2, count], draws, maxval=size,
                                      dtype=tf.int64)
  picks = tf.gather(tf.concat([known, [0]], 0), picks)
  # Batch numbers are never negative: this stream is no batch's picks.
  share = tf.random.stateless_uniform(
      [count, 1], tf.stack([draws[0], -1 - batch_number]), low, high)
  first_label = tf.gather(labels, picks[0])
  added = tf.where(first_label == tf.gather(labels, picks[1]), first_label,
                   tf.constant(JUNK_LABEL, labels.dtype))
  return tf.transpose(picks), share, added


def add_mixes(ds: tf.data.Dataset, count: int, seed: int,
              first_batch: int = 0,
              mix_range: tuple[float, float] = MIX_RANGE) -> tf.data.Dataset:
  """Appends `count` mixes of two of each batch's drawings' features to
  it, with the none class (JUNK_LABEL) as their target when the two are
  of different classes, and the class when they are of the same one.

  A doodle of a category the model never saw tends to lie between the
  classes it knows, where nothing trains it to be unsure: the mixes fill
  that space (Zhang et al.'s mixup, 2018, with "none of these" for the
  target; scripts/README.md, "Other categories"). They need no other
  category's drawings, so an offline run has them too.

  Args:
    ds: Batches of (features, int32 labels) (bottleneck features: a mix of
      two pictures' pixels is not between their features; batches of
      pictures take `add_mix_pairs`).
    count: Mixes per batch; 0 returns `ds` unchanged.
    seed: The draws' seed; batch n's draws depend on (seed, n) alone, as
      `add_junk`'s do, so a resumed run sees what an uninterrupted one
      would have.
    first_batch: The number of `ds`'s first batch since training began.
    mix_range: The first drawing's share of a mix is drawn uniformly
      from this range.

  Returns:
    Batches of (features, labels) `count` rows longer.
  """
  if count <= 0:
    return ds

  def append(batch_number, batch):
    x, labels = batch
    pairs, share, added = _mix_draws(labels, count, seed, batch_number,
                                     mix_range)
    share = tf.cast(share, x.dtype)
    mixes = (share * tf.gather(x, pairs[:, 0]) +
             (1 - share) * tf.gather(x, pairs[:, 1]))
    return tf.concat([x, mixes], 0), tf.concat([labels, added], 0)

  return ds.enumerate(start=first_batch).map(
      append, num_parallel_calls=tf.data.AUTOTUNE)


def add_mix_pairs(ds: tf.data.Dataset, count: int, seed: int,
                  first_batch: int = 0,
                  mix_range: tuple[float, float] = MIX_RANGE
                  ) -> tf.data.Dataset:
  """What `add_mixes` draws, for batches of pictures: the model mixes
  their features (`model.AppendMixes`), since the backbone that makes
  them is training too.

  Args:
    ds: Batches of (pictures, int32 labels).
    count: Mixes per batch (0: none, in the same structure).
    seed, first_batch, mix_range: As `add_mixes`'; the same draws.

  Returns:
    Batches of ((pictures, pairs, shares), labels): `pairs` (count, 2)
    int32 rows of the batch to mix, `shares` (count, 1) float32 the first
    one's share, and the mixes' targets appended to the labels.
  """

  def append(batch_number, batch):
    x, labels = batch
    pairs, share, added = _mix_draws(labels, count, seed, batch_number,
                                     mix_range)
    return ((x, tf.cast(pairs, tf.int32), share),
            tf.concat([labels, added], 0))

  return ds.enumerate(start=first_batch).map(
      append, num_parallel_calls=tf.data.AUTOTUNE)


def add_exposure(ds: tf.data.Dataset, exposure, seed: int,
                 first_batch: int = 0, mixes: int = 0) -> tf.data.Dataset:
  """`ds` with each pool of `exposure` ((pool, rows per batch[, pool
  labels]) each, as `training._Run.exposure` gives them) appended to every
  batch (`add_junk`, pool i seeded by `pool_seed(i, seed)`), then `mixes`
  mixes of the batch's drawings' features (`add_mixes`, seeded as the
  pool after the last)."""
  for i, (pool, count, *pool_labels) in enumerate(exposure):
    ds = add_junk(ds, pool, count, pool_seed(i, seed), first_batch,
                  *pool_labels)
  return add_mixes(ds, mixes, pool_seed(len(exposure), seed), first_batch)
