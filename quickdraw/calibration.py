"""Scores an app can trust: temperature scaling and a score threshold.

A network trained with label smoothing on drawings is not calibrated: its
top score says little about how often it is right. The export fits one
temperature T on validation drawings (Guo et al., "On Calibration of Modern
Neural Networks", 2017), folds it into the softmax layer's weights (logits
/ T: no new op, every artifact calibrated alike), reports the expected
calibration error before and after, and derives the score under which an
app says "not sure" (`score_threshold`), which the models carry in their
metadata, apps may pass to MediaPipe's `setScoreThreshold`, and predict and
the demo apply.

The threshold is a trade between two sides (`threshold_curve`): known
drawings the model answers right, and doodles of other things (categories
no training batch used) that it should turn away. By default it is the
highest score under which at most RIGHT_GIVEN_UP of the right answers
fall, the held-out drawings re-drawn as the app's canvases (the export's
`calibrate`): the most doodles refused for at most 3% of the right answers
lost. `unknown_recall` instead asks for a share of the other doodles
refused, whatever it costs the known side.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np

ECE_BINS = 15
# The most share of right answers the default threshold gives up. (It
# used to be the lowest score above which 95% of the answers were right:
# on 22 categories, where canvas top-1 is 0.80 to 0.83, that said "not
# sure" to a quarter to two fifths of the known canvases.)
RIGHT_GIVEN_UP = 0.03
# The threshold stays this far above equal scores (1 / classes), which is
# what the models answer for a drawing with nothing to classify.
ABOVE_EQUAL_SCORES = 0.05
SOFTMAX_LAYER = "final_result"


# A row's scores leave a "none of these" share when they sum to less than
# 1 by more than float32's rounding of the sum (`losses.softmax_with_none`).
NONE_SHARE_FLOOR = 1e-6


def rescale(probabilities: np.ndarray, temperature: float) -> np.ndarray:
  """The scores of logits / T from the scores of the logits, as folding T
  into the softmax layer makes them (`temperature_folded`).

  The scores are a softmax over the class logits and a none logit of 0,
  without the none's score (`losses.softmax_with_none`), or a plain softmax
  (older runs, or a row whose none share rounds away): log p is the logits
  less a per-row constant, and log p_none is minus that constant.
  """
  p = np.asarray(probabilities, np.float64)
  none = 1.0 - p.sum(1, keepdims=True)
  none = np.where(none > NONE_SHARE_FLOOR, none, 0.0)
  logits = np.log(np.maximum(np.concatenate([p, none], 1), 1e-300))
  logits = (logits - np.where(none > 0, np.log(np.maximum(none, 1e-300)),
                              0.0)) / temperature
  logits[:, -1] = np.where(none[:, 0] > 0, 0.0, -np.inf)
  logits -= logits.max(1, keepdims=True)
  e = np.exp(logits)
  return (e / e.sum(1, keepdims=True))[:, :-1].astype(np.float32)


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
                    unknown: np.ndarray | None = None, *,
                    unknown_recall: float | None = None,
                    right_given_up: float = RIGHT_GIVEN_UP) -> float:
  """The score under which an app says "not sure".

  Args:
    probabilities: (N, classes) scores of held-out drawings of the classes.
    labels: (N,) their classes.
    unknown: (M, classes) scores of doodles of other categories, if any.
    unknown_recall: If given (with `unknown`), the threshold refuses this
      share of `unknown`, whatever it costs the known side.
    right_given_up: Otherwise: the highest threshold under which at most
      this share of the right answers fall (their lowest scores).

  Returns:
    The threshold, to 4 decimals, on the safe side of its rule. Never
    below equal scores plus ABOVE_EQUAL_SCORES, so a drawing with nothing
    to classify stays below it; at most 1.
  """
  probabilities = np.asarray(probabilities, np.float64)
  floor = 1.0 / probabilities.shape[1] + ABOVE_EQUAL_SCORES
  if unknown_recall is not None and unknown is not None and len(unknown):
    refused = np.sort(np.asarray(unknown, np.float64).max(1))
    count = int(np.ceil(unknown_recall * len(refused) - 1e-9))
    if count == 0:
      return float(round(floor, 4))
    # Just above the highest score that must be refused.
    threshold = np.ceil(refused[count - 1] * 1e4 + 1e-6) / 1e4
    return float(min(max(threshold, floor), 1.0))
  scores = probabilities.max(1)
  kept = np.sort(scores[probabilities.argmax(1) == np.asarray(labels)])
  if not len(kept):  # never right: nothing passes
    return float(min(max(np.nextafter(np.float32(scores.max()),
                                      np.float32(2)), floor), 1.0))
  # The lowest `lost` right answers fall under the threshold; rounded
  # down, so the next one's score stays at or above it.
  lost = int(np.floor(right_given_up * len(kept) + 1e-9))
  threshold = np.floor(float(kept[lost]) * 1e4 - 1e-6) / 1e4
  return float(round(min(max(threshold, floor), 1.0), 4))


def threshold_curve(probabilities: np.ndarray, labels: np.ndarray,
                    unknown: np.ndarray | None = None,
                    steps: int = 101) -> list[dict]:
  """The trade-off `score_threshold` picks a point of, at thresholds 0 to
  1: per threshold, the share of known drawings answered right at or
  above it (`right_answered`), the share of the right answers it keeps
  (`right_kept`), and the share of `unknown` it refuses
  (`unknown_refused`, when given)."""
  probabilities = np.asarray(probabilities)
  scores = probabilities.max(1)
  right = probabilities.argmax(1) == np.asarray(labels)
  others = (np.asarray(unknown).max(1) if unknown is not None and len(unknown)
            else None)
  curve = []
  for threshold in np.linspace(0, 1, steps):
    point = {"threshold": round(float(threshold), 4),
             "right_answered": float(np.mean(right & (scores >= threshold))),
             "right_kept": float(np.mean(scores[right] >= threshold))
             if right.any() else 0.0}
    if others is not None:
      point["unknown_refused"] = float(np.mean(others < threshold))
    curve.append(point)
  return curve


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
           temperature: float, threshold: float,
           unknown_after: np.ndarray | None = None,
           unknown_categories: tuple[str, ...] = (),
           unknown_recall: float | None = None,
           canvas_scores: tuple[np.ndarray, np.ndarray] | None = None
           ) -> dict:
  """The figures export_report.json gives for calibration: the fit (on
  `before` and `after`, the held-out drawings' scores), the threshold and
  how it was chosen, both sides at it, and the curve; the known side's
  figures and the curve are on `canvas_scores` (scores, labels: the app's
  view) when given, else on `after`."""
  known, known_labels = canvas_scores if canvas_scores else (after, labels)
  scores = known.max(1)
  answered = scores >= threshold
  correct = known.argmax(1) == known_labels
  figures = {
      "temperature": temperature,
      "drawings": int(len(labels)),
      "ece_before": expected_calibration_error(before, labels),
      "ece_after": expected_calibration_error(after, labels),
      "nll_before": negative_log_likelihood(before, labels),
      "nll_after": negative_log_likelihood(after, labels),
      "score_threshold": threshold,
      "rule": (f"refuse {unknown_recall:.0%} of other doodles"
               if unknown_recall is not None and unknown_after is not None
               and len(unknown_after) else
               f"at most {RIGHT_GIVEN_UP:.0%} of the right answers given up"
               + (" on the app's canvases" if canvas_scores else "")),
      "measured_on": "canvases" if canvas_scores else "drawings",
      "known_drawings": int(len(known_labels)),
      "answered_above_threshold": float(answered.mean()),
      "right_above_threshold": float(np.mean(correct & answered)),
      "right_kept": (float(answered[correct].mean()) if correct.any()
                     else 0.0),
      "precision_above_threshold": (float(correct[answered].mean())
                                    if answered.any() else None),
  }
  if unknown_after is not None and len(unknown_after):
    figures["unknown"] = {
        "categories": list(unknown_categories),
        "drawings": int(len(unknown_after)),
        "refused": float(np.mean(unknown_after.max(1) < threshold))}
  figures["curve"] = threshold_curve(known, known_labels, unknown_after)
  return figures
