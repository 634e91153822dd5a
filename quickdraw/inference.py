"""Running any exported artifact, and bringing any picture to its contract.

Every artifact (Keras `.keras`, frozen `.pb`, `.tflite`) takes float32 RGB
`[batch, S, S, 3]` in [-1, 1] and returns softmax probabilities in label
order. `load_predictor(path)` hides which one it is; `drawing_from_image`
turns a PNG/JPEG of a doodle, of any size and either ink polarity, into a
28x28 QuickDraw-style drawing, and `to_model_input` upsamples drawings as
training did.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from quickdraw import preprocessing
from quickdraw.errors import QuickDrawError

INPUT_NAME = "input"
FINAL_TENSOR_NAME = "final_result"


class Predictor:
  """Probabilities for a batch of model inputs, whatever the artifact.

  Attributes:
    path: The artifact.
    image_size: Its input side S.
  """
  path: str
  image_size: int

  def __call__(self, images: np.ndarray) -> np.ndarray:
    raise NotImplementedError


class KerasPredictor(Predictor):
  """A Keras model, run by a compiled forward pass 64 inputs at a time.

  Not `Model.predict`, which first copies a numpy input into a dataset: for
  1,000 inputs at 224 px that took 2.0 s against 0.85 s this way.
  """

  def __init__(self, path: str, model=None):
    import keras
    self.path = path
    self.model = model if model is not None else keras.models.load_model(
        path, compile=False)
    self.image_size = int(self.model.input_shape[1])
    self._forward = tf.function(lambda x: self.model(x, training=False),
                                reduce_retracing=True)

  def __call__(self, images):
    return np.concatenate([
        np.asarray(self._forward(tf.constant(images[i:i + 64], tf.float32)))
        for i in range(0, len(images), 64)])


class FrozenGraphPredictor(Predictor):
  """A frozen GraphDef run through `tf.compat.v1` alone, as old apps did."""

  def __init__(self, path: str, final_tensor_name: str = FINAL_TENSOR_NAME):
    self.path = path
    graph_def = tf.compat.v1.GraphDef()
    with open(path, "rb") as f:
      graph_def.ParseFromString(f.read())
    self.graph = tf.Graph()
    with self.graph.as_default():
      tf.compat.v1.import_graph_def(graph_def, name="")
    self.input = self.graph.get_tensor_by_name(f"{INPUT_NAME}:0")
    self.output = self.graph.get_tensor_by_name(f"{final_tensor_name}:0")
    self.image_size = int(self.input.shape[1])
    self.session = tf.compat.v1.Session(graph=self.graph)

  def __call__(self, images):
    return np.concatenate([
        self.session.run(self.output, {self.input: images[i:i + 64]})
        for i in range(0, len(images), 64)])


class TFLitePredictor(Predictor):
  """A `.tflite` file in the TFLite interpreter, a batch at a time.

  Args:
    path: The `.tflite` file.
    batch_size: Drawings per interpreter call.
    num_threads: CPU threads for the interpreter; None for TFLite's default
      (one, as on a phone's single inference thread; what latency figures
      use).
  """

  def __init__(self, path: str, batch_size: int = 32,
               num_threads: int | None = None):
    self.path = path
    with warnings.catch_warnings():
      # TF 2.21 still ships tf.lite.Interpreter; its successor, LiteRT's
      # ai_edge_litert, would be one more dependency for the same result.
      warnings.filterwarnings("ignore", "\\s*Warning: tf.lite.Interpreter")
      self.interpreter = tf.lite.Interpreter(model_path=path,
                                             num_threads=num_threads)
    self.input = self.interpreter.get_input_details()[0]
    self.output = self.interpreter.get_output_details()[0]
    self.image_size = int(self.input["shape"][1])
    self.batch_size = batch_size
    self._batch = None

  def _resize(self, batch: int) -> None:
    if self._batch != batch:
      self.interpreter.resize_tensor_input(
          self.input["index"], [batch, self.image_size, self.image_size, 3])
      self.interpreter.allocate_tensors()
      self._batch = batch

  def __call__(self, images):
    out = []
    for i in range(0, len(images), self.batch_size):
      chunk = np.ascontiguousarray(images[i:i + self.batch_size], np.float32)
      self._resize(len(chunk))
      self.interpreter.set_tensor(self.input["index"], chunk)
      self.interpreter.invoke()
      out.append(np.array(self.interpreter.get_tensor(self.output["index"])))
    return np.concatenate(out)


def load_predictor(path: str,
                   final_tensor_name: str = FINAL_TENSOR_NAME) -> Predictor:
  """Opens `.keras`, `.pb` or `.tflite` by its extension.

  Raises:
    QuickDrawError: a missing file, an unknown extension or a file that does
      not load.
  """
  if not os.path.isfile(path):
    raise QuickDrawError(f"--model={path}: no such file; pass a .tflite, .pb "
                         "or .keras file written by quickdraw-train")
  ext = os.path.splitext(path)[1].lower()
  kinds = {".keras": KerasPredictor, ".pb": FrozenGraphPredictor,
           ".tflite": TFLitePredictor}
  if ext not in kinds:
    raise QuickDrawError(f"--model={path}: unknown kind {ext!r}; pass a "
                         ".tflite, .pb or .keras file")
  try:
    if ext == ".pb":
      return FrozenGraphPredictor(path, final_tensor_name)
    return kinds[ext](path)
  except (ValueError, OSError, KeyError, RuntimeError,
          tf.errors.OpError) as e:
    reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e)
    raise QuickDrawError(f"--model={path} cannot be loaded ({reason}); "
                         "re-export it with quickdraw-export") from None


def labels_text(categories: Sequence[str]) -> str:
  """The labels file's contents: one category per line, in output order."""
  return "".join(f"{c}\n" for c in categories)


def read_labels(path: str) -> list[str]:
  """The labels file: one category per line, in output order."""
  try:
    with open(path, encoding="utf-8") as f:
      return [line.strip() for line in f if line.strip()]
  except OSError as e:
    raise QuickDrawError(f"--labels={path}: {e.strerror or e}; pass the "
                         "labels file written beside the model") from None


def to_model_input(drawings: np.ndarray, image_size: int) -> np.ndarray:
  """uint8 (N, 784) or (N, 28, 28) drawings -> float32 (N, S, S, 3)."""
  drawings = np.asarray(drawings, np.uint8).reshape(-1, 28, 28, 1)
  if len(drawings) <= 256:  # TensorFlow's buffer, no copy
    return preprocessing.upsample_to_rgb(drawings, image_size).numpy()
  # In chunks, into one array: no second full-size copy (1,000 inputs at
  # 224 px are 600 MB).
  out = np.empty((len(drawings), image_size, image_size, 3), np.float32)
  for i in range(0, len(drawings), 256):
    out[i:i + 256] = preprocessing.upsample_to_rgb(drawings[i:i + 256],
                                                   image_size)
  return out


def drawing_from_image(image: np.ndarray) -> np.ndarray:
  """Brings a picture of a doodle to QuickDraw's 28x28 light-on-black form.

  1. Grey levels; ink polarity from the border: a light border means dark
     ink on a light canvas (what drawing apps make), which is inverted.
  2. Cropped to the ink's bounding box and padded to a square, since
     QuickDraw's bitmaps frame every drawing alike: the longer side of its
     box spans 26 of the 28 pixels, centred.
  3. Shrunk to 26x26 with antialiasing, with a 1-pixel black margin.

  A 28x28 input with a dark border is returned unchanged.

  Args:
    image: uint8 (H, W) or (H, W, C).

  Returns:
    uint8 (28, 28).
  """
  image = np.asarray(image)
  if image.ndim == 3:
    channels = image[..., :3].astype(np.float32)
    image = channels.mean(-1) if channels.shape[-1] == 3 else channels[..., 0]
  image = image.astype(np.float32)
  border = np.concatenate([image[0], image[-1], image[:, 0], image[:, -1]])
  if border.mean() > 127:
    image = 255 - image
  if image.shape == (28, 28):
    return np.clip(np.round(image), 0, 255).astype(np.uint8)
  ink = image > 0.1 * max(float(image.max()), 1.0)
  if ink.any():
    rows = np.flatnonzero(ink.any(1))
    cols = np.flatnonzero(ink.any(0))
    image = image[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
  h, w = image.shape
  side = max(h, w)
  square = np.zeros((side, side), np.float32)
  square[(side - h) // 2:(side - h) // 2 + h,
         (side - w) // 2:(side - w) // 2 + w] = image
  small = tf.image.resize(square[..., None], (26, 26), antialias=True)
  small = small.numpy()[..., 0]
  # Thin strokes fade when shrunk a lot; stretch back to full ink.
  small = small * (255.0 / max(float(small.max()), 1.0))
  framed = np.zeros((28, 28), np.float32)
  framed[1:27, 1:27] = small
  return np.clip(np.round(framed), 0, 255).astype(np.uint8)


def read_inputs(paths: Sequence[str]) -> tuple[list[str], np.ndarray]:
  """Reads PNG/JPEG files and `.npy` rows as 28x28 drawings.

  Returns:
    (names, uint8 (N, 28, 28)): a name per drawing (the file, or
    `file[row]` for `.npy` rows).

  Raises:
    QuickDrawError: a missing or unreadable input.
  """
  names, drawings = [], []
  for path in paths:
    if not os.path.isfile(path):
      raise QuickDrawError(f"{path}: no such file; pass PNG, JPEG or .npy "
                           "files")
    if path.lower().endswith(".npy"):
      try:
        rows = np.load(path, mmap_mode="r")
      except (ValueError, OSError) as e:
        raise QuickDrawError(f"{path}: not a readable .npy file ({e})"
                             ) from None
      if rows.ndim == 1:
        rows = rows[None]
      if rows.dtype != np.uint8 or rows.reshape(len(rows), -1).shape[1] != 784:
        raise QuickDrawError(
            f"{path}: shape {rows.shape} {rows.dtype}; expected uint8 rows of "
            "784 pixels (N, 784) or (N, 28, 28)")
      for i, row in enumerate(np.asarray(rows).reshape(-1, 28, 28)):
        names.append(f"{path}[{i}]")
        drawings.append(drawing_from_image(row))
      continue
    try:
      image = tf.io.decode_image(tf.io.read_file(path), channels=1,
                                 expand_animations=False).numpy()[..., 0]
    except tf.errors.OpError:
      raise QuickDrawError(f"{path}: not a PNG or JPEG image") from None
    names.append(path)
    drawings.append(drawing_from_image(image))
  return names, np.stack(drawings) if drawings else np.zeros((0, 28, 28),
                                                             np.uint8)
