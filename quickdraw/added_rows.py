"""What each training batch gets besides its own drawings.

Junk and other categories' doodles (trained to the none class), pen
re-draws of training drawings (their own labels), and mixes of two of the
batch's drawings' features (the none class when the two differ in class):
`AddedRows` holds their pools and counts for one run, and hands them to
`input_pipeline`, as 28x28 drawings for batches of pictures or as
bottleneck features for the head's batches from the cache.
"""

from __future__ import annotations

import os

import keras
import numpy as np
from absl import logging

from quickdraw import bottlenecks, outliers, redraws
from quickdraw import others as others_lib
from quickdraw.config import DataConfig, TrainConfig
from quickdraw.data_source import QuickDrawSource


class AddedRows:
  """The rows added to one run's training batches."""

  def __init__(self, source: QuickDrawSource, data: DataConfig,
               config: TrainConfig, others: others_lib.OtherDrawings,
               replicas: int):
    self.source, self.data, self.config = source, data, config
    self.others = others
    batch = config.train_batch_size
    # Each kind keeps its place (and so its draws' seed) whether or not
    # the kinds before it are on.
    self.per_batch = {
        "junk": outliers.per_batch(batch, config.junk_share, replicas),
        "others": outliers.per_batch(batch, config.other_share, replicas)
                  if len(others.exposure) else 0,
        "redraws": outliers.per_batch(batch, config.redraw_share, replicas)}
    # Mixes of features: the head's from the cache (`outliers.add_mixes`).
    self.feature_mixes = outliers.per_batch(batch, config.mix_share,
                                            replicas)
    # And when the backbone trains, if asked (`model.build_mixing_trainer`):
    # not over several replicas, whose slices of a batch cannot mix each
    # other's rows.
    self.picture_mixes = (outliers.per_batch(batch, config.mix_share)
                          if config.fine_tune_mixes and replicas == 1 else 0)
    self._pools: dict[str, tuple] = {}

  def _pool(self, name: str) -> tuple:
    """(28x28 drawings, labels or None) of one kind of added rows."""
    if name == "junk":
      return outliers.cached_junk_drawings(), None
    seed, folder = (self.config.seed_for(self.data),
                    os.path.expanduser(self.config.bottleneck_dir))
    if name == "others":
      return redraws.with_pen_redraws(self.others.exposure, seed + 1,
                                      folder), None
    return redraws.training_pool(self.source, self.config.redraw_share, seed,
                                 folder)

  def exposure(self, backbone: keras.Model | None = None) -> list[tuple]:
    """(pool, rows per batch, labels) of each kind of rows added to the
    training batches: junk and other categories' doodles (labels None: the
    none class), then pen re-draws of training drawings (their own
    labels), in that order, an empty pool for a kind that is off: 28x28
    drawings, or with `backbone` their bottleneck features (cached beside
    the splits')."""
    pools = []
    for name, count in self.per_batch.items():
      if not count:
        pools.append((np.zeros((0, 28, 28, 1), np.uint8), 0, None))
        continue
      if name not in self._pools:
        logging.info("Added to each training batch: %d %s", count, name)
        self._pools[name] = self._pool(name)
      drawings, labels = self._pools[name]
      if backbone is not None and f"{name} features" not in self._pools:
        self._pools[f"{name} features"] = bottlenecks.drawings_features(
            backbone, drawings, self.data.image_size,
            os.path.expanduser(self.config.bottleneck_dir), name=name)
      pools.append((self._pools[f"{name} features"] if backbone is not None
                    else drawings, count, labels))
    return pools
