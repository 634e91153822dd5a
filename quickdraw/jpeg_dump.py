"""The JPEG dump: drawings as image files in a folder per category.

Replaces the old `convert_npy_to_jpg.py` step for those who still want
images on disk (to look at, for another tool, or for the folder-per-class
layout that retrain.py and `keras.utils.image_dataset_from_directory` read):

  <output_dir>/<category>/<category>_<row>.jpg

where <row> is the drawing's row in its category's file. The drawings are
the ones training uses: the same sampling (`samples_per_class`) and, with
`split`, the same split rule.

Reading, resizing and encoding run in parallel in tf.data; every file is
written under a temporary name and renamed when whole, so an interrupted
dump leaves no half-written image and a re-run skips what is already there.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os

import keras
import numpy as np
import tensorflow as tf

from quickdraw import atomic_files, npy_files
from quickdraw.data_source import QuickDrawSource
from quickdraw.errors import QuickDrawError
from quickdraw.splits import Split

SPLITS = ("all",) + tuple(s.value for s in Split)
FORMATS = {"jpeg": ".jpg", "png": ".png"}


@dataclasses.dataclass(frozen=True)
class DumpConfig:
  """How to write the images.

  Attributes:
    output_dir: Root of the folder-per-category tree.
    split: "all" (every sampled drawing), "train", "validation" or "test".
    size: Side of the images: 28 (as drawn) or larger, resized bilinearly
      as for training.
    invert: Dark ink on white instead of QuickDraw's light ink on black.
    image_format: "jpeg" or "png" (lossless).
    quality: JPEG quality, 1 to 100.
    overwrite: Rewrite files that already exist.
  """
  output_dir: str
  split: str = "all"
  size: int = 28
  invert: bool = False
  image_format: str = "jpeg"
  quality: int = 95
  overwrite: bool = False

  def __post_init__(self):
    if self.split not in SPLITS:
      raise QuickDrawError(f"--split={self.split}; use one of "
                           f"{', '.join(SPLITS)}")
    if self.image_format not in FORMATS:
      raise QuickDrawError(f"--format={self.image_format}; use jpeg or png")
    if not 1 <= self.quality <= 100:
      raise QuickDrawError(f"--quality={self.quality} is outside 1..100")
    if self.size < 1:
      raise QuickDrawError(f"--size={self.size}; pass 28 or a larger side")


def file_name(category: str, row: int, image_format: str = "jpeg") -> str:
  """`<category>_<row>.jpg`: the row ties the image to its source row."""
  return f"{category}_{row}{FORMATS[image_format]}"


def rows_to_dump(source: QuickDrawSource, class_id: int,
                 split: str) -> np.ndarray:
  """The rows of one category that `split` selects, ascending."""
  if split == "all":
    return source.selected_rows(class_id)
  return source.split_rows(class_id, split)


def encode_fn(config: DumpConfig):
  """uint8 (28, 28, 1) drawing -> encoded image bytes, as a pure tf op."""

  def encode(image):
    if config.size != npy_files.IMAGE_SIZE:
      image = tf.image.resize(tf.cast(image, tf.float32),
                              (config.size, config.size), method="bilinear")
      image = tf.cast(tf.clip_by_value(tf.round(image), 0, 255), tf.uint8)
    if config.invert:
      image = 255 - image
    if config.image_format == "png":
      return tf.io.encode_png(image)
    return tf.io.encode_jpeg(image, quality=config.quality,
                             chroma_downsampling=False)

  return encode


def dump_category(source: QuickDrawSource, class_id: int,
                  config: DumpConfig, verbose: int = 1) -> tuple[int, int]:
  """Writes one category's images.

  Returns:
    (written, skipped): files written now, and files left as they were.

  Raises:
    QuickDrawError: the folder cannot be written.
  """
  category = source.categories[class_id]
  folder = os.path.join(config.output_dir, category)
  try:
    os.makedirs(folder, exist_ok=True)
  except OSError as e:
    raise QuickDrawError(f"cannot write to --output_dir {config.output_dir}: "
                         f"{e.strerror or e}; pass a writable folder") from None
  rows = rows_to_dump(source, class_id, config.split)
  names = [file_name(category, int(r), config.image_format) for r in rows]
  if config.overwrite:
    todo = np.arange(len(rows))
  else:
    # Files appear only by rename, whole: one that exists is complete.
    existing = set(os.listdir(folder))
    todo = np.array([i for i, n in enumerate(names) if n not in existing],
                    dtype=np.int64)
  bar = (keras.utils.Progbar(len(rows), unit_name="image", verbose=verbose)
         if verbose else None)
  if bar:
    print(f"{category}: {len(rows) - len(todo)} of {len(rows)} already there")
    bar.update(len(rows) - len(todo))
  if not len(todo):
    return 0, len(rows)

  todo_rows = rows[todo]

  def read(positions):
    # In file order, one read per batch (positions are ascending); from a
    # whole file or the row cache alike.
    return source.read_rows(class_id, todo_rows[positions]).reshape(
        -1, 28, 28, 1)

  def read_op(positions):
    images = tf.numpy_function(read, [positions], tf.uint8, stateful=False)
    images.set_shape([None, 28, 28, 1])
    return images

  ds = (tf.data.Dataset.range(len(todo)).batch(256)
        .map(read_op, num_parallel_calls=tf.data.AUTOTUNE)
        .unbatch()
        .map(encode_fn(config), num_parallel_calls=tf.data.AUTOTUNE)
        .batch(64).prefetch(tf.data.AUTOTUNE))
  written = 0
  for batch in ds:
    for data in batch.numpy():
      path = os.path.join(folder, names[todo[written]])
      left = len(todo) - written
      with atomic_files.disk_full_is_an_error(
          config.output_dir, f"the {left} images of {category!r} still to "
          "write", left * len(data)):
        atomic_files.write_bytes(path, data)
      written += 1
    if bar:
      bar.update(len(rows) - len(todo) + written)
  return written, len(rows) - written


def dump(source: QuickDrawSource, config: DumpConfig,
         verbose: int = 1) -> dict[str, tuple[int, int]]:
  """Writes every category's images; returns (written, skipped) per category."""
  return {source.categories[i]: dump_category(source, i, config, verbose)
          for i in range(source.num_classes)}


def remove_stale_temporaries(config: DumpConfig,
                             categories: list[str]) -> None:
  """Deletes temporary files a killed dump left (they are never whole)."""
  for category in categories:
    folder = os.path.join(config.output_dir, category)
    if not os.path.isdir(folder):
      continue
    for name in os.listdir(folder):
      if name.startswith(".") and ".tmp" in name:
        with contextlib.suppress(FileNotFoundError):
          os.unlink(os.path.join(folder, name))
