import os

import keras
import numpy as np
import pytest

from quickdraw import bottlenecks, input_pipeline, model, preprocessing
from quickdraw.errors import QuickDrawError

SIZE = 64
REAL_FORWARD = bottlenecks.compiled_forward
TINY = model.Architecture(alpha=0.25, image_size=SIZE)


def _backbone(seed=0):
  keras.utils.set_random_seed(seed)
  return model.build_backbone(TINY, None)


@pytest.fixture(scope="module")
def backbone():
  return _backbone()


class CountingForward:
  """Wraps bottlenecks.compiled_forward to count (and maybe stop) calls."""

  def __init__(self, monkeypatch, stop_after=None):
    self.calls = 0

    def wrapped(net, image_size):
      infer = REAL_FORWARD(net, image_size)

      def counted(images):
        if stop_after is not None and self.calls >= stop_after:
          raise KeyboardInterrupt
        self.calls += 1
        return infer(images)
      return counted

    monkeypatch.setattr(bottlenecks, "compiled_forward", wrapped)


def test_second_run_reads_the_cache(make_source, backbone, tmp_path,
                                    monkeypatch):
  source = make_source()
  counter = CountingForward(monkeypatch)
  features, labels, computed = bottlenecks.load_or_compute(
      backbone, source, "train", SIZE, str(tmp_path), batch_size=32, verbose=0)
  assert computed and counter.calls == -(-len(labels) // 32)
  index = source.index("train")
  assert features.shape == (len(index), 256) and features.dtype == np.float32
  np.testing.assert_array_equal(labels, index.class_ids)
  # Features are the backbone's, in index order.
  images = next(iter(input_pipeline.make_dataset(
      source, "train", 5, image_size=SIZE, shuffle=False,
      value_range=preprocessing.SIGNED_RANGE)))[0]
  np.testing.assert_allclose(features[:5], backbone.predict(images, verbose=0),
                             atol=1e-5)

  counter.calls = 0
  again, labels2, computed = bottlenecks.load_or_compute(
      backbone, make_source(), "train", SIZE, str(tmp_path), verbose=0)
  assert not computed and counter.calls == 0  # no forward pass at all
  assert isinstance(again, np.memmap)
  np.testing.assert_array_equal(again, features)
  np.testing.assert_array_equal(labels2, labels)


@pytest.mark.parametrize("change", ["data", "weights", "split"])
def test_cache_is_rebuilt_when_its_inputs_change(make_source, backbone,
                                                 tmp_path, change):
  bottlenecks.load_or_compute(backbone, make_source(), "validation", SIZE,
                              str(tmp_path), verbose=0)
  net, source, split = backbone, make_source(), "validation"
  if change == "data":
    source = make_source(samples_per_class=150)
  elif change == "weights":
    net = _backbone(seed=1)
  else:
    split = "test"
  _, _, computed = bottlenecks.load_or_compute(net, source, split, SIZE,
                                               str(tmp_path), verbose=0)
  assert computed
  assert len(_entries(tmp_path)) == 2


def _entries(folder):
  """The cache's entries, without their lock files."""
  return [n for n in os.listdir(folder) if not n.endswith(".lock")]


def test_interrupted_computation_resumes(make_source, backbone, tmp_path,
                                         monkeypatch):
  source = make_source(samples_per_class=300)
  reference, _, _ = bottlenecks.load_or_compute(
      backbone, source, "train", SIZE, str(tmp_path / "ref"), batch_size=8,
      verbose=0)
  total_batches = -(-len(reference) // 8)
  assert total_batches > 2 * bottlenecks._PROGRESS_EVERY

  CountingForward(monkeypatch, stop_after=bottlenecks._PROGRESS_EVERY + 5)
  with pytest.raises(KeyboardInterrupt):
    bottlenecks.load_or_compute(backbone, source, "train", SIZE,
                                str(tmp_path / "c"), batch_size=8, verbose=0)
  [entry] = _entries(tmp_path / "c")
  assert "meta.json" not in os.listdir(tmp_path / "c" / entry)

  counter = CountingForward(monkeypatch)
  features, _, computed = bottlenecks.load_or_compute(
      backbone, source, "train", SIZE, str(tmp_path / "c"), batch_size=8,
      verbose=0)
  assert computed
  # Only what was not recorded as done is computed again.
  assert counter.calls == total_batches - bottlenecks._PROGRESS_EVERY
  np.testing.assert_allclose(features, reference, atol=1e-6)
  assert sorted(os.listdir(tmp_path / "c" / entry)) == [
      "features.npy", "labels.npy", "meta.json"]


def test_unwritable_bottleneck_dir(make_source, backbone, tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("")
  with pytest.raises(QuickDrawError) as e:
    bottlenecks.load_or_compute(backbone, make_source(), "test", SIZE,
                                str(blocker / "cache"), verbose=0)
  assert str(e.value) == (f"cannot write to --bottleneck_dir {blocker}/cache: "
                          "Not a directory; pass a writable folder")


def test_a_damaged_entry_is_computed_again(make_source, backbone, tmp_path,
                                           caplog, monkeypatch):
  source = make_source()
  reference, _, _ = bottlenecks.load_or_compute(
      backbone, source, "train", SIZE, str(tmp_path), verbose=0)
  reference = np.array(reference)
  [entry] = _entries(tmp_path)
  path = tmp_path / entry / "features.npy"
  with open(path, "r+b") as f:  # 4 KB of noise in the middle, as reported
    f.seek(path.stat().st_size // 2)
    f.write(np.random.default_rng(0).bytes(4096))
  counter = CountingForward(monkeypatch)
  features, _, computed = bottlenecks.load_or_compute(
      backbone, source, "train", SIZE, str(tmp_path), verbose=0)
  assert computed and counter.calls > 0
  np.testing.assert_allclose(features, reference, atol=1e-6)
  assert any("damaged bottleneck cache entry" in r.getMessage()
             for r in caplog.records)
  # Truncated (a machine crash), too.
  with open(path, "r+b") as f:
    f.truncate(path.stat().st_size // 3)
  features, _, computed = bottlenecks.load_or_compute(
      backbone, source, "train", SIZE, str(tmp_path), verbose=0)
  assert computed
  np.testing.assert_allclose(features, reference, atol=1e-6)


def test_a_full_disk_is_one_line_and_leaves_no_entry(make_source, backbone,
                                                     tmp_path, monkeypatch):
  import errno

  def full(fd, offset, length):
    raise OSError(errno.ENOSPC, "No space left on device")

  monkeypatch.setattr(os, "posix_fallocate", full)
  with pytest.raises(QuickDrawError) as e:
    bottlenecks.load_or_compute(backbone, make_source(), "train", SIZE,
                                str(tmp_path), verbose=0)
  message = str(e.value)
  assert message.startswith(f"no space left in {tmp_path} for the train "
                            "bottlenecks (about ")
  assert "MB needed" in message and "\n" not in message
  [entry] = _entries(tmp_path)
  assert os.listdir(tmp_path / entry) == []  # nothing a later run trusts
  monkeypatch.undo()
  _, _, computed = bottlenecks.load_or_compute(
      backbone, make_source(), "train", SIZE, str(tmp_path), verbose=0)
  assert computed


def test_a_log_file_gets_a_progress_line_every_tenth(make_source, backbone,
                                                     tmp_path, caplog):
  """verbose=2 (output not a terminal): besides Keras' one line at the
  end, a line each time another tenth of the split is done."""
  import logging as std_logging
  # On absl's own logger: another test in the same process may have left
  # absl's verbosity at warnings.
  caplog.set_level(std_logging.INFO, logger="absl")
  _, labels, _ = bottlenecks.load_or_compute(
      backbone, make_source(), "train", SIZE, str(tmp_path), batch_size=16,
      verbose=2)
  lines = [r.getMessage() for r in caplog.records
           if "drawings," in r.getMessage()]
  assert 5 <= len(lines) <= 9, lines
  assert lines[0].lstrip().split("%")[0].isdigit()
  assert f"of {len(labels)} drawings" in lines[-1]


def test_a_changed_image_folder_recomputes_only_its_class(
    data_dir, backbone, tmp_path, monkeypatch):
  """Adding pictures to one class folder (the demo's collect-and-retrain
  loop) computes that class's features; the other classes' come from the
  earlier entry, the same as computed afresh."""
  from PIL import Image
  from quickdraw.config import DataConfig
  from quickdraw.data_source import QuickDrawSource
  from quickdraw.testing import synthetic
  rows = synthetic.make_drawings(5, 60).reshape(60, 784)

  def add(label, first, last):
    os.makedirs(tmp_path / "pics" / label, exist_ok=True)
    for i in range(first, last):
      Image.fromarray(rows[i].reshape(28, 28)).save(
          tmp_path / "pics" / label / f"{i}.png")

  add("mine", 0, 40)
  add("yours", 0, 30)
  config = DataConfig(categories=("circle", "square"), data_dir=data_dir,
                      download=False, samples_per_class=100,
                      image_dir=str(tmp_path / "pics"),
                      other_categories="none")
  cache = str(tmp_path / "cache")
  bottlenecks.load_or_compute(backbone, QuickDrawSource.open(config),
                              "train", SIZE, cache, batch_size=32, verbose=0)
  add("mine", 40, 60)  # 20 more pictures of one class
  source = QuickDrawSource.open(config)
  counts = source.split_counts("train")
  computed_drawings = []
  real = REAL_FORWARD

  def counted_forward(net, image_size):
    infer = real(net, image_size)

    def run(images):
      computed_drawings.append(len(images))
      return infer(images)
    return run

  monkeypatch.setattr(bottlenecks, "compiled_forward", counted_forward)
  features, labels, computed = bottlenecks.load_or_compute(
      backbone, source, "train", SIZE, cache, batch_size=32, verbose=0)
  assert computed and sum(computed_drawings) == counts[2]  # "mine" alone
  fresh, fresh_labels, _ = bottlenecks.load_or_compute(
      backbone, source, "train", SIZE, str(tmp_path / "fresh"),
      batch_size=32, verbose=0)
  np.testing.assert_array_equal(labels, fresh_labels)
  np.testing.assert_allclose(features, fresh, atol=1e-6)
