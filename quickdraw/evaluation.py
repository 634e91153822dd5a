"""Test-split evaluation: accuracy figures, the confusion matrix, mistakes.

`classification_report` is pure numpy over predicted probabilities; the
`write_*` functions turn a report into the files a run leaves in its output
folder:

  evaluation.json         top-1, top-3 and per-class accuracy
  confusion_matrix.json   rows: true class, columns: predicted class
  confusion_matrix.png    the same, shaded, with counts
  misclassified.png       test drawings the model got wrong, "true > predicted"
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence

import numpy as np

from quickdraw import atomic_files, visualize


def top_k_accuracy(probabilities: np.ndarray, labels: np.ndarray,
                   k: int) -> float:
  """Share of rows whose label is among their k most probable classes."""
  k = min(k, probabilities.shape[1])
  top = np.argpartition(-probabilities, k - 1, axis=1)[:, :k]
  return float(np.mean(np.any(top == labels[:, None], axis=1)))


def confusion_matrix(labels: np.ndarray, predictions: np.ndarray,
                     num_classes: int) -> np.ndarray:
  """(num_classes, num_classes) counts; rows true class, columns predicted."""
  flat = labels.astype(np.int64) * num_classes + predictions
  return np.bincount(flat, minlength=num_classes**2).reshape(
      num_classes, num_classes)


def classification_report(probabilities: np.ndarray, labels: np.ndarray,
                          categories: Sequence[str]) -> dict:
  """Accuracy figures for one split.

  Args:
    probabilities: float (N, C) model outputs.
    labels: int (N,) true classes.
    categories: The C class names, in output order.

  Returns:
    A JSON-ready dict: drawings, top1, top3, per_class (category, drawings,
    accuracy) and confusion_matrix (nested lists).
  """
  probabilities = np.asarray(probabilities)
  labels = np.asarray(labels).astype(np.int64)
  predictions = probabilities.argmax(1)
  matrix = confusion_matrix(labels, predictions, len(categories))
  counts = matrix.sum(1)
  per_class = [{
      "category": name,
      "drawings": int(counts[i]),
      "accuracy": float(matrix[i, i] / counts[i]) if counts[i] else None,
  } for i, name in enumerate(categories)]
  return {
      "drawings": int(len(labels)),
      "top1": float(np.mean(predictions == labels)) if len(labels) else 0.0,
      "top3": top_k_accuracy(probabilities, labels, 3) if len(labels) else 0.0,
      "per_class": per_class,
      "confusion_matrix": matrix.tolist(),
  }


def format_report(report: dict) -> str:
  """A short text summary: overall accuracy, then the weakest classes."""
  lines = [f"test: top-1 {report['top1']:.4f}, top-3 {report['top3']:.4f} "
           f"on {report['drawings']} drawings"]
  scored = [c for c in report["per_class"] if c["accuracy"] is not None]
  if scored:
    lines.append(f"  the {min(5, len(scored))} weakest categories (test "
                 "top-1, drawings):")
  for c in sorted(scored, key=lambda c: c["accuracy"])[:5]:
    lines.append(f"  {c['category']:<16} {c['accuracy']:.3f} "
                 f"({c['drawings']} drawings)")
  return "\n".join(lines)


def pick_mistakes(labels: np.ndarray, predictions: np.ndarray,
                  limit: int = 64) -> np.ndarray:
  """Positions of up to `limit` wrong predictions, spread over the classes.

  Takes each class's first mistake, then each class's second, and so on, so
  that the picture is not filled by the first classes alone.
  """
  wrong = np.flatnonzero(labels != predictions)
  true = labels[wrong]
  # Rank of each mistake within its class (wrong is sorted by position).
  order = np.argsort(true, kind="stable")
  starts = np.searchsorted(true[order], true[order])
  rank = np.empty(len(wrong), np.int64)
  rank[order] = np.arange(len(wrong)) - starts
  return wrong[np.lexsort((true, rank))][:limit]


def misclassified_grid(drawings: np.ndarray, labels: np.ndarray,
                       predictions: np.ndarray,
                       categories: Sequence[str],
                       scores: np.ndarray | None = None) -> np.ndarray:
  """A captioned grid of wrongly classified drawings: each tile's true
  category, then the model's answer (and its score).

  Args:
    drawings: uint8 (N, 784) drawings the model got wrong.
    labels: (N,) their true classes.
    predictions: (N,) the predicted classes.
    categories: Class names.
    scores: (N,) the answers' scores, if known.

  Returns:
    A uint8 (H, W, 3) image (the words "no mistakes" when N is 0).
  """
  if not len(drawings):
    return visualize.text_image("no mistakes on the test split")
  captions = [f"{categories[t]}\nsaid: {categories[p]}" +
              (f" {100 * s:.0f}%" if scores is not None else "")
              for t, p, s in zip(labels, predictions,
                                 scores if scores is not None else labels)]
  return visualize.captioned_grid(
      drawings, captions, columns=8,
      title=f"Test drawings the model got wrong ({len(drawings)} shown)",
      legend="Each tile: a test drawing; first line: its true category; "
      "'said': the model's answer and its score. Each class's first "
      "mistake, in label order, then each class's second, and so on.")


def write_report(output_dir: str, report: dict, categories: Sequence[str],
                 drawings: np.ndarray, labels: np.ndarray,
                 probabilities: np.ndarray) -> dict[str, np.ndarray]:
  """Writes the evaluation files (see the module docstring), atomically.

  Args:
    output_dir: Where to write.
    report: From `classification_report`.
    categories: Class names.
    drawings: uint8 (N, 784) drawings to show as mistakes (see
      `pick_mistakes`).
    labels: (N,) their true classes.
    probabilities: (N, C) the model's outputs for them.

  Returns:
    The pictures written, by name, for TensorBoard.
  """
  summary = {k: v for k, v in report.items() if k != "confusion_matrix"}
  atomic_files.write_text(os.path.join(output_dir, "evaluation.json"),
                          json.dumps(summary, indent=2) + "\n")
  atomic_files.write_text(
      os.path.join(output_dir, "confusion_matrix.json"),
      json.dumps({"categories": list(categories),
                  "rows": "true class", "columns": "predicted class",
                  "matrix": report["confusion_matrix"]}) + "\n")
  pictures = {
      "confusion_matrix": visualize.confusion_matrix_image(
          np.asarray(report["confusion_matrix"]), categories),
      "misclassified": misclassified_grid(
          drawings, np.asarray(labels), np.asarray(probabilities).argmax(1),
          categories, np.asarray(probabilities).max(1)
          if len(drawings) else None),
  }
  for name, picture in pictures.items():
    visualize.write_png(os.path.join(output_dir, f"{name}.png"), picture)
  return pictures
