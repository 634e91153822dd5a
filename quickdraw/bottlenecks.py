"""The bottleneck cache: each drawing's backbone features, computed once.

With a frozen backbone and no augmentation, a drawing's pooled features never
change, so they are computed once per (backbone, image size, data) and every
later epoch, and every later run on the same data, trains the head from them
(retrain.py's central speed trick).

A cache entry is a folder `<bottleneck_dir>/<split>-<key>/` holding
`features.npy` (float32, memmapped), `labels.npy` and `meta.json`. The key
hashes everything the features depend on: the architecture and its input
range, the backbone's actual weight values (so `--weights` and a fine-tuned
backbone count too), the input size, and the split's exact drawings (category, file, size, mtime and
every row). Change any of them and a new entry is computed.

Computation writes into `features.partial.npy` and records progress every
few batches, so a killed run resumes where it stopped; `meta.json` is written
last, by rename, and marks the entry complete. It holds the sha256 of
`features.npy` and `labels.npy`, checked on every load (about 0.1 s per
100 MB, against minutes to compute them): an entry damaged by a machine
crash or a bit flip is computed again, with a one-line notice, never used.

A new entry copies the features of every class whose file and rows an
earlier entry of the same backbone holds (`_reuse`: a folder of pictures
changed, or a category added), and computes only the rest.

Two runs sharing the cache take turns on an entry: the one computing it
holds `<entry>.lock` (an flock, released even if the process is killed),
and the other waits, then reads the finished entry.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import shutil
import time
import weakref

import keras
import numpy as np
import tensorflow as tf
from absl import logging

from quickdraw import (atomic_files, backbones, input_pipeline,
                       litert_features, preprocessing)
from quickdraw.data_source import QuickDrawSource
from quickdraw.errors import QuickDrawError
from quickdraw.splits import Split

_FORMAT = 3  # 2: the architecture and its input range in the key; 3: block sampling
_PROGRESS_EVERY = 20  # batches between progress records


def data_digest(source: QuickDrawSource, split: Split | str) -> str:
  """A sha256 of a split's drawings: which files, which rows, what order.

  The rows and their order follow from the files, the split and the
  settings that sample and split them (see `splits`), so those are hashed
  instead of an index: 50 million drawings need no index to find their cache.
  """
  digest = hashlib.sha256()
  for f in source.files:
    digest.update(f"{f.category}\0{f.identity()}\0".encode())
  config = source.config
  digest.update(f"{Split(split).value}\0{config.seed}\0"
                f"{config.samples_per_class}\0{config.validation_percentage}\0"
                f"{config.testing_percentage}".encode())
  return digest.hexdigest()


def backbone_key(backbone: keras.Model, image_size: int) -> str:
  """What a drawing's features depend on besides the drawing: the
  architecture, its input range, its weight values and the input size."""
  return hashlib.sha256(
      f"{_FORMAT}\0{backbone.name}\0{backbones.input_range_of(backbone)}\0"
      f"{backbones.weights_digest(backbone)}\0{image_size}".encode()
  ).hexdigest()


def entry_dir(bottleneck_dir: str, backbone: keras.Model,
              source: QuickDrawSource, split: Split | str,
              image_size: int, key: str | None = None) -> str:
  """The cache folder for `split` (`key`: `backbone_key`, if known)."""
  key = hashlib.sha256(
      f"{key or backbone_key(backbone, image_size)}\0"
      f"{data_digest(source, split)}".encode()).hexdigest()[:20]
  return os.path.join(bottleneck_dir, f"{Split(split).value}-{key}")


def class_blocks(source: QuickDrawSource, split: Split | str
                 ) -> list[list]:
  """Each class's run of a split's drawings, as [what its file holds,
  which of its rows, how many]: a block that another entry of the same
  backbone holds too has the same features there (`_reuse`)."""
  blocks = []
  for c, f in enumerate(source.files):
    rows = source.split_rows(c, split)
    blocks.append([hashlib.sha256(f.identity().encode()).hexdigest(),
                   hashlib.sha256(rows.astype(np.int64).tobytes()
                                  ).hexdigest(), len(rows)])
  return blocks


def load_or_compute(backbone: keras.Model, source: QuickDrawSource,
                    split: Split | str, image_size: int, bottleneck_dir: str,
                    batch_size: int = 64, verbose: int = 1,
                    run_drawings: int = 0
                    ) -> tuple[np.ndarray, np.ndarray, bool]:
  """Returns a split's (features, labels), from the cache when possible.

  Args:
    backbone: The frozen backbone, images -> pooled features.
    source: The opened data.
    split: Which split.
    image_size: The backbone's input side.
    bottleneck_dir: The cache folder.
    batch_size: Drawings per backbone call.
    verbose: 1 shows a Keras progress bar while computing, 2 one line when
      done, 0 nothing.
    run_drawings: How many drawings the run will compute features of in
      all (`litert_features.forward` weighs a conversion against them).

  Returns:
    (features float32 (N, D) memmap, labels int32 (N,), computed): the
    drawings in the split's index order; `computed` is False when the cache
    already held them (no backbone forward pass was made).

  Raises:
    QuickDrawError: the cache folder cannot be written.
  """
  key = backbone_key(backbone, image_size)
  folder = entry_dir(bottleneck_dir, backbone, source, split, image_size, key)
  try:
    os.makedirs(bottleneck_dir, exist_ok=True)
  except OSError as e:
    raise QuickDrawError(
        f"cannot write to --bottleneck_dir {bottleneck_dir}: "
        f"{e.strerror or e}; pass a writable folder") from None
  with _entry_lock(folder, split):
    loaded = _load_checked(folder)
    if loaded is not None:
      # The backbone's LiteRT model, if one was kept, serves what has no
      # cache (the export's references, calibration's canvases).
      litert_features.forward(backbone, image_size, bottleneck_dir, 0, None)
      return (*loaded, False)
    return _compute(backbone, source, split, image_size, folder,
                    batch_size, verbose, run_drawings, key)


@contextlib.contextmanager
def _entry_lock(folder: str, split: Split | str):
  """Holds `<folder>.lock` while the entry is checked or computed."""
  with open(folder + ".lock", "a") as lock:
    try:
      fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      logging.info("Another run is computing the %s bottlenecks in %s; "
                   "waiting for it", Split(split).value, folder)
      fcntl.flock(lock, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(lock, fcntl.LOCK_UN)


def _load_checked(folder: str) -> tuple[np.ndarray, np.ndarray] | None:
  """A complete entry whose files match their checksums; None when there
  is none (a damaged one is removed, with a notice)."""
  meta_path = os.path.join(folder, "meta.json")
  if not os.path.exists(meta_path):
    return None
  try:
    with open(meta_path) as f:
      good = atomic_files.sums_match(folder, json.load(f)["sha256"])
  except (OSError, ValueError, KeyError, TypeError):
    good = False
  if good:
    try:
      return _load(folder)
    except (OSError, ValueError):
      pass
  logging.warning("%s: a damaged bottleneck cache entry (its checksum does "
                  "not match); computing it again", folder)
  shutil.rmtree(folder, ignore_errors=True)
  return None


def _reuse(folder: str, key: str, split: Split | str, blocks: list,
           features: np.ndarray, start: int) -> np.ndarray:
  """Copies into `features` the class blocks from position `start` on that
  another complete entry of the same backbone and split holds (an image
  folder changed, or a category was added: the other classes' features
  are the same). Returns a mask of the positions filled."""
  filled = np.zeros(len(features), bool)
  offsets = np.cumsum([0] + [count for _, _, count in blocks])
  wanted = {(identity, rows): i for i, (identity, rows, count)
            in enumerate(blocks) if count and offsets[i] >= start}
  parent = os.path.dirname(folder)
  prefix = f"{Split(split).value}-"
  donors = []  # (newest first, entry folder)
  for entry in os.listdir(parent):
    donor = os.path.join(parent, entry)
    if entry.startswith(prefix) and donor != folder:
      with contextlib.suppress(OSError):  # not an entry, or being removed
        donors.append((-os.path.getmtime(os.path.join(donor, "meta.json")),
                       donor))
  for _, donor in sorted(donors):
    if not wanted:
      break
    try:
      with open(os.path.join(donor, "meta.json")) as f:
        meta = json.load(f)
    except (OSError, ValueError):
      continue  # computing, or not an entry
    if meta.get("backbone") != key or not any(
        (b[0], b[1]) in wanted for b in meta.get("blocks", [])):
      continue
    loaded = _load_checked(donor)
    if loaded is None or loaded[0].shape[1] != features.shape[1]:
      continue
    at = 0
    for identity, rows, count in meta["blocks"]:
      i = wanted.pop((identity, rows), None)
      if i is not None:
        features[offsets[i]:offsets[i] + count] = loaded[0][at:at + count]
        filled[offsets[i]:offsets[i] + count] = True
      at += count
  return filled


def _compute(backbone: keras.Model, source: QuickDrawSource,
             split: Split | str, image_size: int, folder: str,
             batch_size: int, verbose: int, run_drawings: int = 0,
             key: str = "") -> tuple[np.ndarray, np.ndarray, bool]:
  meta_path = os.path.join(folder, "meta.json")
  os.makedirs(folder, exist_ok=True)

  n = source.split_size(split)
  dim = int(backbone.output_shape[-1])
  partial = os.path.join(folder, "features.partial.npy")
  progress_path = os.path.join(folder, "progress.json")
  done, features = 0, None
  if os.path.exists(partial) and os.path.exists(progress_path):
    with open(progress_path) as f:
      done = int(json.load(f)["done"])
    features = np.load(partial, mmap_mode="r+")
  if features is None or features.shape != (n, dim):
    done = 0  # Nothing to resume from (or an unexpected shape): start over.
    features = np.lib.format.open_memmap(partial, "w+", np.float32, (n, dim))
    # Reserve the space now: a full disk under a memory map would kill the
    # process (SIGBUS) instead of raising.
    with atomic_files.disk_full_is_an_error(
        os.path.dirname(folder), f"the {Split(split).value} bottlenecks",
        n * dim * 4, " (or pass --bottleneck_dir on another disk)"):
      try:
        with open(partial, "r+b") as f:
          os.posix_fallocate(f.fileno(), 0, os.path.getsize(partial))
      except OSError:
        del features
        os.unlink(partial)
        raise
  if done:
    logging.info("Resuming %s bottlenecks at %d of %d", Split(split).value,
                 done, n)
  blocks = class_blocks(source, split)
  reused = _reuse(folder, key, split, blocks, features, done)
  if reused.any():
    features.flush()
    logging.info("The features of %d of the %s split's %d drawings (classes "
                 "unchanged) come from an earlier cache entry",
                 reused.sum(), Split(split).value, n)

  # Unshuffled, so batch b always holds positions [b*B, (b+1)*B): the record
  # of finished batches is enough to resume. The pipeline ships 28x28 uint8
  # drawings, and the forward pass upsamples them (Keras' compiled one, or
  # LiteRT's model, a third of Keras' time on a CPU): 784 bytes a drawing
  # cross tf.data instead of 600 KB, and on two cores the backbone does not
  # compete with tf.data's threads.
  lite = litert_features.forward(
      backbone, image_size, os.path.dirname(folder),
      max(n - done - int(reused.sum()), run_drawings),
      sample=lambda: next(iter(input_pipeline.make_dataset(
          source, split, 16, shuffle=False, value_range=None)))[0].numpy())
  ds = input_pipeline.make_dataset(source, split, batch_size, shuffle=False,
                                  value_range=None)
  ds = ds.with_options(input_pipeline.untuned())
  first_batch = done // batch_size
  done = first_batch * batch_size
  bar = (keras.utils.Progbar(n, unit_name="drawing", verbose=verbose)
         if verbose else None)
  if bar:
    bar.update(done)
  infer = lite or compiled_forward(backbone, image_size)
  # In a log file (verbose 2: one line at the end), a line every 10% too:
  # this is the longest phase of a first run.
  tenth, started = 10 * done // max(n, 1), time.monotonic()
  for b, (images, _) in enumerate(ds.skip(first_batch), start=first_batch):
    todo = ~reused[done:done + len(images)]
    if todo.all():
      features[done:done + len(todo)] = np.asarray(infer(images))
    elif todo.any():
      features[done:done + len(todo)][todo] = np.asarray(
          infer(tf.boolean_mask(images, todo)))
    done += len(todo)
    if bar:
      bar.update(done)
    if verbose == 2 and 10 * done // n > tenth and done < n:
      tenth = 10 * done // n
      logging.info("  %d%% (%d of %d drawings, %.0f s)", 100 * done // n,
                   done, n, time.monotonic() - started)
    if (b + 1) % _PROGRESS_EVERY == 0:
      features.flush()
      atomic_files.write_text(progress_path, json.dumps({"done": done}))
  features.flush()
  del features

  labels = source.split_labels(split)
  with atomic_files.disk_full_is_an_error(
      os.path.dirname(folder), f"the {Split(split).value} labels",
      labels.nbytes), atomic_files.atomic_path(
          os.path.join(folder, "labels.npy")) as tmp:
    np.save(tmp, labels)
  os.replace(partial, os.path.join(folder, "features.npy"))
  atomic_files.write_text(meta_path, json.dumps({
      "format": _FORMAT, "split": Split(split).value, "drawings": n,
      "feature_dim": dim, "image_size": image_size,
      "architecture": backbone.name, "backbone": key, "blocks": blocks,
      "categories": list(source.categories),
      "sha256": atomic_files.file_sums(folder, ("features.npy",
                                                "labels.npy"))},
                                            indent=2) + "\n")
  if os.path.exists(progress_path):
    os.unlink(progress_path)
  return (*_load(folder), True)


def drawings_features(backbone: keras.Model, drawings: np.ndarray,
                      image_size: int, bottleneck_dir: str,
                      name: str = "junk") -> np.ndarray:
  """Features of a small set of drawings not in any split (the outlier
  exposure's junk), cached beside the splits' under a key of the backbone,
  its weights, the size and the drawings' bytes.

  Returns:
    float32 (N, D), in memory.
  """
  key = atomic_files.array_key(f"{backbone_key(backbone, image_size)}\0",
                               drawings)
  path = os.path.join(bottleneck_dir, f"{name}-{key}.npy")
  if os.path.exists(path):
    features = atomic_files.load_checked_npy(path)
    if features is not None and features.shape[0] == len(drawings):
      return features
    logging.warning("%s: a damaged cache entry; computing it again", path)
  logging.info("Features of the %s (%d drawings)", name, len(drawings))
  lite = litert_features.forward(backbone, image_size, bottleneck_dir,
                                 len(drawings), lambda: drawings[:16])
  if lite:
    features = lite(drawings)
  else:
    forward = compiled_forward(backbone, image_size)
    features = np.concatenate([
        np.asarray(forward(drawings[i:i + 256]), np.float32)
        for i in range(0, len(drawings), 256)])
  try:
    os.makedirs(bottleneck_dir, exist_ok=True)
    with atomic_files.disk_full_is_an_error(
        bottleneck_dir, f"the {name} features", features.nbytes):
      atomic_files.save_checked_npy(path, features)
  except OSError as e:
    raise QuickDrawError(
        f"cannot write to --bottleneck_dir {bottleneck_dir}: "
        f"{e.strerror or e}; pass a writable folder") from None
  return features


_FORWARD = weakref.WeakKeyDictionary()


def compiled_forward(backbone: keras.Model, image_size: int):
  """28x28 drawings -> upsampled into the backbone's input range ->
  backbone features, as a tf.function.

  Kept per backbone and size so that every split reuses one trace instead of
  paying for tracing again.
  """
  compiled = _FORWARD.setdefault(backbone, {})
  value_range = backbones.input_range_of(backbone)
  if image_size not in compiled:
    @tf.function(reduce_retracing=True)
    def infer(drawings):
      images = preprocessing.upsample_to_rgb(drawings, image_size,
                                             value_range)
      return backbone(images, training=False)

    compiled[image_size] = infer
  return compiled[image_size]


def _load(folder: str) -> tuple[np.ndarray, np.ndarray]:
  features = np.load(os.path.join(folder, "features.npy"), mmap_mode="r")
  labels = np.load(os.path.join(folder, "labels.npy"))
  return features, labels
