"""Checks on the real QuickDraw subset in ../shared/data, when present."""

import os

import numpy as np
import pytest

from quickdraw import input_pipeline
from quickdraw.config import DataConfig
from quickdraw.data_source import QuickDrawSource

from conftest import SHARED_DATA

pytestmark = pytest.mark.skipif(
    not os.path.isdir(SHARED_DATA),
    reason=f"real QuickDraw files not found at {SHARED_DATA} (only in the "
           "development checkout, never committed)")

EXPECTED_ROWS = {"airplane": 8886, "smiley face": 5000, "train": 1000,
                 "cat": 4960}


def test_real_files_open_and_stream():
  source = QuickDrawSource.open(DataConfig(
      categories=tuple(EXPECTED_ROWS), data_dir=SHARED_DATA, download=False))
  assert [len(f) for f in source.files] == list(EXPECTED_ROWS.values())
  assert [r["used"] for r in source.summary()] == [1000] * 4
  images, labels = next(iter(input_pipeline.make_dataset(
      source, "train", 64, image_size=224)))
  assert images.shape == (64, 224, 224, 3)
  assert set(np.unique(labels)) <= {0, 1, 2, 3}
  # Real drawings: light ink on a black background.
  small, _ = next(iter(input_pipeline.make_dataset(source, "train", 64)))
  assert np.median(small.numpy()) == 0 and small.numpy().max() == 255
