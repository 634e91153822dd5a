"""The head's scores with a none class, and the loss that trains them."""

import numpy as np

from quickdraw import losses, outliers


def test_scores_leave_the_none_share_and_never_overflow():
  logits = np.array([[0.0, 0.0, 0.0], [2.0, -1.0, 0.5], [500.0, 0.0, -500.0],
                     [-500.0, -500.0, -500.0]], np.float32)
  scores = losses.softmax_with_none(logits).numpy()
  np.testing.assert_allclose(scores[0], [0.25] * 3, rtol=1e-6)
  e = np.exp([2.0, -1.0, 0.5])
  np.testing.assert_allclose(scores[1], e / (1 + e.sum()), rtol=1e-6)
  np.testing.assert_allclose(scores[2], [1, 0, 0], atol=1e-7)
  np.testing.assert_allclose(scores[3], [0, 0, 0], atol=1e-7)


def test_junk_is_trained_to_the_none_class_and_drawings_to_theirs():
  scores = np.array([[0.6, 0.1, 0.1], [0.6, 0.1, 0.1], [0.05, 0.05, 0.1]],
                    np.float32)
  labels = np.array([0, outliers.JUNK_LABEL, outliers.JUNK_LABEL])
  loss = losses.SparseCrossentropy(reduction=None)(labels, scores).numpy()
  np.testing.assert_allclose(loss, -np.log([0.6, 0.2, 0.8]), rtol=1e-5)
  # Label smoothing spreads its share over the classes and the none class.
  smoothed = losses.SparseCrossentropy(0.2, reduction=None)(
      labels[:1], scores[:1]).numpy()
  target = np.array([0.85, 0.05, 0.05, 0.05])
  np.testing.assert_allclose(
      smoothed, -(target * np.log([0.6, 0.1, 0.1, 0.2])).sum(), rtol=1e-5)
