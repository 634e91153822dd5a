"""The classifier: a frozen Keras backbone (see `backbones`) and a new head.

The backbone maps RGB images (in its family's input range) to pooled
features; the head maps features to class probabilities. Keeping them apart
lets training compute the backbone's features once (the bottleneck cache)
and train the head alone; `build_classifier` joins them for fine-tuning and
export.
"""

from __future__ import annotations

import os

import keras

from quickdraw import backbones, losses, preprocessing
from quickdraw.errors import QuickDrawError

# The backbone table and names live in `backbones`; these names stay here
# for the code that has always imported them from this module.
Architecture = backbones.Architecture
parse_architecture = backbones.parse_architecture


def resolve_weights(architecture: Architecture, weights: str,
                    model_dir: str | None = None,
                    base_url: str | None = None) -> str | None:
  """Finds (downloading if needed) the backbone's weights file.

  Args:
    architecture: The variant.
    weights: "imagenet", "none", or a path to a Keras `.h5` weights file.
    model_dir: Keras' cache folder for downloads (its `models/` subfolder is
      used); None for Keras' default, `~/.keras`.
    base_url: Where to download from instead of where Keras publishes the
      family's weights (the file name is appended).

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
    filename = os.path.basename(weights)
    matching = backbones.architecture_of_weights_file(filename)
    if matching and filename != architecture.weights_filename:
      # Keras trains v1's and v2's weights separately for each input size:
      # another size's weights load without complaint but fit worse.
      raise QuickDrawError(
          f"--weights={weights} are Keras' weights for "
          f"{_one_or_sizes(matching)}, not --architecture="
          f"{architecture.name}; pass {architecture.weights_filename}, or "
          f"--architecture={matching[-1]}")
    return weights
  filename = architecture.weights_filename
  url = (base_url + filename) if base_url else architecture.weights_url
  cache_dir = os.path.expanduser(model_dir or os.path.join("~", ".keras"))
  try:
    # Keras silently caches under /tmp/.keras when this folder is missing.
    os.makedirs(os.path.join(cache_dir, "models"), exist_ok=True)
  except OSError as e:
    raise QuickDrawError(
        f"cannot write to --model_dir {cache_dir}: {e.strerror or e}; pass a "
        "writable folder") from None
  try:
    return keras.utils.get_file(filename, url, cache_dir=cache_dir,
                                cache_subdir="models")
  except Exception as e:  # Keras wraps network errors in plain Exception.
    reason = str(e).strip().splitlines()[-1] if str(e).strip() else type(e)
    raise QuickDrawError(
        f"could not download ImageNet weights for {architecture.name} from "
        f"{url} ({reason}); copy {filename} into "
        f"{os.path.join(cache_dir, 'models')}, or pass --weights=PATH to a "
        "Keras .h5 file (or --weights=none)") from None


def _one_or_sizes(names: list[str]) -> str:
  """`names` as one phrase: a name, or `family_<size>` for a one-file
  family's sizes."""
  if len(names) == 1:
    return names[0]
  stem = names[0].rsplit("_", 1)[0]
  return f"{stem}_<size> (any size)"


def build_backbone(architecture: Architecture,
                   weights_path: str | None) -> keras.Model:
  """The frozen backbone: (S, S, 3) in its family's input range -> pooled
  features. The model is named after the architecture (`Architecture.name`),
  which is how a saved classifier tells its input range
  (`backbones.input_range_of`).

  Raises:
    QuickDrawError: the weights file does not fit this architecture.
  """
  backbone = architecture.build()
  if weights_path:
    try:
      backbone.load_weights(weights_path)
    except (ValueError, OSError, KeyError) as e:
      raise QuickDrawError(
          f"{weights_path}: cannot be loaded into {architecture.name} "
          f"({str(e).strip().splitlines()[0] if str(e).strip() else e}); "
          f"pass the no-top weights of {architecture.name} "
          f"({architecture.weights_filename})") from None
    if architecture.spec.after_loading:
      architecture.spec.after_loading(backbone)
  backbone.trainable = False
  return backbone


def build_head(feature_dim: int, num_classes: int,
               dropout: float = 0.2) -> keras.Model:
  """Dropout and a Dense layer over pooled features, whose scores leave
  room for "none of these" (`losses.softmax_with_none`)."""
  features = keras.Input((feature_dim,), name="bottleneck")
  x = keras.layers.Dropout(dropout)(features)
  # float32 even under mixed precision: a float16 softmax loses small
  # probabilities and destabilises the loss.
  probabilities = keras.layers.Dense(num_classes,
                                     activation=losses.softmax_with_none,
                                     dtype="float32", name="final_result")(x)
  return keras.Model(features, probabilities, name="head")


def build_classifier(backbone: keras.Model, head: keras.Model) -> keras.Model:
  """Images (in the backbone's input range) -> probabilities, with batch
  norm kept in inference mode.

  The backbone is called with `training=False`, so its batch-norm layers keep
  their ImageNet statistics even when some of its layers are unfrozen for
  fine-tuning (Keras' transfer-learning guide).
  """
  images = keras.Input(backbone.input_shape[1:], name="input")
  features = backbone(images, training=False)
  return keras.Model(images, head(features), name="quickdraw_classifier")


def unfreeze_top_layers(backbone: keras.Model, num_layers: int) -> None:
  """Makes the top `num_layers` of `backbones.fine_tune_candidates`
  trainable (convolutions and dense layers; batch norm never: its
  statistics and scales stay ImageNet's)."""
  backbone.trainable = True
  candidates = backbones.fine_tune_candidates(backbone)
  trainable = set(id(l) for l in candidates[-num_layers:]) if num_layers else set()
  for layer in backbone.layers:
    layer.trainable = id(layer) in trainable


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
  Without augmentation it computes exactly `preprocessing.upsample_to_rgb`,
  into `value_range` (the backbone family's input range).
  """

  def __init__(self, image_size: int, augment: bool = False, seed: int = 0,
               *, value_range: tuple[float, float], **kwargs):
    super().__init__(**kwargs)
    self.image_size = image_size
    self.augment = augment
    self.seed = seed
    self.value_range = tuple(float(v) for v in value_range)
    self.seed_generator = keras.random.SeedGenerator(seed)

  def call(self, drawings, training=None):
    if self.augment and training:
      draws = keras.random.uniform((keras.ops.shape(drawings)[0], 4), -1.0,
                                   1.0, seed=self.seed_generator)
      return preprocessing.distorted_upsample_to_rgb(
          drawings, self.image_size, draws, self.value_range)
    return preprocessing.upsample_to_rgb(drawings, self.image_size,
                                         self.value_range)

  def compute_output_shape(self, input_shape):
    return (input_shape[0], self.image_size, self.image_size, 3)

  def get_config(self):
    return {**super().get_config(), "image_size": self.image_size,
            "augment": self.augment, "seed": self.seed,
            "value_range": list(self.value_range)}


@keras.saving.register_keras_serializable(package="quickdraw")
class AppendMixes(keras.layers.Layer):
  """Appends mixes of pairs of a batch's features to it, in training.

  Fine-tuning's counterpart of `outliers.add_mixes`: the backbone is
  training, so the features to mix exist only inside the step. Inputs:
  features (B, D), pairs (M, 2) of their row indices and shares (M, 1) of
  the first; output (B + M, D).
  """

  def call(self, features, pairs, shares):
    shares = keras.ops.cast(shares, features.dtype)
    # The mixes train the head alone: a backbone that learned from them
    # could make its features easy to tell from their mixes, which no
    # doodle of another kind is.
    fixed = keras.ops.stop_gradient(features)
    first = keras.ops.take(fixed, pairs[:, 0], axis=0)
    second = keras.ops.take(fixed, pairs[:, 1], axis=0)
    return keras.ops.concatenate(
        [features, shares * first + (1 - shares) * second], axis=0)


def _drawings_input(image_size: int, augment: bool, seed: int, *,
                    value_range: tuple[float, float]):
  """(uint8 (28, 28, 1) drawings input, the images a `DrawingsToImages`
  layer makes of them): the front of the models that upsample on the
  device."""
  drawings = keras.Input((28, 28, 1), dtype="uint8", name="drawings")
  images = DrawingsToImages(image_size, augment, seed,
                            value_range=value_range,
                            name="drawings_to_images")(drawings)
  return drawings, images


def build_mixing_trainer(backbone: keras.Model, head: keras.Model, *,
                         drawings: bool = False, augment: bool = False,
                         seed: int = 0) -> keras.Model:
  """The classifier as it trains on batches with mixes
  (`input_pipeline.make_dataset(mixes=...)`): (pictures, pairs, shares)
  -> the probabilities of the pictures, then of the mixes of their
  features (`AppendMixes`). It shares `backbone`'s and `head`'s weights;
  exports use the classifier.

  Args:
    backbone: The backbone, called with batch norm in inference mode as
      `build_classifier` calls it.
    head: The head.
    drawings: The pictures are 28x28 drawings, upsampled (and with
      `augment`, distorted, seeded by `seed`) in the model, as
      `build_device_classifier`'s are; else images in the backbone's range.
  """
  if drawings:
    pictures, images = _drawings_input(
        int(backbone.input_shape[1]), augment, seed,
        value_range=backbones.input_range_of(backbone))
  else:
    pictures = images = keras.Input(backbone.input_shape[1:], name="input")
  pairs = keras.Input((2,), dtype="int32", name="mix_pairs")
  shares = keras.Input((1,), name="mix_shares")
  features = backbone(images, training=False)
  return keras.Model([pictures, pairs, shares],
                     head(AppendMixes(name="mixes")(features, pairs, shares)),
                     name="quickdraw_mixing_trainer")


def build_device_classifier(classifier: keras.Model, augment: bool = False,
                            seed: int = 0) -> keras.Model:
  """`classifier` behind a `DrawingsToImages` layer, sharing its weights.

  Takes uint8 (batch, 28, 28, 1) drawings; exports keep using `classifier`
  and its documented RGB input in the backbone's range.
  """
  drawings, images = _drawings_input(
      int(classifier.input_shape[1]), augment, seed,
      value_range=backbones.input_range_of(classifier))
  return keras.Model(drawings, classifier(images),
                     name="quickdraw_device_classifier")
