"""How long and how fast each phase trains: its epochs and steps, its
learning rate over them, and how it is compiled."""

from __future__ import annotations

import math

import keras

from quickdraw import input_pipeline, losses
from quickdraw.config import TrainConfig


def head_schedule(num_train: int, config: TrainConfig,
                  drop_remainder: bool = False) -> tuple[int, int]:
  """(epochs, steps per epoch) for the head.

  An epoch is one pass over the training split; `how_many_training_steps`
  is rounded up to whole epochs so that every epoch sees every drawing once
  (all but the remainder, with `drop_remainder`).
  """
  steps = input_pipeline.batches_per_epoch(num_train, config.train_batch_size,
                                           drop_remainder)
  if config.how_many_training_steps:
    return math.ceil(config.how_many_training_steps / steps), steps
  return config.epochs, steps


Rate = float | keras.optimizers.schedules.LearningRateSchedule


def head_learning_rate(config: TrainConfig, total_steps: int) -> Rate:
  """The head's learning rate over its steps (`TrainConfig.head_schedule`).

  Decaying to zero lets the last epochs settle instead of bouncing around
  at the full rate; decaying from the first step halves what a short run
  learns (at 10 epochs a v1 head lost 2 points of canvas top-1 to it).
  Holding the rate first does both (scripts/README.md has the table).
  """
  rate = config.learning_rate
  total_steps = max(1, total_steps)
  if config.head_schedule == "cosine":
    return keras.optimizers.schedules.CosineDecay(rate, total_steps)
  if config.head_schedule == "hold_cosine":
    # Held for the first two thirds (a "warm-up" from the rate to itself),
    # then a cosine to zero over the last third.
    hold = (2 * total_steps) // 3
    return keras.optimizers.schedules.CosineDecay(
        rate, max(1, total_steps - hold), warmup_target=rate,
        warmup_steps=hold)
  return rate


def compile_model(model: keras.Model, learning_rate: Rate,
                  label_smoothing: float = 0.0,
                  steps_per_execution: int = 1) -> None:
  """Adam, the smoothed loss (`losses`) and top-1 over drawings."""
  # Weighted, so that the zero-weight padding of multi-replica evaluation
  # batches (input_pipeline.pad_batches) does not count.
  model.compile(optimizer=keras.optimizers.Adam(learning_rate),
                loss=losses.SparseCrossentropy(label_smoothing),
                weighted_metrics=[losses.DrawingAccuracy()],
                steps_per_execution=steps_per_execution)


def steps_per_execution(steps_per_epoch: int, most: int = 32) -> int:
  """Steps to run per call into TensorFlow: the largest divisor of
  `steps_per_epoch` up to `most`.

  A head step on cached features takes well under a millisecond of
  compute, so the per-call overhead dominates; bundling steps removes it.
  It must divide the epoch: Keras 3 runs whole bundles, and on an endless
  dataset a bundle across the epoch's end would take the next epoch's
  batches (and a resumed run would see other ones).
  """
  return max(d for d in range(1, min(most, steps_per_epoch) + 1)
             if steps_per_epoch % d == 0)


def fine_tune_learning_rate(config: TrainConfig, total_steps: int) -> Rate:
  """A short warm-up, then a cosine to zero: the head's first large
  gradients reach ImageNet's weights gently (at a constant rate the first
  epoch lost ground it took the rest to win back), and the last epochs
  settle."""
  return keras.optimizers.schedules.CosineDecay(
      0.0, total_steps, warmup_target=config.fine_tune_learning_rate,
      warmup_steps=max(1, total_steps // 20))
