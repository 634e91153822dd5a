"""Pen re-draws of training drawings: what they look like, that they are
seeded per drawing and cached, and that they join the batches with their
own labels."""

import os

import numpy as np
import pytest

from quickdraw import input_pipeline, outliers, preprocessing, redraws
from quickdraw.config import DataConfig, TrainConfig
from quickdraw.data_source import QuickDrawSource
from quickdraw.errors import QuickDrawError
from quickdraw.splits import Split
from quickdraw.testing import synthetic

from conftest import CATEGORIES


def test_a_redraw_is_the_drawing_with_another_pen():
  # Twelve different figures.
  drawings = np.concatenate([synthetic.make_drawings(k, 1)
                             for k in range(12)]).reshape(-1, 28, 28)
  seen = redraws.pen_redraws(drawings, seed=1)
  assert seen.shape == (12, 28, 28, 1) and seen.dtype == np.uint8
  # The app's preprocessing found every drawing (none blanked).
  assert np.all(seen.reshape(12, -1).max(1) > 0)
  ink = lambda x: x.reshape(len(x), -1).astype(np.float32).mean(1)
  # Strokes of other widths: the amount of ink changes, and not all alike
  # (thin and thick pens both occur).
  change = ink(seen) / np.maximum(ink(drawings), 1)
  assert change.max() / change.min() > 1.5
  # Still the same drawing: nearer its own bitmap than the others'.
  framed = preprocessing.canvas_to_drawings(np.repeat(
      255 - drawings[..., None], 3, -1)).numpy().reshape(12, -1) / 255.0
  flat = seen.reshape(12, -1) / 255.0
  similarity = flat @ framed.T / np.outer(np.linalg.norm(flat, axis=1),
                                          np.linalg.norm(framed, axis=1))
  assert np.mean(similarity.argmax(1) == np.arange(12)) >= 0.75


def test_each_drawing_draws_from_its_own_seed():
  # Two chunks, drawn by two threads in either order: the same canvases.
  drawings = synthetic.make_drawings(1, 104)
  every = redraws.pen_redraws(drawings, seed=4)
  np.testing.assert_array_equal(every, redraws.pen_redraws(drawings, seed=4))
  assert not np.array_equal(every, redraws.pen_redraws(drawings, seed=5))


def test_cached_redraws_are_read_back(tmp_path, monkeypatch):
  drawings = synthetic.make_drawings(2, 8)
  first = redraws.cached_pen_redraws(drawings, 3, str(tmp_path))
  files = [n for n in os.listdir(tmp_path) if n.endswith(".npy")]
  assert len(files) == 1 and files[0].startswith("redraws-")
  # Another process (no re-draws in memory) reads them back.
  monkeypatch.setattr(redraws, "_MADE", {})
  monkeypatch.setattr(redraws, "pen_redraws", None)  # must not be called
  np.testing.assert_array_equal(
      redraws.cached_pen_redraws(drawings, 3, str(tmp_path)), first)
  monkeypatch.undo()
  monkeypatch.setattr(redraws, "_MADE", {})
  np.save(tmp_path / files[0], np.zeros_like(first))  # not what was written
  # A damaged entry (its sha256 no longer matches) is made again.
  np.testing.assert_array_equal(
      redraws.cached_pen_redraws(drawings, 3, str(tmp_path)), first)


def test_they_join_the_batches_with_their_labels(tmp_path):
  synthetic.write_category_files(str(tmp_path), CATEGORIES, 60)
  source = QuickDrawSource.open(DataConfig(
      categories=CATEGORIES, data_dir=str(tmp_path), download=False))
  pool = np.stack([np.full((28, 28, 1), 10 + k, np.uint8) for k in range(4)])
  ds = input_pipeline.make_dataset(
      source, Split.TRAIN, 16, shuffle=True, epochs=1, value_range=None,
      exposure=[(pool[:1], 2), (pool, 6, np.arange(4))])
  for x, labels in ds.take(3):
    x, labels = x.numpy(), labels.numpy()
    assert (labels[-8:-6] == outliers.JUNK_LABEL).all()
    # Each added row carries its own class: pool row k is class k.
    np.testing.assert_array_equal(x[-6:, 0, 0, 0] - 10, labels[-6:])


def test_the_share_is_checked():
  with pytest.raises(QuickDrawError, match="--redraw_share=1.5"):
    TrainConfig(redraw_share=1.5)
