import os
import subprocess
import sys

import numpy as np
import pytest

from quickdraw import splits
from quickdraw.testing import synthetic
from quickdraw.config import DataConfig
from quickdraw.data_source import QuickDrawSource
from quickdraw.errors import QuickDrawError
from quickdraw.splits import Split


def _split_of(source):
  """{(category, row): split} over every split of `source`."""
  out = {}
  for split in Split:
    index = source.index(split)
    for c, r in zip(index.class_ids, index.rows):
      out[(source.categories[c], int(r))] = split
  return out


def test_more_samples_or_categories_never_move_a_drawing(tmp_path):
  names = ["circle", "square", "triangle", "line", "star"]
  synthetic.write_category_files(str(tmp_path), names, 400)

  def source(categories, samples):
    return QuickDrawSource.open(DataConfig(
        categories=categories, data_dir=str(tmp_path), download=False,
        samples_per_class=samples, seed=3))

  small = _split_of(source(names[:2], 100))
  large = _split_of(source(names[::-1], 300))  # more, and in another order
  everything = _split_of(source(names, 0))
  assert len(small) == 200 and len(large) == 1500 and len(everything) == 2000
  for drawing, split in small.items():
    assert large[drawing] == split  # raising samples only adds drawings
  for drawing, split in large.items():
    assert everything[drawing] == split


def test_split_depends_on_the_seed():
  rows = np.arange(1000)
  a = splits.assign_splits(0, "cat", rows, 10, 10)
  b = splits.assign_splits(1, "cat", rows, 10, 10)
  assert (a != b).mean() > 0.1


def test_split_proportions_follow_the_percentages():
  rows = np.arange(100_000)
  assigned = splits.assign_splits(0, "cat", rows, 15, 5)
  assert abs((assigned == "validation").mean() - 0.15) < 0.01
  assert abs((assigned == "test").mean() - 0.05) < 0.01
  for split in Split:
    np.testing.assert_array_equal(
        splits.split_mask(0, "cat", rows, split, 15, 5), assigned == split.value)


def test_split_is_the_same_in_every_process():
  # Python salts str hashes per process; the rule must not depend on that.
  code = ("from quickdraw import splits; import numpy as np; "
          "print(''.join(s[0] for s in splits.assign_splits("
          "7, 'smiley face', np.arange(60), 10, 10)))")
  outputs = {subprocess.run(
      [sys.executable, "-c", code], capture_output=True, text=True, check=True,
      env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in "12"}
  assert len(outputs) == 1
  here = "".join(s[0] for s in splits.assign_splits(
      7, "smiley face", np.arange(60), 10, 10))
  assert outputs == {here + "\n"}


def test_sampling_is_nested_and_sorted():
  few = splits.sample_rows(0, "cat", 5000, 100)
  more = splits.sample_rows(0, "cat", 5000, 1000)
  assert len(few) == 100 and len(more) == 1000
  assert np.all(np.diff(more) > 0)
  assert set(few) <= set(more)
  # Rows come from the whole file, not its start.
  assert more.max() > 4000 and more.min() < 1000
  np.testing.assert_array_equal(splits.sample_rows(0, "cat", 50, 100),
                                np.arange(50))
  np.testing.assert_array_equal(splits.sample_rows(0, "cat", 50, 0),
                                np.arange(50))


def test_every_class_gets_the_same_count_unless_short(tmp_path, caplog):
  synthetic.write_category_files(str(tmp_path), ["cat", "dog"], [500, 120])
  source = QuickDrawSource.open(DataConfig(
      categories=("cat", "dog"), data_dir=str(tmp_path), download=False,
      samples_per_class=200))
  assert [r["used"] for r in source.summary()] == [200, 120]
  assert ("'dog' has 120 drawings, fewer than --samples_per_class=200; "
          "using all of them") in caplog.text


@pytest.mark.parametrize("overrides, message", [
    (dict(samples_per_class=-1), "--samples_per_class=-1 is negative; pass a "
                                 "count, or 0 for every drawing"),
    (dict(validation_percentage=100), "--validation_percentage=100 is outside "
                                      "[0, 100); pass a percentage"),
    (dict(validation_percentage=60, testing_percentage=40),
     "--validation_percentage=60 plus --testing_percentage=40 leave no "
     "training drawings; keep their sum under 100"),
])
def test_bad_config_values(overrides, message):
  with pytest.raises(QuickDrawError) as e:
    DataConfig(categories=("cat",), **overrides)
  assert str(e.value) == message
