"""The frozen backbone's forward pass through LiteRT, on CPUs.

On a CPU, LiteRT (XNNPACK) runs a MobileNet about three times faster per
drawing than Keras does (scripts/README.md, bench_train.py), and a frozen
backbone's features are all a bottleneck cache needs. So on a machine with
no GPU or TPU, the bottlenecks of a run with enough drawings to repay the
conversion are computed by the backbone's float32 TFLite model:

* converted once per backbone (architecture, input range, weight values and
  input size) and kept in the bottleneck folder beside the features
  (`litert-<key>.tflite`), so that a rerun, and the export's references
  after it, load it in milliseconds;
* checked against Keras on a batch of the run's own drawings when made:
  features more than `TOLERANCE` apart, or a conversion that fails, and the
  run goes on in Keras with a notice;
* given the 28x28 drawings themselves: the model upsamples them
  (`preprocessing.upsample_to_rgb`, converted with the backbone) on every
  core, in 0.50 ms a drawing for v1 0.25 where upsampling in tf.data
  beside it took 0.86 (the copies of 600 KB images and two thread pools
  on two cores cost more than the upsampling).

Keras stays the path on GPUs and TPUs, for fine-tuning (the backbone
changes, so there is nothing to cache) and for `--augment`.

`predictor(classifier)` gives the export's calibration and checks the same
speed: the head on the LiteRT features, for a classifier whose backbone is
one of these (same weights) in this process.
"""

from __future__ import annotations

import hashlib
import os
import warnings
import weakref
from collections.abc import Callable
from typing import NamedTuple

import keras
import numpy as np
import tensorflow as tf
from absl import logging
from tensorflow.python.framework import convert_to_constants

from quickdraw import atomic_files, backbones, inference, preprocessing, quiet
from quickdraw.pens import cores

# Features of a batch, Keras against LiteRT, as a share of the largest
# feature: measured 2.1e-5 (MobileNetV2 0.5) and 2.5e-5 (v1 0.25) on an
# AVX-512 Xeon, whose absolute differences (1.3e-4 and 1.5e-4 on features
# up to 6) are float32 rounding of sums in another order; 5e-5 absolute on
# an AVX2 EPYC. A wrong conversion is off by whole units.
TOLERANCE = 1e-4
# Below this many drawings to compute (at 224 px; a smaller input counts
# for its share of the pixels), a first conversion (1 to 4 s on 2 cores)
# would cost about what it saves: Keras does them.
MIN_DRAWINGS = 1000
_FORMAT = 3  # 3: takes 28x28 drawings; 2: upsampled images


class _Made(NamedTuple):
  """A backbone's LiteRT model made or loaded in this process."""
  digest: str  # of the weights it was made of
  lite: inference.TFLitePredictor
  path: str  # where it is kept (the bottleneck folder)
  image_size: int  # the side it upsamples the drawings to


# Backbones whose LiteRT model was made or loaded here -> its `_Made`.
_MADE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def on_cpu_only() -> bool:
  """True when TensorFlow sees no GPU or TPU (LiteRT's case)."""
  return not (tf.config.list_logical_devices("GPU") or
              tf.config.list_logical_devices("TPU"))


def _interpreter(content: bytes) -> inference.TFLitePredictor:
  """The backbone's model run by LiteRT on every core, 16 drawings a call
  (faster per drawing than 64: 0.50 against 0.59 ms for v1 0.25)."""
  # Its input is drawings, 0 to 255, whatever the backbone's range.
  return inference.TFLitePredictor("", batch_size=16, num_threads=cores(),
                                   model_content=content,
                                   input_range=(0.0, 255.0))


def model_path(folder: str, backbone: keras.Model, image_size: int,
               digest: str | None = None) -> str:
  """Where `backbone`'s LiteRT model is kept in the bottleneck folder
  (`digest`: its `backbones.weights_digest`, if already at hand)."""
  digest = digest or backbones.weights_digest(backbone)
  key = hashlib.sha256(
      f"{_FORMAT}\0{backbone.name}\0{backbones.input_range_of(backbone)}\0"
      f"{digest}\0{image_size}\0{tf.__version__}"
      .encode()).hexdigest()[:20]
  return os.path.join(folder, f"litert-{key}.tflite")


def forward(backbone: keras.Model, image_size: int, folder: str,
            drawings: int, sample: Callable[[], np.ndarray]
            ) -> inference.TFLitePredictor | None:
  """The LiteRT forward pass for `backbone`, when it is the better path.

  Args:
    backbone: The frozen backbone.
    image_size: Its input side.
    folder: The bottleneck folder, where the model is kept.
    drawings: How many drawings are about to go through it (the run's,
      where it knows); 0 only loads a kept model, converting nothing.
    sample: Gives uint8 (B, 28, 28, 1) drawings of the run: a new
      conversion is checked on them against Keras.

  Returns:
    The forward pass, 28x28 drawings (0 to 255) -> features, or None where
    Keras is the path: an accelerator is in use, too few drawings to repay
    a conversion that is not kept yet, or a conversion that failed or
    disagrees with Keras (said in a notice).
  """
  if not on_cpu_only():
    return None
  digest = backbones.weights_digest(backbone)
  lite = registered(backbone, digest)
  if lite is not None:
    return lite
  path = model_path(folder, backbone, image_size, digest)
  content = _read(path)
  if content is None:
    if not drawings or drawings * (image_size / 224) ** 2 < MIN_DRAWINGS:
      return None
    content = _convert(backbone, image_size, sample())
    if content is None:
      return None
    try:
      atomic_files.write_bytes(path, content)
    except OSError:
      pass  # kept for this process only; the features are what matter
  lite = _interpreter(content)
  _MADE[backbone] = _Made(digest, lite, path, image_size)
  return lite


def registered(backbone: keras.Model, digest: str | None = None
               ) -> inference.TFLitePredictor | None:
  """`backbone`'s LiteRT forward if this process made or loaded one of its
  present weights (a fine-tuned backbone has none); `digest`: its
  `backbones.weights_digest`, if already at hand."""
  made = _made(backbone, digest)
  return made.lite if made else None


def _made(backbone: keras.Model, digest: str | None = None) -> _Made | None:
  made = _MADE.get(backbone)
  if made is not None and made.digest == (
      digest or backbones.weights_digest(backbone)):
    return made
  return None


def _read(path: str) -> bytes | None:
  try:
    with open(path, "rb") as f:
      content = f.read()
  except OSError:
    return None
  try:  # a damaged file is converted again
    _interpreter(content)
  except (ValueError, RuntimeError):
    logging.warning("%s: a damaged LiteRT model; converting it again", path)
    return None
  return content


def _convert(backbone: keras.Model, image_size: int,
             sample: np.ndarray) -> bytes | None:
  """The backbone behind its upsampling, 28x28 drawings (float32, 0 to
  255) -> features, as a float32 TFLite model, if it matches Keras on
  `sample`; None (with a notice) if not."""
  value_range = backbones.input_range_of(backbone)
  spec = tf.TensorSpec([None, 28, 28, 1], tf.float32)
  forward = tf.function(
      lambda x: backbone(preprocessing.upsample_to_rgb(x, image_size,
                                                       value_range),
                         training=False),
      input_signature=[spec], autograph=False)
  try:
    # Not the export's converter (quickdraw.export.convert): training does
    # not import the export, and this model gets no metadata or names. The
    # weights frozen into constants, as the export's are: left as
    # variables, XNNPACK does not take the graph.
    frozen = convert_to_constants.convert_variables_to_constants_v2(
        forward.get_concrete_function())
    converter = tf.lite.TFLiteConverter.from_concrete_functions(
        [frozen], tf.Module())
    with warnings.catch_warnings(), quiet.native_stderr_silenced():
      warnings.simplefilter("ignore")
      content = converter.convert()
  except Exception as e:  # any converter failure: Keras still works
    logging.warning("The backbone did not convert to LiteRT (%s); its "
                    "features are computed by Keras", str(e).splitlines()[0]
                    if str(e) else type(e).__name__)
    return None
  images = preprocessing.upsample_to_rgb(sample[:16], image_size,
                                         value_range)
  expected = np.asarray(backbone(images, training=False))
  got = _interpreter(content)(sample[:16])
  difference = float(np.max(np.abs(got - expected)) / max(
      float(np.max(np.abs(expected))), 1e-6))
  if difference > TOLERANCE:
    logging.warning("The backbone's LiteRT model gives features up to "
                    "%.2g off Keras' (of the largest; tolerance %g); its "
                    "features are computed by Keras", difference, TOLERANCE)
    return None
  logging.info("Bottlenecks by LiteRT on %d cores (features within %.1g "
               "of Keras', of the largest)", cores(), difference)
  return content


class HeadOnFeatures(inference.Predictor):
  """A classifier (images -> backbone -> head) run, on drawings
  (`predict_drawings`), as the head on its backbone's LiteRT features: the
  same probabilities, to float rounding, in about a third of Keras' time on
  a CPU. Model inputs (`__call__`: images already upsampled, such as what
  a canvas model's preprocessing made) go through Keras.

  It keeps the drawings' features beside `model_file` (the LiteRT model,
  in the bottleneck cache) under a key of the model and the drawings'
  bytes: a rerun's calibration and export checks, on the same held-out
  drawings and the same canvases of them, compute no features again.
  """

  def __init__(self, classifier: keras.Model,
               lite: inference.TFLitePredictor, head: keras.Model,
               model_file: str | None = None):
    self.path = ""
    self.model = classifier
    self.image_size = int(classifier.input_shape[1])
    self.input_range = backbones.input_range_of(classifier)
    self._keras = inference.KerasPredictor("", classifier)
    self._lite = lite
    self._model_file = model_file
    self._head = tf.function(lambda x: head(x, training=False),
                             reduce_retracing=True)

  def __call__(self, images):
    return self._keras(images)

  def predict_drawings(self, drawings, chunk=256):
    del chunk  # the interpreter takes the drawings 16 at a time itself
    drawings = np.asarray(drawings, np.uint8).reshape(-1, 784)
    if not len(drawings):
      return np.zeros((0, int(self.model.output_shape[-1])), np.float32)

    def features():
      return self._lite(drawings.reshape(-1, 28, 28, 1))

    made = (atomic_files.cached_npy(_kept_path(self._model_file, drawings),
                                    features) if self._model_file
            else features())
    return np.asarray(self._head(made))


def _kept_path(model_file: str, drawings: np.ndarray) -> str:
  """Where the features of uint8 (N, 784) `drawings` by the LiteRT model
  `model_file` are kept: beside it, under a key of its name (the backbone's
  key) and the drawings' bytes."""
  key = atomic_files.array_key(f"{os.path.basename(model_file)}\0",
                               drawings)
  return os.path.join(os.path.dirname(model_file), f"features-{key}.npy")


def keep_features(classifier: keras.Model, drawings: np.ndarray,
                  features: np.ndarray) -> None:
  """Lets `predictor(classifier)` answer `drawings` from `features`, theirs
  already (a split's bottlenecks, rows of the cache), instead of computing
  them again: a first run's calibration and checks use drawings of the
  validation and test splits the run has just computed. Does nothing when
  the classifier's backbone has no LiteRT model here."""
  if len(features) != len(drawings):
    raise ValueError(f"{len(features)} features for {len(drawings)} "
                     "drawings")
  parts = _parts(classifier)
  made = _made(parts[0]) if parts is not None else None
  if made is not None and made.path:
    drawings = np.asarray(drawings, np.uint8).reshape(-1, 784)
    atomic_files.cached_npy(_kept_path(made.path, drawings),
                            lambda: np.asarray(features, np.float32))


def _parts(classifier: keras.Model) -> tuple[keras.Model, keras.Model] | None:
  """(backbone, head) of a quickdraw classifier (images -> backbone ->
  head), else None."""
  parts = [layer for layer in classifier.layers
           if not isinstance(layer, keras.layers.InputLayer)]
  if len(parts) == 2 and all(isinstance(p, keras.Model) for p in parts):
    return parts[0], parts[1]
  return None


def load_kept(classifier: keras.Model, folder: str) -> bool:
  """Loads the LiteRT model `folder` keeps of `classifier`'s backbone at
  its present weights, if there is one (a re-export of a trained run:
  quickdraw-export); converts nothing. Returns whether one was loaded."""
  parts = _parts(classifier)
  return parts is not None and forward(
      parts[0], int(classifier.input_shape[1]), folder, 0, None) is not None


def predictor(classifier: keras.Model) -> inference.Predictor:
  """The fastest faithful predictor of `classifier`: `HeadOnFeatures` when
  its backbone has a LiteRT forward of the same weights in this process,
  else Keras (`inference.KerasPredictor`)."""
  parts = _parts(classifier)
  if parts is not None:
    made = _made(parts[0])
    if made is not None and made.image_size == int(classifier.input_shape[1]):
      return HeadOnFeatures(classifier, made.lite, parts[1], made.path)
  return inference.KerasPredictor("", classifier)
