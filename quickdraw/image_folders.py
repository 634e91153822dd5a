"""Class folders of pictures (retrain.py's --image_dir) as drawings.

The layout is retrain.py's and `keras.utils.image_dataset_from_directory`'s:

  <image_dir>/<label>/**/<picture>.png|.jpg|.jpeg|.gif|.bmp|.webp

one sub-folder per class, named for its label, pictures at any depth. Each
picture becomes the 28x28 drawing the network sees by the app model's own
canvas preprocessing (`inference.drawing_from_image`, which
`quickdraw-predict` runs too): a photo of a paper doodle, an app canvas in
any theme, or a 28x28 JPEG of the old converter (either polarity) all come
out as QuickDraw drawings. A class is then a file of rows like an official
`.npy` (`PictureClass`), so sampling, the bottleneck cache, training and the
export treat it as one; a folder named for a chosen QuickDraw category adds
its pictures to that category's drawings (`WithPictures`).

* The split is retrain.py's rule: a sha1 of the picture's path within its
  class folder (anything after `_nohash_` in the name ignored), so adding
  pictures moves none, and the seed does not move them either.
* The bottleneck cache key hashes every picture's path and content
  (sha256), so a changed picture is computed again.
* Unreadable or empty pictures, and pictures with too little ink to be a
  drawing, are left out and reported; a class with fewer than
  `min_images` pictures is an error. Nothing in the folder is written.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
import re
from collections.abc import Sequence

import numpy as np
from absl import logging

from quickdraw import canvases, preprocessing, splits
from quickdraw.errors import QuickDrawError

PICTURE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".gif", ".bmp", ".webp")
MIN_IMAGES_PER_CLASS = 20
# Bumped when the preprocessing that makes drawings of pictures changes:
# it is part of every picture class's cache identity.
_PREPROCESSING_VERSION = 1
# Bad pictures named in the log, then a count.
_LISTED = 10
# Pixels decoded into one preprocessing batch (a few phone canvases, or
# thousands of 28x28 pictures).
_BATCH_PIXELS = 8_000_000
# retrain.py's MAX_NUM_IMAGES_PER_CLASS: the modulus of its split hash.
_HASH_MODULUS = 2**27 - 1


def class_names(image_dir: str) -> list[str]:
  """The class folders of `image_dir`, sorted (hidden ones skipped).

  Raises:
    QuickDrawError: not a folder, or one with no class folders.
  """
  image_dir = os.path.expanduser(image_dir)
  if not os.path.isdir(image_dir):
    raise QuickDrawError(
        f"--image_dir={image_dir} is not a folder; pass a folder holding one "
        "sub-folder of pictures per class")
  names = sorted(n for n in os.listdir(image_dir) if not n.startswith(".")
                 and os.path.isdir(os.path.join(image_dir, n)))
  if not names:
    loose = [n for n in os.listdir(image_dir)
             if n.lower().endswith(PICTURE_EXTENSIONS)]
    raise QuickDrawError(
        f"--image_dir={image_dir} has no class folders"
        + (f" but {len(loose)} picture{'s' * (len(loose) > 1)} of its own "
           "(a class folder? pass the folder above it)" if loose else "")
        + "; put each class's pictures in a sub-folder named for its label, "
        f"e.g. {os.path.join(image_dir, 'logo', '1.png')}")
  return names


def picture_paths(folder: str) -> list[str]:
  """Pictures under `folder` at any depth, as sorted paths relative to it
  ('/'-separated)."""
  found = []
  for root, dirs, files in os.walk(folder):
    dirs[:] = [d for d in dirs if not d.startswith(".")]
    for name in files:
      if name.lower().endswith(PICTURE_EXTENSIONS) and not name.startswith(
          "."):
        found.append(os.path.relpath(os.path.join(root, name), folder)
                     .replace(os.sep, "/"))
  return sorted(found)


def split_scores(names: Sequence[str]) -> np.ndarray:
  """retrain.py's split score in [0, 100] of each picture's path within its
  class folder: the same path is always in the same split."""
  scores = np.empty(len(names), np.float64)
  for i, name in enumerate(names):
    stem = re.sub(r"_nohash_.*$", "", name)
    hashed = int(hashlib.sha1(stem.encode()).hexdigest(), 16)
    scores[i] = (hashed % (_HASH_MODULUS + 1)) * (100.0 / _HASH_MODULUS)
  return scores


@dataclasses.dataclass(frozen=True)
class PictureClass:
  """One class folder's pictures as drawings: a file of rows
  (`npy_files.DrawingFile`'s interface) whose rows are all used.

  Attributes:
    category: The label (the folder's name).
    path: The class folder.
    names: Each row's picture, relative to `path`.
    drawings: uint8 (N, 784), light ink on black.
    digest: sha256 over every picture's name and content.
    unreadable: One-line reasons of the pictures left out as unreadable.
    too_little_ink: How many pictures were left out as (nearly) blank.
  """
  category: str
  path: str
  names: tuple[str, ...]
  drawings: np.ndarray
  digest: str
  unreadable: tuple[str, ...] = ()
  too_little_ink: int = 0
  # Each picture's split score, hashed once: splits are asked for often.
  scores: np.ndarray = dataclasses.field(init=False, repr=False)

  def __post_init__(self):
    object.__setattr__(self, "scores", split_scores(self.names))

  def __len__(self) -> int:
    return len(self.drawings)

  def identity(self) -> str:
    """What the rows' cache keys hash: the pictures' names and contents."""
    return f"pictures-{_PREPROCESSING_VERSION}-{self.digest}"

  def read_rows(self, rows: np.ndarray) -> np.ndarray:
    return self.drawings[np.asarray(rows, np.int64)]

  def selected_rows(self, seed: int, samples_per_class: int) -> None:
    """Every picture is used: the class caps QuickDraw's files only."""
    del seed, samples_per_class
    return None

  def split_scores(self, seed: int, rows: np.ndarray) -> np.ndarray:
    del seed  # retrain.py's rule: the path alone
    return self.scores[np.asarray(rows, np.int64)]


class WithPictures:
  """A QuickDraw category's file with a class folder's pictures after its
  rows: rows [0, n) are the file's (sampled and split as always), the rest
  the pictures' (all used, split by path)."""

  def __init__(self, base, pictures: PictureClass):
    self.base, self.pictures = base, pictures
    self.category = base.category
    self.path = base.path
    self._n = len(base)

  def __len__(self) -> int:
    return self._n + len(self.pictures)

  def identity(self) -> str:
    return f"{self.base.identity()}\0{self.pictures.identity()}"

  def read_rows(self, rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, np.int64)
    cut = int(np.searchsorted(rows, self._n))  # rows are ascending
    return np.concatenate([self.base.read_rows(rows[:cut]),
                           self.pictures.read_rows(rows[cut:] - self._n)])

  def selected_rows(self, seed: int, samples_per_class: int) -> np.ndarray:
    own = splits.sample_rows(seed, self.category, self._n, samples_per_class)
    return np.concatenate([own, self._n + np.arange(len(self.pictures))])

  def split_scores(self, seed: int, rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, np.int64)
    mine = rows < self._n
    scores = np.empty(len(rows), np.float64)
    scores[mine] = splits.split_scores(seed, self.category, rows[mine])
    scores[~mine] = self.pictures.split_scores(seed, rows[~mine] - self._n)
    return scores


def _drawings_of(pictures: list[np.ndarray]) -> np.ndarray:
  """Opaque pictures -> uint8 (N, 784) drawings, batched by shape."""
  out = np.zeros((len(pictures), 28 * 28), np.uint8)
  by_shape: dict[tuple, list[int]] = {}
  for i, p in enumerate(pictures):
    by_shape.setdefault(p.shape, []).append(i)
  for shape, indices in by_shape.items():
    step = max(1, _BATCH_PIXELS // (shape[0] * shape[1]))
    for start in range(0, len(indices), step):
      chunk = indices[start:start + step]
      drawings = preprocessing.canvas_to_drawings(
          np.stack([pictures[i] for i in chunk])).numpy()
      out[chunk] = drawings.reshape(len(chunk), -1).astype(np.uint8)
  return out


def read_class(folder: str, label: str) -> PictureClass:
  """Reads every picture under `folder` into drawings, leaving out the
  unreadable and the blank (counted in the result). Pictures are decoded
  and converted a batch of about _BATCH_PIXELS at a time, so a folder of
  phone photos never sits decoded in memory."""
  names, drawings, unreadable = [], [], []
  pending: list[np.ndarray] = []
  pixels = 0
  digest = hashlib.sha256()

  def flush():
    if pending:
      drawings.append(_drawings_of(pending))
      pending.clear()

  for name in picture_paths(folder):
    path = os.path.join(folder, name)
    try:
      with open(path, "rb") as f:
        data = f.read()
    except OSError as e:
      unreadable.append(f"{path}: {e.strerror or e}")
      continue
    if not data:
      unreadable.append(f"{path}: empty file")
      continue
    try:
      picture = canvases.decode_picture(data, path)
    except QuickDrawError as e:
      unreadable.append(str(e))
      continue
    names.append(name)
    pending.append(picture[..., :3])
    digest.update(f"{name}\0{hashlib.sha256(data).hexdigest()}\0".encode())
    pixels += picture.shape[0] * picture.shape[1]
    if pixels >= _BATCH_PIXELS:
      flush()
      pixels = 0
  flush()
  drawings = (np.concatenate(drawings) if drawings else
              np.zeros((0, 28 * 28), np.uint8))
  inked = drawings.any(axis=1)
  return PictureClass(
      category=label, path=folder,
      names=tuple(n for n, keep in zip(names, inked) if keep),
      drawings=drawings[inked], digest=digest.hexdigest(),
      unreadable=tuple(unreadable),
      too_little_ink=int(np.sum(~inked)))


def _report(picture_class: PictureClass) -> None:
  bad = picture_class.unreadable
  if bad:
    lines = [f"  {reason}" for reason in bad[:_LISTED]]
    if len(bad) > _LISTED:
      lines.append(f"  ... and {len(bad) - _LISTED} more")
    logging.warning("%d pictures of %r could not be read and are left "
                    "out:\n%s", len(bad), picture_class.category,
                    "\n".join(lines))
  if picture_class.too_little_ink:
    logging.warning(
        "%d pictures of %r have too little ink to be a drawing (blank, a "
        "dot, a tick) and are left out", picture_class.too_little_ink,
        picture_class.category)


def read_image_dir(image_dir: str, min_images: int = MIN_IMAGES_PER_CLASS
                   ) -> list[PictureClass]:
  """Every class folder of `image_dir`, read (`read_class`), in name order.

  Raises:
    QuickDrawError: `class_names`'s errors, or a class with fewer than
      `min_images` usable pictures (the message names it and its count).
  """
  image_dir = os.path.expanduser(image_dir)
  classes = []
  for label in class_names(image_dir):
    picture_class = read_class(os.path.join(image_dir, label), label)
    _report(picture_class)
    if len(picture_class) < min_images:
      raise QuickDrawError(
          f"class {label!r} in --image_dir={image_dir} has "
          f"{len(picture_class)} usable pictures, fewer than "
          f"--min_images_per_class={min_images}; add pictures to "
          f"{picture_class.path}, or lower --min_images_per_class")
    classes.append(picture_class)
  return classes


def merge(files: list, categories: Sequence[str],
          picture_classes: list[PictureClass]) -> list:
  """The run's files: QuickDraw's, a folder named for one of them added to
  it, then the other folders' classes in name order."""
  files = list(files)
  extra = []
  for picture_class in picture_classes:
    if picture_class.category in categories:
      at = list(categories).index(picture_class.category)
      files[at] = WithPictures(files[at], picture_class)
      logging.info("%d pictures of %s add to QuickDraw's %r drawings",
                   len(picture_class), picture_class.path,
                   picture_class.category)
    else:
      extra.append(picture_class)
  for picture_class in extra:
    logging.info("Class %r: %d pictures from %s", picture_class.category,
                 len(picture_class), picture_class.path)
  return files + extra
