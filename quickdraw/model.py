"""The classifier: a frozen Keras MobileNet backbone and a new head.

The backbone maps RGB images in [-1, 1] to pooled features; the head maps
features to class probabilities. Keeping them apart lets training compute the
backbone's features once (the bottleneck cache) and train the head alone;
`build_classifier` joins them for fine-tuning and export.
"""

from __future__ import annotations

import dataclasses
import os
import re

import keras

from quickdraw import preprocessing
from quickdraw.errors import QuickDrawError

ALPHAS = {"1.0": 1.0, "0.75": 0.75, "0.50": 0.5, "0.5": 0.5, "0.25": 0.25}
SIZES = (224, 192, 160, 128)
WEIGHTS_BASE_URL = (
    "https://storage.googleapis.com/tensorflow/keras-applications/mobilenet/")
_ARCHITECTURE = re.compile(r"^mobilenet_(?P<alpha>[0-9.]+)_(?P<size>\d+)$")
# Keras' own names for MobileNet v1's no-top ImageNet weights.
_WEIGHTS_FILE = re.compile(r"^mobilenet_(1_0|7_5|5_0|2_5)_(224|192|160|128)"
                           r"_tf_no_top\.h5$")


@dataclasses.dataclass(frozen=True)
class Architecture:
  """A MobileNet v1 variant, named as retrain.py's `--architecture`.

  Attributes:
    alpha: Width multiplier: 1.0, 0.75, 0.5 or 0.25.
    image_size: Input side: 224, 192, 160 or 128.
  """
  alpha: float
  image_size: int

  @property
  def name(self) -> str:
    alpha = {1.0: "1.0", 0.75: "0.75", 0.5: "0.50", 0.25: "0.25"}[self.alpha]
    return f"mobilenet_{alpha}_{self.image_size}"

  @property
  def weights_filename(self) -> str:
    """The name Keras gives the ImageNet no-top weights of this variant."""
    alpha = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}[self.alpha]
    return f"mobilenet_{alpha}_{self.image_size}_tf_no_top.h5"


def parse_architecture(name: str) -> Architecture:
  """Parses `mobilenet_<alpha>_<size>`, e.g. `mobilenet_1.0_224`.

  Raises:
    QuickDrawError: not a MobileNet v1 variant Keras has weights for.
  """
  match = _ARCHITECTURE.match(name.strip())
  if (not match or match["alpha"] not in ALPHAS or
      int(match["size"]) not in SIZES):
    raise QuickDrawError(
        f"--architecture={name} is not supported; use mobilenet_<alpha>_<size> "
        "with alpha 1.0, 0.75, 0.50 or 0.25 and size 224, 192, 160 or 128, "
        "e.g. mobilenet_1.0_224")
  return Architecture(ALPHAS[match["alpha"]], int(match["size"]))


def resolve_weights(architecture: Architecture, weights: str,
                    model_dir: str | None = None,
                    base_url: str = WEIGHTS_BASE_URL) -> str | None:
  """Finds (downloading if needed) the backbone's weights file.

  Args:
    architecture: The variant.
    weights: "imagenet", "none", or a path to a Keras `.h5` weights file.
    model_dir: Keras' cache folder for downloads (its `models/` subfolder is
      used); None for Keras' default, `~/.keras`.
    base_url: Where Keras' MobileNet weights are published.

  Returns:
    A local path, or None for random initialisation.

  Raises:
    QuickDrawError: the path does not exist, or the download fails.
  """
  if weights.lower() == "none":
    return None
  if weights.lower() != "imagenet":
    if not os.path.isfile(weights):
      raise QuickDrawError(
          f"--weights={weights}: no such file; pass a Keras .h5 weights file, "
          "imagenet or none")
    named = _WEIGHTS_FILE.match(os.path.basename(weights))
    if named and named.group(0) != architecture.weights_filename:
      # Keras trains MobileNet's weights separately for each input size:
      # another size's weights load without complaint but fit worse.
      raise QuickDrawError(
          f"--weights={weights} are Keras' weights for another variant than "
          f"--architecture={architecture.name}; pass "
          f"{architecture.weights_filename}, or the --architecture that "
          "matches the file")
    return weights
  filename = architecture.weights_filename
  cache_dir = os.path.expanduser(model_dir or os.path.join("~", ".keras"))
  try:
    # Keras silently caches under /tmp/.keras when this folder is missing.
    os.makedirs(os.path.join(cache_dir, "models"), exist_ok=True)
  except OSError as e:
    raise QuickDrawError(
        f"cannot write to --model_dir {cache_dir}: {e.strerror or e}; pass a "
        "writable folder") from None
  try:
    return keras.utils.get_file(filename, base_url + filename,
                                cache_dir=cache_dir, cache_subdir="models")
  except Exception as e:  # Keras wraps network errors in plain Exception.
    reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e)
    raise QuickDrawError(
        f"could not download ImageNet weights for {architecture.name} from "
        f"{base_url}{filename} ({reason}); copy {filename} into "
        f"{os.path.join(cache_dir, 'models')}, or pass --weights=PATH to a "
        "Keras .h5 file (or --weights=none)") from None


def build_backbone(architecture: Architecture,
                   weights_path: str | None) -> keras.Model:
  """The frozen MobileNet: (S, S, 3) in [-1, 1] -> pooled features.

  Raises:
    QuickDrawError: the weights file does not fit this architecture.
  """
  size = architecture.image_size
  try:
    backbone = keras.applications.MobileNet(
        input_shape=(size, size, 3), alpha=architecture.alpha,
        include_top=False, weights=weights_path, pooling="avg")
  except (ValueError, OSError, KeyError) as e:
    raise QuickDrawError(
        f"{weights_path}: cannot be loaded into {architecture.name} "
        f"({str(e).strip().splitlines()[0] if str(e).strip() else e}); pass "
        f"the no-top weights of {architecture.name} "
        f"({architecture.weights_filename})") from None
  backbone.trainable = False
  return backbone


def build_head(feature_dim: int, num_classes: int,
               dropout: float = 0.2) -> keras.Model:
  """Dropout and a softmax layer over pooled features."""
  features = keras.Input((feature_dim,), name="bottleneck")
  x = keras.layers.Dropout(dropout)(features)
  # float32 even under mixed precision: a float16 softmax loses small
  # probabilities and destabilises the loss.
  probabilities = keras.layers.Dense(num_classes, activation="softmax",
                                     dtype="float32", name="final_result")(x)
  return keras.Model(features, probabilities, name="head")


def build_classifier(backbone: keras.Model, head: keras.Model) -> keras.Model:
  """Images -> probabilities, with batch norm kept in inference mode.

  The backbone is called with `training=False`, so its batch-norm layers keep
  their ImageNet statistics even when some of its layers are unfrozen for
  fine-tuning (Keras' transfer-learning guide).
  """
  images = keras.Input(backbone.input_shape[1:], name="input")
  features = backbone(images, training=False)
  return keras.Model(images, head(features), name="quickdraw_classifier")


def unfreeze_top_layers(backbone: keras.Model, num_layers: int) -> None:
  """Makes the top `num_layers` layers with weights trainable, batch norm
  excluded (its statistics stay frozen)."""
  backbone.trainable = True
  candidates = [l for l in backbone.layers if l.weights]
  trainable = set(id(l) for l in candidates[-num_layers:]) if num_layers else set()
  for layer in backbone.layers:
    layer.trainable = (id(layer) in trainable and
                       not isinstance(layer, keras.layers.BatchNormalization))


def calibrate_batch_norm(backbone: keras.Model, images) -> None:
  """Sets every batch-norm layer's statistics from one batch of `images`.

  Only for random weights (`--weights=none`): a randomly initialised
  MobileNet keeps batch norm's initial statistics (mean 0, variance 1), which
  shrink activations layer after layer to about 1e-17 at the output, so every
  drawing gets the same features. Taking the statistics from real inputs
  keeps the random features informative, which is what tests and smoke runs
  need. The backbone stays frozen.
  """
  layers = [l for l in backbone.layers
            if isinstance(l, keras.layers.BatchNormalization)]
  momenta = [l.momentum for l in layers]
  backbone.trainable = True  # frozen batch norm ignores training=True
  try:
    for layer in layers:
      layer.momentum = 0.0  # replace the statistics, do not average
    backbone(images, training=True)
  finally:
    for layer, momentum in zip(layers, momenta):
      layer.momentum = momentum
    backbone.trainable = False


@keras.saving.register_keras_serializable(package="quickdraw")
class DrawingsToImages(keras.layers.Layer):
  """28x28 uint8 drawings -> the backbone's RGB input, inside the model.

  With it, tf.data ships 784 bytes a drawing and the accelerator does the
  upsampling (and, with `augment`, the random rotation, zoom and shift of
  `preprocessing.random_affine_upsample_to_rgb`, in training only).
  Without augmentation it computes exactly `preprocessing.upsample_to_rgb`.
  """

  def __init__(self, image_size: int, augment: bool = False, seed: int = 0,
               **kwargs):
    super().__init__(**kwargs)
    self.image_size = image_size
    self.augment = augment
    self.seed = seed
    self.seed_generator = keras.random.SeedGenerator(seed)

  def call(self, drawings, training=None):
    if self.augment and training:
      draws = keras.random.uniform((keras.ops.shape(drawings)[0], 4), -1.0,
                                   1.0, seed=self.seed_generator)
      return preprocessing.distorted_upsample_to_rgb(
          drawings, self.image_size, draws)
    return preprocessing.upsample_to_rgb(drawings, self.image_size)

  def compute_output_shape(self, input_shape):
    return (input_shape[0], self.image_size, self.image_size, 3)

  def get_config(self):
    return {**super().get_config(), "image_size": self.image_size,
            "augment": self.augment, "seed": self.seed}


def build_device_classifier(classifier: keras.Model, augment: bool = False,
                            seed: int = 0) -> keras.Model:
  """`classifier` behind a `DrawingsToImages` layer, sharing its weights.

  Takes uint8 (batch, 28, 28, 1) drawings; exports keep using `classifier`
  and its documented [-1, 1] RGB input.
  """
  drawings = keras.Input((28, 28, 1), dtype="uint8", name="drawings")
  images = DrawingsToImages(int(classifier.input_shape[1]), augment, seed,
                            name="drawings_to_images")(drawings)
  return keras.Model(drawings, classifier(images),
                     name="quickdraw_device_classifier")
