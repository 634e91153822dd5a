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
  assert pictures["misclassified"].ndim == 3
  for name in ("confusion_matrix", "misclassified"):
    assert (tmp_path / f"{name}.png").exists()


def _texts(figure):
  return [t.get_text() for t in figure.findobj(
      lambda o: hasattr(o, "get_text"))]


def test_confusion_matrix_has_names_counts_and_row_shares():
  figure = visualize.confusion_matrix_figure(
      np.array([[3, 1], [0, 4]]), ["alarm clock", "b"])
  axes = figure.axes[0]
  assert axes.get_xlabel() == "predicted category"
  assert axes.get_ylabel() == "true category"
  assert [t.get_text() for t in axes.get_xticklabels()] == ["alarm clock", "b"]
  assert [t.get_text() for t in axes.get_yticklabels()] == ["alarm clock", "b"]
  texts = _texts(figure)
  assert "3\n75%" in texts and "1\n25%" in texts and "4\n100%" in texts
  assert any("green: right, red: wrong" in t for t in texts)


def test_confusion_matrix_of_many_classes_shows_the_weakest():
  rng = np.random.default_rng(0)
  n = 345
  matrix = np.diag(rng.integers(50, 100, n)) + rng.integers(0, 3, (n, n))
  matrix[7, 7] = 0  # the worst class
  figure = visualize.confusion_matrix_figure(matrix, [f"c{i}" for i in
                                                      range(n)])
  names = [t.get_text() for t in figure.axes[0].get_yticklabels()]
  assert len(names) == visualize.MATRIX_CLASSES and "c7" in names
  assert "the 30 classes of 345 with the lowest recall" in (
      figure._suptitle.get_text())
  picture = visualize.confusion_matrix_image(matrix, [f"c{i}" for i in
                                                      range(n)])
  assert picture.shape[0] < 2000 and picture.shape[1] < 2000


def test_grid_captions_are_whole_and_the_grid_has_a_legend():
  figure = visualize.grid_figure(
      np.zeros((2, 784), np.uint8),
      ["alarm clock\nsaid: a very long category name 55%", "b"],
      title="T", legend="Each tile: something")
  captions = [t.get_text() for t in figure.texts if t.get_gid() == "caption"]
  assert len(captions) == 2 and captions[0].replace("\n", " ") == (
      "alarm clock said: a very long category name 55%")
  texts = _texts(figure)
  assert "T" in texts and "Each tile: something" in texts


def test_the_legend_sits_below_the_last_rows_captions():
  figure = visualize.grid_figure(
      np.zeros((16, 784), np.uint8),
      ["alarm clock\nsaid: smiley face 55%"] * 16, columns=8,
      title="T", legend="Each tile: something. " * 12)
  figure.canvas.draw()
  renderer = figure.canvas.get_renderer()
  legend = [t for t in figure.texts if t.get_text().startswith("Each tile")]
  top_of_legend = legend[0].get_window_extent(renderer).y1
  captions = [t for t in figure.texts if t.get_gid() == "caption"]
  assert len(captions) == 16
  lowest_caption = min(t.get_window_extent(renderer).y0 for t in captions)
  assert top_of_legend < lowest_caption  # display y grows upwards


def test_pick_mistakes_spreads_over_classes():
  labels = np.array([0, 0, 0, 0, 1, 1, 2, 2])
  predictions = np.array([1, 1, 1, 0, 0, 0, 2, 0])
  # Mistakes: class 0 at 0, 1, 2; class 1 at 4, 5; class 2 at 7.
  assert evaluation.pick_mistakes(labels, predictions, 4).tolist() == [
      0, 4, 7, 1]
  assert evaluation.pick_mistakes(labels, labels, 4).tolist() == []


def test_long_file_names_fit_a_caption_line_whole():
  assert visualize.short_name("cat.png") == "cat.png"
  short = visualize.short_name("my_very_long_drawing_of_a_cat_03.png")
  assert len(short) == 16 and short.endswith("3.png") and "\u2026" in short
  assert short.startswith("my_very_lo")
  # The caption wrapper leaves it on one line.
  assert "\n" not in visualize._wrap(short)
