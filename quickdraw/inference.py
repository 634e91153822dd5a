"""Running any exported artifact, and bringing any picture to its contract.

Every network artifact (Keras `.keras`, frozen `.pb`, `.tflite`) takes
float32 RGB `[batch, S, S, 3]` in its backbone's input range ([-1, 1] for
MobileNet v1 and v2, 0..255 for the families that rescale inside; see
`backbones`) and returns the class scores in label order (a softmax that
leaves a "none of these" share: `losses.softmax_with_none`). Each says
which range it takes: a Keras model by its backbone's name, a `.tflite` by
its metadata's NormalizationOptions, a `.pb` by the `model_info.json`
written beside it. `load_predictor(path)` hides which one it is;
`drawing_from_image`
turns a PNG/JPEG of a doodle, of any size and either ink polarity, into a
28x28 QuickDraw-style drawing, and `to_model_input` upsamples drawings as
training did.
"""

from __future__ import annotations

import os
import warnings
import weakref
from collections.abc import Sequence

import numpy as np
import tensorflow as tf

from quickdraw import canvases, preprocessing, quiet
from quickdraw.errors import QuickDrawError
from quickdraw.export import contracts
# The tensors' names are the export's contract; re-exported for callers.
from quickdraw.export.config import FINAL_TENSOR_NAME, INPUT_NAME



class Predictor:
  """Probabilities for a batch of model inputs, whatever the artifact.

  Attributes:
    path: The artifact.
    image_size: Its input side S.
    input_range: The values its float input takes (low, high).
    takes_canvas: Whether it takes app canvases (uint8 RGB pictures) rather
      than model inputs.
  """
  path: str
  image_size: int
  input_range: tuple[float, float] = preprocessing.SIGNED_RANGE
  takes_canvas: bool = False

  def __call__(self, images: np.ndarray) -> np.ndarray:
    raise NotImplementedError

  def predict_drawings(self, drawings: np.ndarray, chunk: int = 256
                       ) -> np.ndarray:
    """Probabilities for uint8 28x28 drawings (`predict_drawings`)."""
    return np.concatenate([
        self(to_model_input(drawings[i:i + chunk], self.image_size,
                            value_range=self.input_range))
        for i in range(0, len(drawings), chunk)])


_FORWARD = weakref.WeakKeyDictionary()


class KerasPredictor(Predictor):
  """A Keras model, run by a compiled forward pass 64 inputs at a time.

  Not `Model.predict`, which first copies a numpy input into a dataset: for
  1,000 inputs at 224 px that took 2.0 s against 0.85 s this way.
  """

  def __init__(self, path: str, model=None):
    import keras
    from quickdraw import backbones
    # model.keras names quickdraw's registered loss (label smoothing), which
    # must be importable for the file to load, even uncompiled.
    from quickdraw import losses  # noqa: F401
    self.path = path
    self.model = model if model is not None else keras.models.load_model(
        path, compile=False)
    self.image_size = int(self.model.input_shape[1])
    self.input_range = backbones.input_range_of(self.model)
    # One compiled forward per model, shared by its predictors: the export
    # calibrates, then checks, each with a predictor of the same model, and
    # tracing a large network costs seconds each time.
    if self.model not in _FORWARD:
      # Through a weak reference: the cache must not keep the model alive.
      model = weakref.ref(self.model)
      _FORWARD[self.model] = tf.function(
          lambda x: model()(x, training=False), reduce_retracing=True)
    self._forward = _FORWARD[self.model]

  def __call__(self, images):
    return np.concatenate([
        np.asarray(self._forward(tf.constant(images[i:i + 64], tf.float32)))
        for i in range(0, len(images), 64)])


class FrozenGraphPredictor(Predictor):
  """A frozen GraphDef run through `tf.compat.v1` alone, as old apps did.

  Args:
    path: The `.pb` file.
    final_tensor_name: Its output node.
    input_range: What its input takes; None reads the `model_info.json`
      beside it (`contracts.graph_input_range`).
  """

  def __init__(self, path: str, final_tensor_name: str = FINAL_TENSOR_NAME,
               input_range: tuple[float, float] | None = None):
    self.path = path
    self.input_range = input_range or contracts.graph_input_range(path)
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
  """A `.tflite` file in LiteRT's interpreter (`ai_edge_litert`), the runtime
  Android apps use, a batch at a time.

  Two kinds of model: the network alone (float32 `[batch, S, S, 3]` in
  the backbone's input range, `takes_canvas` False) and the app's canvas
  model (uint8 `[1, H, W, 3]` canvases, `takes_canvas` True; one canvas per
  call, as on the phone).

  Args:
    path: The `.tflite` file.
    batch_size: Inputs per interpreter call (network models).
    num_threads: CPU threads for the interpreter; None for LiteRT's default.
    keep_tensor: The name of an inner tensor to keep from every call, in
      `kept` (the export's checks read what a canvas model's preprocessing
      handed its network).
    model_content: The model itself, instead of reading `path`.
    input_range: What a network's float input takes; None reads its
      metadata's NormalizationOptions ([-1, 1] without metadata).
  """

  def __init__(self, path: str, batch_size: int = 32,
               num_threads: int | None = None,
               keep_tensor: str | None = None,
               model_content: bytes | None = None,
               input_range: tuple[float, float] | None = None):
    from ai_edge_litert.interpreter import Interpreter
    from quickdraw import tflite_metadata
    self.path = path
    if input_range is None:
      if model_content is None:
        with open(path, "rb") as f:
          model_content = f.read()
      normalization = tflite_metadata.read_normalization(model_content)
      input_range = (preprocessing.range_of_normalization(*normalization)
                     if normalization else preprocessing.SIGNED_RANGE)
    self.input_range = input_range
    with warnings.catch_warnings(), quiet.native_stderr_silenced():
      # Keeping inner tensors is "for debugging": checking is what it is for.
      warnings.filterwarnings("ignore", ".*experimental_preserve_all_tensors")
      self.interpreter = Interpreter(
          model_content=model_content, num_threads=num_threads,
          experimental_preserve_all_tensors=keep_tensor is not None)
    self.kept = None
    self._keep = None
    if keep_tensor is not None:
      self._keep = next(t["index"] for t in
                        self.interpreter.get_tensor_details()
                        if t["name"] == keep_tensor)
    self.input = self.interpreter.get_input_details()[0]
    self.output = self.interpreter.get_output_details()[0]
    self.takes_canvas = self.input["dtype"] == np.uint8
    self.image_size = int(self.input["shape"][1])
    self.canvas_shape = tuple(int(d) for d in self.input["shape"][1:3])
    self.batch_size = 1 if self.takes_canvas else batch_size
    self._batch = None

  def _resize(self, batch: int) -> None:
    if self._batch != batch:
      if not self.takes_canvas:
        self.interpreter.resize_tensor_input(
            self.input["index"], [batch, *self.input["shape"][1:]])
      with quiet.native_stderr_silenced():  # "Created ... XNNPACK delegate"
        self.interpreter.allocate_tensors()
      self._batch = batch

  def __call__(self, images):
    out, kept = [], []
    for i in range(0, len(images), self.batch_size):
      chunk = np.ascontiguousarray(images[i:i + self.batch_size],
                                   self.input["dtype"])
      self._resize(len(chunk))
      self.interpreter.set_tensor(self.input["index"], chunk)
      self.interpreter.invoke()
      out.append(np.array(self.interpreter.get_tensor(self.output["index"])))
      if self._keep is not None:
        kept.append(np.array(self.interpreter.get_tensor(self._keep)))
    if kept:
      self.kept = np.concatenate(kept)
    return np.concatenate(out)


_REMEDY = {
    ".keras": ("a Keras model file", "quickdraw-train writes it: train again, "
               "or pass the run's .tflite or .pb"),
    ".pb": ("a frozen graph", "re-export it with quickdraw-export "
            "--output_dir=RUN"),
    ".tflite": ("a TFLite model", "re-export it with quickdraw-export "
                "--output_dir=RUN"),
}


def load_predictor(path: str,
                   final_tensor_name: str = FINAL_TENSOR_NAME) -> Predictor:
  """Opens `.keras`, `.pb` or `.tflite` by its extension.

  Raises:
    QuickDrawError: a missing file, an unknown extension or a file that does
      not load (corrupt, truncated, or another kind of file).
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
  except Exception as e:  # protobuf, Keras and LiteRT each raise their own
    lines = str(e).strip().splitlines()
    reason = f"{type(e).__name__}: {lines[0]}" if lines else type(e).__name__
    what, remedy = _REMEDY[ext]
    raise QuickDrawError(f"--model={path} is not {what} that loads "
                         f"({reason}); {remedy}") from None


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


def to_model_input(drawings: np.ndarray, image_size: int, *,
                   value_range: tuple[float, float]) -> np.ndarray:
  """uint8 (N, 784) or (N, 28, 28) drawings -> float32 (N, S, S, 3) in
  `value_range`."""
  drawings = np.asarray(drawings, np.uint8).reshape(-1, 28, 28, 1)
  if len(drawings) <= 256:  # TensorFlow's buffer, no copy
    return preprocessing.upsample_to_rgb(drawings, image_size,
                                         value_range).numpy()
  # In chunks, into one array: no second full-size copy (1,000 inputs at
  # 224 px are 600 MB).
  out = np.empty((len(drawings), image_size, image_size, 3), np.float32)
  for i in range(0, len(drawings), 256):
    out[i:i + 256] = preprocessing.upsample_to_rgb(drawings[i:i + 256],
                                                   image_size, value_range)
  return out


def predict_drawings(predictor: Predictor, drawings: np.ndarray,
                     chunk: int = 256) -> np.ndarray:
  """A network artifact's probabilities for uint8 drawings, upsampled as in
  training `chunk` at a time (1,000 model inputs at 224 px take 600 MB);
  a predictor may answer from a cache (`litert_features.HeadOnFeatures`)."""
  return predictor.predict_drawings(drawings, chunk)


def drawing_from_image(image: np.ndarray) -> np.ndarray:
  """A picture of a doodle as a 28x28 QuickDraw drawing.

  Runs `preprocessing.canvas_to_drawings`, the preprocessing inside the
  app's canvas model (see there): either ink polarity, the doodle anywhere,
  any size; a 28x28 picture is taken as already framed.

  Args:
    image: uint8 (H, W) or (H, W, C), C = 1 or 3 (opaque; see
      `canvases.composite_over_white`).

  Returns:
    uint8 (28, 28), light ink on black; all zeros for a blank canvas.
  """
  image = np.asarray(image)
  if image.ndim == 2:
    image = image[..., None]
  drawing = preprocessing.canvas_to_drawings(image[None, ..., :3])
  return drawing.numpy()[0].astype(np.uint8)


def read_inputs(paths: Sequence[str], errors: list[str] | None = None,
                background: tuple[int, int, int] = (255, 255, 255)
                ) -> tuple[list[str], list[np.ndarray]]:
  """Reads pictures (PNG, JPEG, ...) and `.npy` rows.

  Args:
    paths: The files.
    errors: If given, a bad file's one-line error is appended here and the
      other files are still read; if None, the first bad file raises.
    background: The colour a transparent picture is composited over.

  Returns:
    (names, pictures): a name per picture (the file, or `file[row]` for
    `.npy` rows) and the picture, uint8 (H, W, 1 or 3) and opaque (an
    alpha channel is composited over white); `.npy` rows are 28x28.

  Raises:
    QuickDrawError: a missing or unreadable input.
  """
  names, pictures = [], []
  for path in paths:
    try:
      read = _read_input(path, background)
    except QuickDrawError as e:
      if errors is None:
        raise
      errors.append(str(e))
      continue
    names.extend(read[0])
    pictures.extend(read[1])
  return names, pictures


def _read_input(path: str, background: tuple[int, int, int]
                ) -> tuple[list[str], list[np.ndarray]]:
  """One file's (names, pictures) for `read_inputs`."""
  if os.path.isdir(path):
    raise QuickDrawError(f"{path}: a folder; pass the pictures in it, e.g. "
                         f"{os.path.join(path, '*.png')}")
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
    rows = np.asarray(rows).reshape(-1, 28, 28, 1)
    return [f"{path}[{i}]" for i in range(len(rows))], list(rows)
  return [path], [canvases.read_picture(path, background)]


def classify_pictures(predictor: Predictor, pictures: Sequence[np.ndarray]
                      ) -> tuple[np.ndarray, np.ndarray]:
  """Runs any artifact on pictures, as an app would.

  A canvas model gets each picture as its canvas (`canvases.fit_canvas`)
  and does the rest itself; any other artifact gets the drawing that the
  same preprocessing makes of the picture, upsampled as in training.

  Args:
    predictor: From `load_predictor`.
    pictures: Opaque uint8 (H, W, 1 or 3) pictures, any sizes.

  Returns:
    (uint8 (N, 28, 28) drawings the model saw, float32 (N, classes)
    probabilities).
  """
  if not len(pictures):
    return np.zeros((0, 28, 28), np.uint8), np.zeros((0, 0), np.float32)
  if predictor.takes_canvas:
    height, width = predictor.canvas_shape
    fitted = np.stack([canvases.fit_canvas(p, height, width)
                       for p in pictures])
    drawings = preprocessing.canvas_to_drawings(fitted).numpy()
    return drawings.astype(np.uint8), predictor(fitted)
  drawings = np.stack([drawing_from_image(p) for p in pictures])
  return drawings, predict_drawings(predictor, drawings)
