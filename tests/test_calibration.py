"""Temperature scaling, calibration error and the score threshold."""

import keras
import numpy as np
import pytest

from quickdraw import calibration, losses
from quickdraw import model as model_lib


def _softmax(z):
  e = np.exp(z - z.max(1, keepdims=True))
  return e / e.sum(1, keepdims=True)


def _overconfident(n=4000, classes=10, factor=2.5, seed=0):
  """Labels drawn from softmax(z), and the scores of a model whose logits
  are `factor` times too large."""
  rng = np.random.default_rng(seed)
  z = rng.normal(0, 2.0, (n, classes))
  truth = _softmax(z)
  labels = np.array([rng.choice(classes, p=p) for p in truth])
  return _softmax(z * factor), labels


def test_fit_temperature_undoes_overconfidence():
  scores, labels = _overconfident()
  temperature = calibration.fit_temperature(scores, labels)
  assert 2.1 < temperature < 2.9
  after = calibration.rescale(scores, temperature)
  before_ece = calibration.expected_calibration_error(scores, labels)
  after_ece = calibration.expected_calibration_error(after, labels)
  assert after_ece < before_ece / 3 and after_ece < 0.03
  # Scaling keeps the ranking: the answers do not change.
  np.testing.assert_array_equal(after.argmax(1), scores.argmax(1))


def test_score_threshold_gives_up_at_most_three_percent_of_right_answers():
  scores, labels = _overconfident(factor=1.0)
  right = scores.argmax(1) == labels
  threshold = calibration.score_threshold(scores, labels)
  lost = np.mean(scores.max(1)[right] < threshold)
  # At most 3%, and the highest such threshold: 0.1% of the right answers
  # is 2 or 3 drawings here, so a little more would lose more than 3%.
  assert 0.029 <= lost <= calibration.RIGHT_GIVEN_UP
  assert np.mean(scores.max(1)[right] < threshold + 0.01) > (
      calibration.RIGHT_GIVEN_UP)
  # A model that is often wrong keeps its wrong answers above it too: the
  # rule is about the right ones alone.
  assert (right[scores.max(1) >= threshold]).mean() < 0.95
  looser = calibration.score_threshold(scores, labels, right_given_up=0.1)
  assert np.mean(scores.max(1)[right] < looser) == pytest.approx(0.1,
                                                                abs=0.002)


def test_score_threshold_with_no_right_answer_passes_nothing():
  scores = np.array([[0.9, 0.1], [0.2, 0.8]])
  threshold = calibration.score_threshold(scores, np.array([1, 0]))
  assert threshold > scores.max()


def test_unknown_recall_moves_along_the_curve():
  scores, labels = _overconfident(factor=1.0)
  rng = np.random.default_rng(1)
  unknown = _softmax(rng.normal(0, 1.0, (500, 10)))
  default = calibration.score_threshold(scores, labels, unknown)
  for recall in (0.5, 0.9):
    threshold = calibration.score_threshold(scores, labels, unknown,
                                            unknown_recall=recall)
    refused = np.mean(unknown.max(1) < threshold)
    assert recall <= refused < recall + 0.01
  assert calibration.score_threshold(
      scores, labels, unknown, unknown_recall=0.9) > default or np.mean(
          unknown.max(1) < default) >= 0.9
  curve = calibration.threshold_curve(scores, labels, unknown)
  assert len(curve) == 101 and curve[0]["threshold"] == 0.0
  # Raising the threshold refuses more of both sides, never fewer.
  for key in ("right_answered", "right_kept"):
    values = [p[key] for p in curve]
    assert values == sorted(values, reverse=True)
  refused = [p["unknown_refused"] for p in curve]
  assert refused == sorted(refused) and refused[-1] > 0.9
  report = calibration.report(scores, scores, labels, 1.0, default,
                              unknown, ("cat",))
  assert report["unknown"]["refused"] == pytest.approx(
      np.mean(unknown.max(1) < default))
  right = scores.argmax(1) == labels
  assert report["right_kept"] == pytest.approx(
      np.mean(scores.max(1)[right] >= default))
  assert report["precision_above_threshold"] == pytest.approx(
      right[scores.max(1) >= default].mean())
  assert report["rule"] == "at most 3% of the right answers given up"


def test_a_model_right_on_everything_still_gives_up_some_answers():
  # Three classes, always right, with spread-out scores: the default
  # still gives up the lowest 3% of the right answers, no more, for the
  # "not sure" of doodles it does not know.
  rng = np.random.default_rng(2)
  labels = rng.integers(0, 3, 1000)
  top = rng.uniform(0.55, 1.0, 1000)
  scores = np.full((1000, 3), 0.0)
  scores[np.arange(1000), labels] = top
  scores[np.arange(1000), (labels + 1) % 3] = 1 - top
  threshold = calibration.score_threshold(scores, labels)
  lost = np.mean(top < threshold)
  assert 0.025 <= lost <= calibration.RIGHT_GIVEN_UP


def test_score_threshold_stays_above_equal_scores():
  labels = np.arange(4) % 2
  scores = np.eye(2)[labels] * 0.02 + 0.49  # always right, barely
  assert calibration.score_threshold(scores, labels) >= 0.55


@pytest.mark.parametrize("head", ["none class", "plain softmax"])
def test_temperature_folds_into_the_softmax_layer_and_is_restored(head):
  # The shipped head (`losses.softmax_with_none`), and an older run's.
  model = model_lib.build_head(5, 4) if head == "none class" else (
      keras.Sequential([keras.Input((5,)), keras.layers.Dense(
          4, activation="softmax", name=calibration.SOFTMAX_LAYER)]))
  x = np.random.default_rng(1).normal(size=(8, 5)).astype(np.float32)
  plain = model(x).numpy()
  with calibration.temperature_folded(model, 3.0):
    folded = model(x).numpy()
  np.testing.assert_allclose(folded, calibration.rescale(plain, 3.0),
                             atol=1e-6)
  np.testing.assert_allclose(model(x).numpy(), plain, atol=1e-7)


def test_a_held_out_set_all_right_does_not_saturate_the_scores():
  scores = np.array([[0.9, 0.1], [0.2, 0.8], [0.7, 0.3]])
  labels = np.array([0, 1, 0])
  assert calibration.fit_temperature(scores, labels) == (
      calibration.MIN_TEMPERATURE)


def test_rescale_keeps_the_none_logit_at_zero():
  # The head's scores leave room for "none of these"; a temperature
  # folded into its kernel divides the class logits alone.
  logits = np.random.default_rng(2).normal(0, 3, (6, 4)).astype(np.float32)
  logits[0] = [30, -9, -9, -9]  # sure: the none share rounds away
  # float32 scores carry the none share (1 less their sum) to about 1e-7.
  for temperature in (0.5, 2.5):
    np.testing.assert_allclose(
        calibration.rescale(losses.softmax_with_none(logits).numpy(),
                            temperature),
        losses.softmax_with_none(logits / temperature).numpy(), atol=2e-5)
  # A plain softmax (an older run's head) rescales as a softmax.
  plain = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  tempered = np.exp(logits / 2) / np.exp(logits / 2).sum(1, keepdims=True)
  np.testing.assert_allclose(calibration.rescale(plain, 2.0), tempered,
                             atol=1e-6)

