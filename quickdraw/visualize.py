"""Pictures of drawings and results, drawn with matplotlib, written as PNG.

Every picture carries a title and a legend line saying what its tiles,
captions or axes are, and captions wrap instead of being cut. Figures are
drawn with matplotlib's object API on an Agg canvas (no pyplot state, no
display), returned as uint8 RGB arrays for PNG files and TensorBoard.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from quickdraw import atomic_files, preprocessing

# Above this many classes, the confusion matrix shows the weakest ones.
MATRIX_CLASSES = 30
_DPI = 100


def write_png(path: str, image: np.ndarray) -> None:
  """Writes a uint8 (H, W) or (H, W, C) image to `path` atomically."""
  atomic_files.write_bytes(path, png_bytes(image))


def _figure(width_in: float, height_in: float):
  from matplotlib.backends.backend_agg import FigureCanvasAgg
  from matplotlib.figure import Figure
  figure = Figure(figsize=(width_in, height_in), dpi=_DPI)
  FigureCanvasAgg(figure)
  return figure


def _pixels(figure) -> np.ndarray:
  figure.canvas.draw()
  return np.asarray(figure.canvas.buffer_rgba())[..., :3].copy()


def _heading(figure, title: str, legend: str) -> None:
  if title:
    figure.suptitle(title, fontsize=11, fontweight="bold", y=0.995,
                    va="top")
  if legend:
    figure.text(0.5, 0.005, "\n".join(textwrap.wrap(legend, 110)),
                ha="center", va="bottom", fontsize=8, color="#444444")


def short_name(name: str, width: int = 16) -> str:
  """A file name that fits a caption line whole: a long one keeps its
  start and end (the extension) around an ellipsis, rather than being
  broken mid-word over two lines."""
  if len(name) <= width:
    return name
  tail = max(4, (width - 1) // 3)
  return name[:width - 1 - tail] + "\u2026" + name[-tail:]


def _wrap(caption: str, width: int = 16) -> str:
  return "\n".join(textwrap.fill(line, width) for line in caption.split("\n"))


def captioned_grid(images: np.ndarray, captions: Sequence[str], *,
                   columns: int = 8, title: str = "",
                   legend: str = "") -> np.ndarray:
  """`grid_figure`'s pixels: uint8 (H, W, 3)."""
  return _pixels(grid_figure(images, captions, columns=columns, title=title,
                             legend=legend))


def grid_figure(images: np.ndarray, captions: Sequence[str], *,
                columns: int = 8, title: str = "", legend: str = ""):
  """Images in a grid, each with its caption below, whole (wrapped).

  The tiles are one picture composed in numpy and placed pixel for pixel
  (`Figure.figimage`), the captions text objects (gid "caption"): a
  subplot per tile cost a training run half a second of matplotlib.

  Args:
    images: uint8 (k, h, w) or (k, 784) light-on-dark images.
    captions: One caption per image; "\\n" separates lines.
    columns: Images per grid row.
    title: Above the grid.
    legend: Below the grid: what the tiles and captions are.

  Returns:
    A matplotlib Figure.
  """
  images = np.asarray(images, np.uint8)
  if images.ndim == 2:
    images = images.reshape(-1, 28, 28)
  count = max(len(images), 1)
  columns = max(1, min(columns, count))
  rows = -(-count // columns)
  lines = max((_wrap(c).count("\n") + 1 for c in captions), default=1)
  cell_w, tile_in = 1.35, 1.1
  cell_h = 1.25 + 0.16 * lines
  caption_h = 0.16 * lines + 0.05  # the last row's captions hang below it
  # Inches: tiles, title, the last captions and the legend.
  height = cell_h * rows + 1.05 + caption_h
  width = cell_w * columns + 0.3
  figure = _figure(width, height)
  size = (int(round(height * _DPI)), int(round(width * _DPI)))
  canvas = np.full((*size, 4), 0, np.uint8)  # clear: the figure's white
  tile = int(round(tile_in * _DPI))
  for i, (image, caption) in enumerate(zip(images, captions)):
    row, column = divmod(i, columns)
    top = int(round((0.45 + row * cell_h) * _DPI))
    left = int(round((0.15 + column * cell_w + (cell_w - tile_in) / 2)
                     * _DPI))
    # Nearest-neighbour upscaling (each pixel a crisp block), then a frame.
    ys = np.arange(tile) * image.shape[0] // tile
    xs = np.arange(tile) * image.shape[1] // tile
    canvas[top:top + tile, left:left + tile, :3] = image[ys][:, xs, None]
    canvas[top:top + tile, left:left + tile, 3] = 255
    for edge in (np.s_[top, left:left + tile],
                 np.s_[top + tile - 1, left:left + tile],
                 np.s_[top:top + tile, left], np.s_[top:top + tile,
                                                    left + tile - 1]):
      canvas[edge] = (0, 0, 0, 255)
    figure.text((left + tile / 2) / size[1], 1 - (top + tile + 3) / size[0],
                _wrap(caption), ha="center", va="top", fontsize=7.5,
                gid="caption")
  figure.figimage(canvas, 0, 0, origin="upper", zorder=0)
  _heading(figure, title, legend)
  return figure


def labelled_rows(rows: Sequence[np.ndarray], labels: Sequence[str], *,
                  title: str = "", legend: str = "") -> np.ndarray:
  """One row of drawings per label, the label at the left of its row.

  Args:
    rows: Per label, uint8 (k, 784) or (k, 28, 28) drawings (k may vary).
    labels: The rows' names.

  Returns:
    A uint8 (H, W, 3) image.
  """
  columns = max((len(r) for r in rows), default=1) or 1
  figure = _figure(0.55 * columns + 1.8, 0.55 * len(rows) + 0.9)
  height = 0.55 * len(rows) + 0.9
  grid = figure.add_gridspec(max(len(rows), 1), columns, left=1.6 / (
      0.55 * columns + 1.8), right=0.99, top=1 - 0.45 / height,
                             bottom=0.45 / height, wspace=0.05, hspace=0.08)
  for i, (drawings, label) in enumerate(zip(rows, labels)):
    drawings = np.asarray(drawings, np.uint8).reshape(-1, 28, 28)
    for j in range(columns):
      axes = figure.add_subplot(grid[i, j])
      axes.set_xticks([])
      axes.set_yticks([])
      if j < len(drawings):
        axes.imshow(drawings[j], cmap="gray", vmin=0, vmax=255,
                    interpolation="nearest")
      else:
        axes.axis("off")
      if j == 0:
        axes.set_ylabel(label, rotation=0, ha="right", va="center",
                        fontsize=8)
  _heading(figure, title, legend)
  return _pixels(figure)


def text_image(text: str) -> np.ndarray:
  """A small picture of one line of text (e.g. "no mistakes")."""
  figure = _figure(4, 0.6)
  figure.text(0.5, 0.5, text, ha="center", va="center", fontsize=12)
  return _pixels(figure)


def weakest_classes(matrix: np.ndarray, count: int) -> np.ndarray:
  """The `count` classes with the lowest recall, in class order."""
  recall = np.diag(matrix) / np.maximum(matrix.sum(1), 1)
  return np.sort(np.argsort(recall, kind="stable")[:count])


def confusion_matrix_image(matrix: np.ndarray, labels: Sequence[str], *,
                           max_classes: int = MATRIX_CLASSES) -> np.ndarray:
  """`confusion_matrix_figure`'s pixels: uint8 (H, W, 3)."""
  return _pixels(confusion_matrix_figure(matrix, labels,
                                         max_classes=max_classes))


def confusion_matrix_figure(matrix: np.ndarray, labels: Sequence[str], *,
                            max_classes: int = MATRIX_CLASSES):
  """The confusion matrix with names on both axes, each cell's count and
  its share of the row (the true class), shaded by that share.

  With more than `max_classes` classes, it shows the `max_classes` with
  the lowest recall (their rows and columns) and says so in its title.

  Returns:
    A matplotlib Figure.
  """
  matrix = np.asarray(matrix, np.int64)
  shown = np.arange(len(labels))
  title = "Confusion matrix, test split"
  if len(labels) > max_classes:
    shown = weakest_classes(matrix, max_classes)
    title += (f": the {max_classes} classes of {len(labels)} with the "
              "lowest recall (all in confusion_matrix.json)")
  sub = matrix[np.ix_(shown, shown)]
  names = [labels[i] for i in shown]
  totals = np.maximum(matrix[shown].sum(1, keepdims=True), 1)
  shares = sub / totals
  n = len(shown)
  side = max(4.0, 0.42 * n + 2.2)
  figure = _figure(side + 0.6, side + 0.6)
  axes = figure.add_axes((2.0 / (side + 0.6), 2.0 / (side + 0.6),
                          (side - 2.1) / (side + 0.6),
                          (side - 2.1) / (side + 0.6)))
  colours = np.where(np.eye(n, dtype=bool)[..., None],
                     np.array([0.1, 0.6, 0.2]), np.array([0.85, 0.15, 0.1]))
  image = 1 - shares[..., None] * (1 - colours)
  axes.imshow(image, interpolation="nearest")
  for i in range(n):
    for j in range(n):
      if sub[i, j]:
        axes.text(j, i, f"{sub[i, j]}\n{100 * shares[i, j]:.0f}%",
                  ha="center", va="center", fontsize=6 if n > 12 else 8,
                  color="white" if shares[i, j] > 0.6 else "black")
  axes.set_xticks(range(n), names, rotation=60, ha="right", fontsize=8)
  axes.set_yticks(range(n), names, fontsize=8)
  axes.set_xlabel("predicted category", fontsize=9)
  axes.set_ylabel("true category", fontsize=9)
  _heading(figure, title, "Each cell: how many test drawings of the row's "
           "category got the column's answer, and their share of the row "
           "(green: right, red: wrong).")
  return figure


def threshold_curve_image(curve: Sequence[dict], threshold: float,
                          title: str = "") -> np.ndarray:
  """The score threshold's trade-off (`calibration.threshold_curve`): over
  thresholds, the share of known drawings answered right, the share of the
  right answers kept, and (when measured) the share of other categories'
  doodles refused; the chosen threshold marked. uint8 (H, W, 3)."""
  figure = _figure(6.4, 4.4)
  axes = figure.add_axes([0.1, 0.2, 0.86, 0.68])
  x = [p["threshold"] for p in curve]
  axes.plot(x, [p["right_answered"] for p in curve], color="#2E7D32",
            label="known drawings answered right")
  axes.plot(x, [p["right_kept"] for p in curve], color="#81C784",
            linestyle="--", label="right answers kept")
  if curve and "unknown_refused" in curve[0]:
    axes.plot(x, [p["unknown_refused"] for p in curve], color="#C62828",
              label="other categories' doodles refused")
  axes.axvline(threshold, color="#444444", linestyle=":",
               label=f"the threshold, {threshold:.3f}")
  axes.set_xlim(0, 1)
  axes.set_ylim(0, 1.02)
  axes.set_xlabel("score threshold (under it: 'not sure')", fontsize=9)
  axes.set_ylabel("share", fontsize=9)
  axes.legend(fontsize=8, loc="center left")
  axes.grid(alpha=0.3)
  _heading(figure, title or "Where the score threshold sits",
           "Held-out drawings of the model's categories (green) and doodles "
           "of categories no training batch used (red), over thresholds.")
  return _pixels(figure)


def png_bytes(image: np.ndarray) -> bytes:
  """A uint8 (H, W[, C]) image as PNG file bytes."""
  image = np.asarray(image, np.uint8)
  if image.ndim == 2:
    image = image[:, :, None]
  return tf.io.encode_png(image).numpy()


def model_inputs_grid(images: np.ndarray, captions: Sequence[str], *,
                      value_range: tuple[float, float]) -> np.ndarray:
  """Network inputs (N, S, S, 3) in `value_range`, as a captioned grid of
  8-bit grey tiles at 56 px: legible, and small in TensorBoard."""
  small = tf.image.resize(images[..., :1], (56, 56), antialias=True)
  small = np.clip(preprocessing.unscale_from_range(
      small.numpy()[..., 0], value_range), 0, 255).astype(np.uint8)
  return captioned_grid(
      small, captions, columns=8,
      title="Training inputs, as the model sees them",
      legend="Each tile: a training drawing after upsampling (and "
      "augmentation, if on), shown at 56 px; caption: its label. The last "
      "row: rows added to the batch (pen re-draws, or junk: 'not sure').")


def write_summary_images(summaries_dir: str,
                         pictures: dict[str, np.ndarray]) -> None:
  """Writes pictures to TensorBoard's images tab (`summaries_dir/images`)."""
  writer = tf.summary.create_file_writer(os.path.join(summaries_dir, "images"))
  with writer.as_default():
    for name, picture in pictures.items():
      picture = np.asarray(picture, np.uint8)
      if picture.ndim == 2:
        picture = picture[:, :, None]
      tf.summary.image(name, picture[None], step=0)
  writer.close()
