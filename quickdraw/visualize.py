"""Pictures of drawings: labelled grids, written as PNG.

Text is drawn with a built-in 5x7 bitmap font (upper case, digits, a few
signs) so that pictures need neither Pillow nor matplotlib.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from quickdraw import atomic_files

_GLYPHS = {
    "A": ".###.#...##...#######...##...##...#", "B": "####.#...##...#####.#...##...#####.",
    "C": ".###.#...##....#....#....#...#.###.", "D": "####.#...##...##...##...##...#####.",
    "E": "######....#....####.#....#....#####", "F": "######....#....####.#....#....#....",
    "G": ".###.#...##....#.####...##...#.####", "H": "#...##...##...#######...##...##...#",
    "I": ".###...#....#....#....#....#...###.", "J": "..###...#....#....#....#.#..#..##..",
    "K": "#...##..#.#.#..##...#.#..#..#.#...#", "L": "#....#....#....#....#....#....#####",
    "M": "#...###.###.#.##...##...##...##...#", "N": "#...###..##.#.##..###...##...##...#",
    "O": ".###.#...##...##...##...##...#.###.", "P": "####.#...##...#####.#....#....#....",
    "Q": ".###.#...##...##...##.#.##..#..##.#", "R": "####.#...##...#####.#.#..#..#.#...#",
    "S": ".####.....#.....###.....#....#####.", "T": "#####..#....#....#....#....#....#..",
    "U": "#...##...##...##...##...##...#.###.", "V": "#...##...##...##...##...#.#.#...#..",
    "W": "#...##...##...##.#.##.#.##.#.#.#.#.", "X": "#...##...#.#.#...#...#.#.#...##...#",
    "Y": "#...##...#.#.#...#....#....#....#..", "Z": "#####....#...#...#...#...#....#####",
    "0": ".###.#...##..###.#.###..##...#.###.", "1": "..#...##....#....#....#....#...###.",
    "2": ".###.#...#....#...#...#...#...#####", "3": "#####...#...#.....#.....##...#.###.",
    "4": "...#...##..#.#.#..#.#####...#....#.", "5": "######....####.....#....##...#.###.",
    "6": "..##..#...#....####.#...##...#.###.", "7": "#####....#...#...#...#....#....#...",
    "8": ".###.#...##...#.###.#...##...#.###.", "9": ".###.#...##...#.####....#...#..##..",
    " ": "." * 35, "-": "...............#####...............",
    ".": "..............................##...", ":": ".....##...##.........##...##.......",
    "'": "..#....#...#.......................", "%": "##...##..#...#...#...#...#..##...##",
    "/": ".....#....#...#...#...#....#.......", "?": ".###.#...#....#...#...#.........#..",
    "(": "...#...#...#....#....#.....#.....#.", ")": ".#.....#.....#....#....#...#...#...",
    "_": "..............................#####", "=": "..........#####.....#####..........",
    ">": ".#.....#.....#.....#...#...#...#...", ",": ".........................##...#..#.",
}
GLYPH_WIDTH, GLYPH_HEIGHT = 5, 7


def render_text(text: str, scale: int = 1) -> np.ndarray:
  """Renders one line of text as a uint8 (7*scale, 6*len*scale) ink mask.

  Letters are drawn upper case; characters the font lacks become '?'.
  """
  columns = []
  for ch in text.upper():
    glyph = _GLYPHS.get(ch, _GLYPHS["?"])
    bitmap = np.array([c == "#" for c in glyph], dtype=np.uint8).reshape(
        GLYPH_HEIGHT, GLYPH_WIDTH) * 255
    columns += [bitmap, np.zeros((GLYPH_HEIGHT, 1), np.uint8)]
  line = np.concatenate(columns or [np.zeros((GLYPH_HEIGHT, 0), np.uint8)], 1)
  return np.kron(line, np.ones((scale, scale), np.uint8))


def paste(canvas: np.ndarray, patch: np.ndarray, top: int, left: int) -> None:
  """Copies `patch` into `canvas` at (top, left), clipped to the canvas."""
  h = min(patch.shape[0], canvas.shape[0] - top)
  w = min(patch.shape[1], canvas.shape[1] - left)
  if h > 0 and w > 0:
    canvas[top:top + h, left:left + w] = np.maximum(
        canvas[top:top + h, left:left + w], patch[:h, :w])


def labelled_rows(rows: Sequence[np.ndarray], labels: Sequence[str], *,
                  zoom: int = 2, gap: int = 4) -> np.ndarray:
  """Lays out rows of 28x28 drawings, each row with a label on its left.

  Args:
    rows: One uint8 array (k, 28, 28) or (k, 784) per row; rows may differ
      in length.
    labels: One label per row.
    zoom: Pixel repetition of each drawing, for legibility.
    gap: Pixels between drawings.

  Returns:
    A uint8 (H, W) image, light ink on black like the drawings.
  """
  cell = 28 * zoom
  label_width = max((len(l) for l in labels), default=0) * 6 * 2 + gap
  cols = max((len(r) for r in rows), default=0)
  height = len(rows) * (cell + gap) + gap
  width = label_width + cols * (cell + gap) + gap
  canvas = np.zeros((height, width), np.uint8)
  for i, (drawings, label) in enumerate(zip(rows, labels)):
    top = gap + i * (cell + gap)
    text = render_text(label, scale=2)
    paste(canvas, text, top + (cell - text.shape[0]) // 2, gap)
    for j, d in enumerate(np.asarray(drawings).reshape(-1, 28, 28)):
      big = np.kron(d, np.ones((zoom, zoom), np.uint8))
      paste(canvas, big, top, label_width + j * (cell + gap))
  return canvas


def write_png(path: str, image: np.ndarray) -> None:
  """Writes a uint8 (H, W) or (H, W, C) image to `path` atomically."""
  image = np.asarray(image, np.uint8)
  if image.ndim == 2:
    image = image[:, :, None]
  atomic_files.write_bytes(path, tf.io.encode_png(image).numpy())


def captioned_grid(images: np.ndarray, captions: Sequence[str], *,
                   columns: int = 8, zoom: int = 2, gap: int = 6) -> np.ndarray:
  """Lays out images in a grid, each with a caption of one or more lines below.

  Args:
    images: uint8 (k, h, w) or (k, 784) light-on-dark images.
    captions: One caption per image; "\\n" separates lines. Lines longer than
      the cell are cut.
    columns: Images per grid row.
    zoom: Pixel repetition of each image.
    gap: Pixels between cells.

  Returns:
    A uint8 (H, W) image.
  """
  images = np.asarray(images, np.uint8)
  if images.ndim == 2:
    images = images.reshape(-1, 28, 28)
  count = len(images)
  h, w = images.shape[1] * zoom, images.shape[2] * zoom
  lines = max((c.count("\n") + 1 for c in captions), default=0)
  text_height = lines * (GLYPH_HEIGHT + 2)
  max_chars = max(1, (w + 1) // (GLYPH_WIDTH + 1))
  columns = max(1, min(columns, count))
  grid_rows = -(-count // columns)
  canvas = np.zeros((gap + grid_rows * (h + text_height + gap),
                     gap + columns * (w + gap)), np.uint8)
  for i, (image, caption) in enumerate(zip(images, captions)):
    top = gap + (i // columns) * (h + text_height + gap)
    left = gap + (i % columns) * (w + gap)
    paste(canvas, np.kron(image, np.ones((zoom, zoom), np.uint8)), top, left)
    for j, line in enumerate(caption.split("\n")):
      paste(canvas, render_text(line[:max_chars]),
            top + h + 2 + j * (GLYPH_HEIGHT + 2), left)
  return canvas


def confusion_matrix_image(matrix: np.ndarray, labels: Sequence[str], *,
                           cell: int = 22) -> np.ndarray:
  """Draws a confusion matrix (rows: true class, columns: predicted).

  Each cell is shaded by its share of the row (green on the diagonal, red
  off it) and shows its count. Rows start with the class number and name;
  columns are headed by the number alone, since names do not fit there.

  Returns:
    A uint8 (H, W, 3) RGB image.
  """
  matrix = np.asarray(matrix, np.int64)
  n = len(labels)
  names = [f"{i:>2} {name}" for i, name in enumerate(labels)]
  label_width = max((len(s) for s in names), default=0) * (GLYPH_WIDTH + 1) + 6
  header = GLYPH_HEIGHT + 8
  canvas = np.full((header + n * cell + 2, label_width + n * cell + 2, 3), 255,
                   np.uint8)
  ink = np.zeros(canvas.shape[:2], np.uint8)
  totals = np.maximum(matrix.sum(1, keepdims=True), 1)
  shares = matrix / totals
  for i in range(n):
    paste(ink, render_text(names[i]),
          header + i * cell + (cell - GLYPH_HEIGHT) // 2, 2)
    number = render_text(str(i))
    paste(ink, number, 3, label_width + i * cell + (cell - number.shape[1]) // 2)
    for j in range(n):
      top, left = header + i * cell, label_width + j * cell
      share = shares[i, j]
      if share > 0:
        fade = int(round(255 * (1 - share)))
        colour = (fade, 255, fade) if i == j else (255, fade, fade)
        canvas[top + 1:top + cell, left + 1:left + cell] = colour
      if matrix[i, j]:
        text = render_text(str(matrix[i, j]))
        paste(ink, text[:, :cell - 2], top + (cell - GLYPH_HEIGHT) // 2,
              left + max(1, (cell - text.shape[1]) // 2))
  canvas[ink > 0] = 0
  return canvas
