import json

import numpy as np

from quickdraw import evaluation, visualize

NAMES = ("cat", "dog", "fish")


def test_report_figures():
  probabilities = np.array([[0.7, 0.2, 0.1],   # cat, right
                            [0.5, 0.4, 0.1],   # dog as cat; top-3 right
                            [0.1, 0.2, 0.7],   # dog as fish; 2nd guess dog
                            [0.0, 0.1, 0.9]])  # fish, right
  labels = np.array([0, 1, 1, 2])
  report = evaluation.classification_report(probabilities, labels, NAMES)
  assert report["drawings"] == 4
  assert report["top1"] == 0.5
  assert report["top3"] == 1.0
  assert evaluation.top_k_accuracy(probabilities, labels, 2) == 1.0
  assert report["confusion_matrix"] == [[1, 0, 0], [1, 0, 1], [0, 0, 1]]
  assert [c["accuracy"] for c in report["per_class"]] == [1.0, 0.0, 1.0]
  assert "top-1 0.5000, top-3 1.0000 on 4 drawings" in (
      evaluation.format_report(report))


def test_class_without_test_drawings_has_no_accuracy():
  report = evaluation.classification_report(
      np.array([[0.9, 0.1, 0.0]]), np.array([0]), NAMES)
  assert report["per_class"][1] == {"category": "dog", "drawings": 0,
                                    "accuracy": None}


def test_write_report(tmp_path):
  drawings = np.zeros((2, 784), np.uint8)
  probabilities = np.array([[0.1, 0.9, 0.0], [0.0, 0.0, 1.0]])
  labels = np.array([0, 2])
  report = evaluation.classification_report(probabilities, labels, NAMES)
  wrong = evaluation.pick_mistakes(labels, probabilities.argmax(1))
  pictures = evaluation.write_report(str(tmp_path), report, NAMES,
                                     drawings[wrong], labels[wrong],
                                     probabilities[wrong])
  saved = json.loads((tmp_path / "confusion_matrix.json").read_text())
  assert saved["categories"] == list(NAMES)
  assert saved["matrix"] == report["confusion_matrix"]
  assert "confusion_matrix" not in json.loads(
      (tmp_path / "evaluation.json").read_text())
  assert pictures["confusion_matrix"].shape[2] == 3
  # One mistake: one captioned cell.
  assert pictures["misclassified"].shape == (
      6 + 84 + 2 * (visualize.GLYPH_HEIGHT + 2) + 6, 6 + 84 + 6)
  for name in ("confusion_matrix", "misclassified"):
    assert (tmp_path / f"{name}.png").exists()


def test_confusion_image_shades_by_row_share():
  image = visualize.confusion_matrix_image(np.array([[3, 1], [0, 4]]),
                                           ["a", "b"], cell=22)
  assert image.dtype == np.uint8 and image.ndim == 3
  white = np.array([255, 255, 255])
  # Empty cells stay white; the wrong-class cell (row a, column b) is red.
  header = visualize.GLYPH_HEIGHT + 8
  left = image.shape[1] - 2 * 22 - 2
  empty = image[header + 22 + 2, left + 2]
  wrong = image[header + 2, left + 22 + 2]
  assert (empty == white).all()
  assert wrong[0] == 255 and wrong[1] < 255


def test_pick_mistakes_spreads_over_classes():
  labels = np.array([0, 0, 0, 0, 1, 1, 2, 2])
  predictions = np.array([1, 1, 1, 0, 0, 0, 2, 0])
  # Mistakes: class 0 at 0, 1, 2; class 1 at 4, 5; class 2 at 7.
  assert evaluation.pick_mistakes(labels, predictions, 4).tolist() == [
      0, 4, 7, 1]
  assert evaluation.pick_mistakes(labels, labels, 4).tolist() == []
