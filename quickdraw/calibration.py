"""Scores an app can trust: temperature scaling and a score threshold.

A network trained with label smoothing on drawings is not calibrated: its
top score says little about how often it is right. The export fits one
temperature T on validation drawings (Guo et al., "On Calibration of Modern
Neural Networks", 2017), folds it into the softmax layer's weights (logits
/ T: no new op, every artifact calibrated alike), reports the expected
calibration error before and after, and derives the score above which the
answers are right often enough (`score_threshold`), which apps pass to
MediaPipe's `setScoreThreshold` and predict and the demo call "not sure".
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

ECE_BINS = 15
TARGET_PRECISION = 0.95
# The threshold stays this far above equal scores (1 / classes), which is
# what the models answer for a drawing with nothing to classify.
ABOVE_EQUAL_SCORES = 0.05
SOFTMAX_LAYER = "final_result"


def rescale(probabilities: np.ndarray, temperature: float) -> np.ndarray:
  """softmax(logits / T) from softmax(logits): log p is the logits less a
  per-row constant, which softmax ignores."""
  logits = np.log(np.maximum(np.asarray(probabilities, np.float64), 1e-30))
  logits = logits / temperature
  logits -= logits.max(1, keepdims=True)
  e = np.exp(logits)
  return (e / e.sum(1, keepdims=True)).astype(np.float32)


def negative_log_likelihood(probabilities: np.ndarray,
                            labels: np.ndarray) -> float:
  p = np.asarray(probabilities)[np.arange(len(labels)), labels]
  return float(-np.mean(np.log(np.maximum(p, 1e-30))))


# Temperatures searched. Held-out drawings that the network gets all right
# would push T towards 0 (every score 1.0); sharpening is capped at 4x.
MIN_TEMPERATURE, MAX_TEMPERATURE = 0.25, 20.0


def fit_temperature(probabilities: np.ndarray, labels: np.ndarray) -> float:
  """The T in [MIN_TEMPERATURE, MAX_TEMPERATURE] that minimises the
  negative log-likelihood of `labels` under `rescale(probabilities, T)`: a
  grid in log T, then a finer one around the best."""
  labels = np.asarray(labels, np.int64)
  grid = np.exp(np.linspace(np.log(MIN_TEMPERATURE), np.log(MAX_TEMPERATURE),
                            61))
  for _ in range(2):
    losses = [negative_log_likelihood(rescale(probabilities, t), labels)
              for t in grid]
    best = int(np.argmin(losses))
    low, high = grid[max(best - 1, 0)], grid[min(best + 1, len(grid) - 1)]
    grid = np.exp(np.linspace(np.log(low), np.log(high), 21))
  losses = [negative_log_likelihood(rescale(probabilities, t), labels)
            for t in grid]
  return float(grid[int(np.argmin(losses))])


def expected_calibration_error(probabilities: np.ndarray, labels: np.ndarray,
                               bins: int = ECE_BINS) -> float:
  """How far the top score is from the accuracy, averaged over `bins`
  equal-width bins of the top score, weighted by their drawings."""
  probabilities = np.asarray(probabilities)
  scores = probabilities.max(1)
  correct = probabilities.argmax(1) == np.asarray(labels)
  which = np.minimum((scores * bins).astype(np.int64), bins - 1)
  error = 0.0
  for b in range(bins):
    inside = which == b
    if inside.any():
      error += inside.mean() * abs(correct[inside].mean() -
                                   scores[inside].mean())
  return float(error)


def score_threshold(probabilities: np.ndarray, labels: np.ndarray,
                    precision: float = TARGET_PRECISION) -> float:
  """The lowest top score above which at least `precision` of the answers
  are right (the most answers an app can give at that precision).

  Never below equal scores plus ABOVE_EQUAL_SCORES, so a drawing with
  nothing to classify stays below it.
  """
  probabilities = np.asarray(probabilities)
  scores = probabilities.max(1)
  correct = probabilities.argmax(1) == np.asarray(labels)
  order = np.argsort(-scores, kind="stable")
  right = np.cumsum(correct[order]) / np.arange(1, len(order) + 1)
  meets = np.flatnonzero(right >= precision)
  floor = 1.0 / probabilities.shape[1] + ABOVE_EQUAL_SCORES
  if not len(meets):  # never right often enough: nothing passes
    return float(max(np.nextafter(np.float32(scores.max()), np.float32(2)),
                     floor))
  # Round down a little so the score at the boundary is kept in float32.
  threshold = float(scores[order][meets[-1]]) - 1e-6
  return float(round(max(threshold, floor), 4))


def softmax_layer(classifier):
  """The classifier's softmax Dense layer (`model.build_head`'s), or None."""
  stack = [classifier]
  while stack:
    layer = stack.pop()
    if layer.name == SOFTMAX_LAYER and hasattr(layer, "kernel"):
      return layer
    stack.extend(getattr(layer, "layers", []))
  return None


@contextlib.contextmanager
def temperature_folded(classifier, temperature: float) -> Iterator[None]:
  """Within the block, the classifier's logits are divided by
  `temperature` (its softmax layer's kernel and bias are); restored after.

  Raises:
    ValueError: the classifier has no softmax layer to fold into.
  """
  layer = softmax_layer(classifier)
  if layer is None:
    raise ValueError(f"no softmax layer named {SOFTMAX_LAYER}")
  saved = [w.numpy() for w in (layer.kernel, layer.bias)]
  try:
    layer.kernel.assign(saved[0] / temperature)
    layer.bias.assign(saved[1] / temperature)
    yield
  finally:
    layer.kernel.assign(saved[0])
    layer.bias.assign(saved[1])


def report(before: np.ndarray, after: np.ndarray, labels: np.ndarray,
           temperature: float, threshold: float) -> dict:
  """The figures export_report.json gives for calibration."""
  scores = after.max(1)
  answered = scores >= threshold
  correct = after.argmax(1) == labels
  return {
      "temperature": temperature,
      "drawings": int(len(labels)),
      "ece_before": expected_calibration_error(before, labels),
      "ece_after": expected_calibration_error(after, labels),
      "nll_before": negative_log_likelihood(before, labels),
      "nll_after": negative_log_likelihood(after, labels),
      "score_threshold": threshold,
      "target_precision": TARGET_PRECISION,
      "answered_above_threshold": float(answered.mean()),
      "precision_above_threshold": (float(correct[answered].mean())
                                    if answered.any() else None),
  }
