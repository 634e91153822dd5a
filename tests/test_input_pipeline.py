"""The tf.data pipeline, on files whose pixels encode their (class, row)."""

import collections

import numpy as np
import pytest
import tensorflow as tf

from quickdraw import input_pipeline, preprocessing
from quickdraw.config import DataConfig
from quickdraw.data_source import QuickDrawSource
from quickdraw.errors import QuickDrawError
from quickdraw.splits import Split

NAMES = ("cat", "dog", "smiley face")
ROWS = (700, 400, 500)


@pytest.fixture(scope="module")
def tagged_dir(tmp_path_factory):
  """Files where pixel 0 is the class, pixels 1-2 the row (little endian)."""
  folder = tmp_path_factory.mktemp("tagged")
  for class_id, (name, rows) in enumerate(zip(NAMES, ROWS)):
    data = np.full((rows, 784), 200, np.uint8)
    data[:, 0] = class_id
    data[:, 1] = np.arange(rows) % 256
    data[:, 2] = np.arange(rows) // 256
    np.save(folder / f"{name}.npy", data)
  return str(folder)


@pytest.fixture(scope="module")
def source(tagged_dir):
  return QuickDrawSource.open(DataConfig(
      categories=NAMES, data_dir=tagged_dir, download=False,
      samples_per_class=300, seed=5))


def _decode(images):
  flat = np.asarray(images).reshape(len(images), -1)
  flat = flat.astype(int)
  return flat[:, 0], flat[:, 1] + 256 * flat[:, 2]


def _epoch(source, split, **kwargs):
  kwargs.setdefault("batch_size", 64)
  kwargs.setdefault("value_range", None)
  batches = list(input_pipeline.make_dataset(source, split, **kwargs))
  images = np.concatenate([b[0].numpy() for b in batches])
  labels = np.concatenate([b[1].numpy() for b in batches])
  return batches, images, labels


@pytest.mark.parametrize("split", list(Split))
def test_one_epoch_reads_each_drawing_of_the_split_once(source, split):
  batches, images, labels = _epoch(source, split)
  assert images.dtype == np.uint8 and images.shape[1:] == (28, 28, 1)
  assert labels.dtype == np.int32
  classes, rows = _decode(images)
  np.testing.assert_array_equal(classes, labels)  # label matches its image
  index = source.index(split)
  assert sorted(zip(classes, rows)) == sorted(
      zip(index.class_ids.tolist(), index.rows.tolist()))
  # Balance: each class contributes its share of the same 300 drawings.
  counts = np.bincount(labels, minlength=3)
  np.testing.assert_array_equal(counts, index.class_counts(3))
  share = {Split.TRAIN: 0.8, Split.VALIDATION: 0.1, Split.TEST: 0.1}[split]
  assert np.all(np.abs(counts - 300 * share) < 300 * 0.06)
  assert all(len(b[1]) == 64 for b in batches[:-1])


def test_batches_are_shuffled_across_classes_and_differ_by_epoch(source):
  ds = input_pipeline.make_dataset(source, "train", 50, epochs=2,
                                   value_range=None)
  batches = [b[1].numpy() for b in ds]
  per_epoch = len(batches) // 2
  first = np.concatenate(batches[:per_epoch])
  second = np.concatenate(batches[per_epoch:])
  assert len(set(batches[0].tolist())) == 3  # one batch holds every class
  assert collections.Counter(first) == collections.Counter(second)
  assert not np.array_equal(first, second)  # reshuffled each epoch


def test_shuffle_is_reproducible_and_resumable(source):
  def labels(**kwargs):
    ds = input_pipeline.make_dataset(source, "train", 32, value_range=None,
                                     **kwargs)
    return [(_decode(x)[1].tolist()) for x, _ in ds]

  three = labels(epochs=3)
  assert labels(epochs=3) == three  # same seed, same order
  per_epoch = len(three) // 3
  assert labels(epochs=1, first_epoch=2) == three[2 * per_epoch:]


def test_unshuffled_order_follows_the_index(source):
  _, images, labels = _epoch(source, "test", shuffle=False)
  index = source.index("test")
  np.testing.assert_array_equal(labels, index.class_ids)
  np.testing.assert_array_equal(_decode(images)[1], index.rows)


def test_drop_remainder_and_endless(source):
  n = len(source.index("validation"))
  batches, _, _ = _epoch(source, "validation", batch_size=16,
                         drop_remainder=True)
  assert len(batches) == n // 16 and all(len(b[1]) == 16 for b in batches)
  endless = input_pipeline.make_dataset(source, "validation", 16,
                                        epochs=None, value_range=None)
  assert sum(1 for _ in endless.take(3 * len(batches) + 1)) == (
      3 * len(batches) + 1)


@pytest.mark.parametrize("size", [128, 224])
def test_upsampled_batches(source, size):
  ds = input_pipeline.make_dataset(source, "test", 16, image_size=size,
                                   shuffle=False,
                                   value_range=preprocessing.SIGNED_RANGE)
  images, labels = next(iter(ds))
  assert images.shape == (16, size, size, 3) and images.dtype == tf.float32
  assert float(tf.reduce_min(images)) >= -1.0
  assert float(tf.reduce_max(images)) <= 1.0
  # Same as running the 28x28 stage, then the op eagerly.
  small, _ = next(iter(input_pipeline.make_dataset(source, "test", 16,
                                                   shuffle=False,
                                                   value_range=None)))
  np.testing.assert_allclose(
      images.numpy(), preprocessing.upsample_to_rgb(small, size).numpy(),
      atol=1e-6)


def test_reading_stage_matches_direct_gather(source):
  index = source.index("train")
  positions = np.array([5, 0, 200, 17, 5, 31], np.int64)
  eager, eager_labels = source.gather_positions(index, positions)
  ds = input_pipeline.read_batches(
      source, index, tf.data.Dataset.from_tensors(positions))
  images, labels = next(iter(ds))
  np.testing.assert_array_equal(images.numpy().reshape(6, 784), eager)
  np.testing.assert_array_equal(labels.numpy(), eager_labels)
  np.testing.assert_array_equal(
      eager, np.stack([source.files[c].drawings[r] for c, r in zip(
          index.class_ids[positions], index.rows[positions])]))


def test_empty_split_is_a_clear_error(tagged_dir):
  source = QuickDrawSource.open(DataConfig(
      categories=NAMES, data_dir=tagged_dir, download=False,
      testing_percentage=0))
  with pytest.raises(QuickDrawError) as e:
    input_pipeline.make_dataset(source, "test", 8, value_range=None)
  assert str(e.value) == ("the test split has no drawings; raise "
                          "--samples_per_class or that split's percentage")


@pytest.fixture
def small_blocks(monkeypatch):
  """Streaming in blocks of 16 rows, windows of 4 blocks: many of each."""
  monkeypatch.setattr(input_pipeline, "BLOCK_ROWS", 16)
  monkeypatch.setattr(input_pipeline, "WINDOW_BLOCKS", 4)


@pytest.fixture(scope="module")
def every_row_source(tagged_dir):
  return QuickDrawSource.open(DataConfig(
      categories=NAMES, data_dir=tagged_dir, download=False,
      samples_per_class=0, seed=3))


@pytest.mark.parametrize("which", ["sampled", "every_row"])
def test_streamed_epochs_read_each_drawing_once_and_reshuffle(
    small_blocks, source, every_row_source, which):
  source = source if which == "sampled" else every_row_source
  ds = input_pipeline.make_dataset(source, "train", 32, epochs=2, stream=True,
                                   value_range=None)
  batches = [(x.numpy(), y.numpy()) for x, y in ds]
  n = source.split_size("train")
  per_epoch = input_pipeline.batches_per_epoch(n, 32)
  assert len(batches) == per_epoch * 2 == int(ds.cardinality())
  index = source.index("train")
  expected = sorted(zip(index.class_ids.tolist(), index.rows.tolist()))
  epochs = []
  for e in range(2):
    images = np.concatenate([b[0] for b in batches[e * per_epoch:
                                                   (e + 1) * per_epoch]])
    labels = np.concatenate([b[1] for b in batches[e * per_epoch:
                                                   (e + 1) * per_epoch]])
    classes, rows = _decode(images)
    np.testing.assert_array_equal(classes, labels)
    assert sorted(zip(classes.tolist(), rows.tolist())) == expected
    epochs.append(list(zip(classes.tolist(), rows.tolist())))
  assert epochs[0] != epochs[1]  # reshuffled each epoch
  assert all(len(b[1]) == 32 for b in batches[:per_epoch - 1])
  # Windows mix blocks of several classes, so batches do too.
  assert np.mean([len(set(b[1].tolist())) > 1 for b in batches]) > 0.8


def test_streaming_is_reproducible_and_resumable(small_blocks,
                                                 every_row_source):
  def rows(**kwargs):
    ds = input_pipeline.make_dataset(every_row_source, "train", 50,
                                     stream=True, value_range=None, **kwargs)
    return [_decode(x)[1].tolist() for x, _ in ds]

  three = rows(epochs=3)
  assert rows(epochs=3) == three
  per_epoch = len(three) // 3
  assert rows(epochs=1, first_epoch=2) == three[2 * per_epoch:]


def test_large_splits_stream_without_an_index(small_blocks, monkeypatch,
                                              every_row_source):
  monkeypatch.setattr(input_pipeline, "INDEX_LIMIT", 100)

  def no_index(split):
    raise AssertionError("built an index of a large split")

  monkeypatch.setattr(every_row_source, "index", no_index)
  _, images, labels = _epoch(every_row_source, "train")
  assert len(labels) == every_row_source.split_size("train")
  np.testing.assert_array_equal(_decode(images)[0], labels)
  # Unshuffled passes stream in index order, which needs no index either.
  _, images, labels = _epoch(every_row_source, "test", shuffle=False)
  np.testing.assert_array_equal(labels, every_row_source.split_labels("test"))


def test_counts_and_positions_agree_with_the_index(every_row_source):
  for split in Split:
    index = every_row_source.index(split)
    np.testing.assert_array_equal(every_row_source.split_counts(split),
                                  index.class_counts(3))
    np.testing.assert_array_equal(every_row_source.split_labels(split),
                                  index.class_ids)
  index = every_row_source.index("test")
  positions = np.array([len(index) - 1, 0, 77, 3, 77])
  drawings, labels = every_row_source.read_positions("test", positions)
  expected, expected_labels = every_row_source.gather_positions(index,
                                                                positions)
  np.testing.assert_array_equal(drawings, expected)
  np.testing.assert_array_equal(labels, expected_labels)
  with pytest.raises(IndexError):
    every_row_source.read_positions("test", [len(index)])


def test_feature_batches_carry_exposure_rows_and_mixes_between_classes():
  from quickdraw import outliers
  classes, rows = 4, 64
  labels = np.arange(rows) % classes
  features = np.eye(classes, dtype=np.float32)[labels]  # class c: e_c
  junk = -np.ones((5, classes), np.float32)

  def batches(**kwargs):
    return [(x.numpy(), y.numpy()) for x, y in input_pipeline.feature_dataset(
        features, labels, 16, shuffle=True, seed=3,
        exposure=[(junk, 2)], mixes=6, **kwargs)]

  seen_between = seen_within = 0
  for x, y in batches(epochs=2):
    assert len(x) == 16 + 2 + 6
    assert (y[16:18] == outliers.JUNK_LABEL).all()
    mixes, mixed_labels = x[18:], y[18:]
    # Only the batch's drawings mix, never its junk (negative features).
    assert (mixes >= 0).all()
    np.testing.assert_allclose(mixes.sum(1), 1, atol=1e-6)
    for mix, label in zip(mixes, mixed_labels):
      parts = np.sort(mix[mix > 0])
      if len(parts) == 1:  # two drawings of one class: still that class
        assert label == mix.argmax()
        seen_within += 1
      else:  # two classes, 30% to 70% of each: none of them
        assert len(parts) == 2 and 0.3 <= parts[0] <= parts[1] <= 0.7
        assert label == outliers.JUNK_LABEL
        seen_between += 1
  assert seen_between > seen_within > 0
  # A resumed run's draws are an uninterrupted run's.
  for (x, y), (xr, yr) in zip(batches(epochs=2)[4:], batches(
      epochs=1, first_epoch=1)):
    np.testing.assert_array_equal(y, yr)
    np.testing.assert_allclose(x, xr)


def test_picture_batches_carry_the_pairs_feature_batches_mix():
  """Fine-tuning's mixes (the model mixes the features it makes) are drawn
  as the head's from cached features are."""
  from quickdraw import outliers
  labels = np.arange(16, dtype=np.int32) % 4
  features = np.random.default_rng(0).normal(size=(16, 8)).astype(np.float32)
  ds = tf.data.Dataset.from_tensors((features, labels)).repeat(3)
  mixed = list(outliers.add_mixes(ds, 5, seed=2, first_batch=7))
  paired = list(outliers.add_mix_pairs(ds, 5, seed=2, first_batch=7))
  for (x, y), ((pictures, pairs, shares), paired_labels) in zip(mixed,
                                                                paired):
    np.testing.assert_array_equal(pictures, features)
    np.testing.assert_array_equal(paired_labels, y)
    assert pairs.dtype == tf.int32 and pairs.shape == (5, 2)
    np.testing.assert_allclose(
        x[16:], shares * tf.gather(features, pairs[:, 0]) +
        (1 - shares) * tf.gather(features, pairs[:, 1]), rtol=1e-6)
  # A validation batch of a mixing model: the same structure, no mixes.
  (pictures, pairs, shares), y = next(iter(outliers.add_mix_pairs(ds, 0, 0)))
  assert pairs.shape == (0, 2) and shares.shape == (0, 1) and len(y) == 16


def test_mixes_of_a_batch_without_drawings_are_junk():
  from quickdraw import outliers
  ds = tf.data.Dataset.from_tensors((tf.ones([3, 2]), tf.fill(
      [3], tf.constant(outliers.JUNK_LABEL, tf.int32))))
  _, labels = next(iter(outliers.add_mixes(ds, 4, seed=0)))
  assert (labels.numpy() == outliers.JUNK_LABEL).all() and len(labels) == 7
