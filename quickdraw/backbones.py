"""The backbones quickdraw trains on: one table, one entry per family.

Each `Family` says how its `--architecture` names read, which widths and
input sizes Keras publishes ImageNet weights for, what Keras calls those
files and where it publishes them, how to build the network, and what input
values the network takes. Everything else (the bottleneck cache,
fine-tuning, every export, the contracts in `model_info.json` and the TFLite
metadata) reads those facts from here, so a new family is one new entry.

| family | names | input |
| --- | --- | --- |
| MobileNet v1 (2017) | `mobilenet_<alpha>_<size>` (retrain.py's) | [-1, 1] |
| MobileNetV2 (2018) | `mobilenet_v2_<alpha>_<size>` | [-1, 1] |
| MobileNetV3 (2019) | `mobilenet_v3_{small,large}[_minimalistic]_<size>` | 0..255 |
| EfficientNet B0 (2019) | `efficientnet_b0_<size>` | 0..255 |

v1 and v2 take [-1, 1], as Keras' `preprocess_input` makes it and as
retrain.py's graphs took it; V3 and EfficientNet rescale inside (Keras
builds them with their own `Rescaling` and `Normalization` layers), so they
take pixel values as they are.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import math
import re
from collections.abc import Callable

import keras
import numpy as np

from quickdraw import preprocessing
from quickdraw.errors import QuickDrawError

_KERAS = "https://storage.googleapis.com/tensorflow/keras-applications/"


@dataclasses.dataclass(frozen=True)
class Family:
  """One family of Keras applications backbones.

  Attributes:
    key: The family's name in `--architecture`, before the alpha or size.
    title: How people name it.
    alphas: Width multipliers with published ImageNet weights, by their
      spelling in names ("1.0", "0.35", ...); () when the family has one
      width.
    sizes: Input sides with published (or, for one-file families, usable)
      ImageNet weights, by alpha spelling or "" for every alpha.
    input_range: The values the network takes: `preprocessing.SIGNED_RANGE`
      or `preprocessing.PIXEL_RANGE`.
    weights_filename: (alpha, size) -> Keras' name for the no-top file.
    weights_url: Where Keras publishes those files (the name is appended).
    constructor: (input shape, alpha, name) -> the Keras application, no
      top, average pooling, random weights.
    after_loading: Adjusts a model once its ImageNet weights are loaded,
      where Keras' own constructor does more than load the file.
    hidden: Never listed (--help, errors, `all_names`): the test-only
      entry, which a user who types its name still gets.
  """
  key: str
  title: str
  alphas: tuple[str, ...]
  sizes: dict[str, tuple[int, ...]]
  input_range: tuple[float, float]
  weights_filename: Callable[[float, int], str]
  weights_url: str
  constructor: Callable[[tuple[int, int, int], float, str], keras.Model]
  after_loading: Callable[[keras.Model], None] | None = None
  hidden: bool = False

  def sizes_for(self, alpha: str) -> tuple[int, ...]:
    return self.sizes.get(alpha, self.sizes.get("", ()))

  def name(self, alpha: float, size: int) -> str:
    if not self.alphas:
      return f"{self.key}_{size}"
    return f"{self.key}_{_alpha_text(self, alpha)}_{size}"

  def names(self) -> list[str]:
    """Every architecture name with published weights, in the table's
    order."""
    out = []
    for alpha in self.alphas or ("",):
      for size in self.sizes_for(alpha):
        out.append(f"{self.key}_{alpha}_{size}" if alpha else
                   f"{self.key}_{size}")
    return out


def _alpha_text(family: Family, alpha: float) -> str:
  for text in family.alphas:
    if float(text) == alpha:
      return text
  return f"{alpha:g}"


def _v1_file(alpha: float, size: int) -> str:
  text = {1.0: "1_0", 0.75: "7_5", 0.5: "5_0", 0.25: "2_5"}[alpha]
  return f"mobilenet_{text}_{size}_tf_no_top.h5"


def _v2_file(alpha: float, size: int) -> str:
  return (f"mobilenet_v2_weights_tf_dim_ordering_tf_kernels_{float(alpha)}_"
          f"{size}_no_top.h5")


def _v3_file(model_type: str) -> Callable[[float, int], str]:
  # One file per variant, trained at 224: Keras loads it at any size.
  return lambda alpha, size: (f"weights_mobilenet_v3_{model_type}_224_"
                              f"{float(alpha)}_float_no_top_v2.h5")


def _v1(shape, alpha, name):
  return keras.applications.MobileNet(
      input_shape=shape, alpha=alpha, include_top=False, weights=None,
      pooling="avg", name=name)


def _v2(shape, alpha, name):
  return keras.applications.MobileNetV2(
      input_shape=shape, alpha=alpha, include_top=False, weights=None,
      pooling="avg", name=name)


def _v3(small: bool, minimalistic: bool):
  build = (keras.applications.MobileNetV3Small if small else
           keras.applications.MobileNetV3Large)

  def construct(shape, alpha, name):
    # include_preprocessing: the model's first layer maps 0..255 to [-1, 1].
    return build(input_shape=shape, alpha=alpha, minimalistic=minimalistic,
                 include_top=False, weights=None, pooling="avg",
                 include_preprocessing=True, name=name)
  return construct


def _efficientnet_b0(shape, alpha, name):
  del alpha
  return keras.applications.EfficientNetB0(
      input_shape=shape, include_top=False, weights=None, pooling="avg",
      name=name)


# ImageNet's per-channel standard deviations, as Keras' EfficientNet has them.
_IMAGENET_STDDEV_RGB = (0.229, 0.224, 0.225)


def _efficientnet_imagenet_scaling(model: keras.Model) -> None:
  """Does what `EfficientNetB0(weights="imagenet")` adds to the file.

  With `weights="imagenet"` Keras puts a `Rescaling(1 / sqrt(stddev))` after
  the input normalization, because the original network divides by the
  variance rather than the standard deviation (tensorflow/tensorflow#49930);
  given a weights path instead, it leaves that layer out and the features
  come out wrong. The stem convolution that follows has no bias and pads
  with zeros, so scaling its kernel's input channels is that layer exactly.
  """
  stem = model.get_layer("stem_conv")
  scale = np.array([1.0 / math.sqrt(s) for s in _IMAGENET_STDDEV_RGB],
                   np.float32).reshape(1, 1, 3, 1)
  stem.kernel.assign(keras.ops.convert_to_numpy(stem.kernel) * scale)


def _tiny(shape, alpha, name):
  """A test backbone, as flax tests its loop with `_ResNet1`: three
  convolutions with batch norm, so that the workflow (caches, resume,
  fine-tuning, export, every command) runs in seconds, not on a MobileNet."""
  del alpha  # one width
  inputs = keras.Input(shape)
  x = inputs
  # Named layers, as Keras' applications name theirs: unseeded initializers
  # then draw the same weights after keras.utils.set_random_seed, so two
  # runs with one seed share their bottleneck cache.
  for i, filters in enumerate((16, 32, 64), 1):
    x = keras.layers.Conv2D(filters, 3, strides=2, padding="same",
                            use_bias=False, name=f"conv{i}")(x)
    x = keras.layers.BatchNormalization(name=f"conv{i}_bn")(x)
    x = keras.layers.ReLU(6.0, name=f"conv{i}_relu")(x)
  x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
  return keras.Model(inputs, x, name=name)


_V2_SIZES = (96, 128, 160, 192, 224)
_V3_SIZES = (96, 128, 160, 192, 224)

FAMILIES: tuple[Family, ...] = (
    Family("mobilenet", "MobileNet v1", ("1.0", "0.75", "0.50", "0.25"),
           {"": (128, 160, 192, 224)}, preprocessing.SIGNED_RANGE,
           _v1_file, _KERAS + "mobilenet/", _v1),
    Family("mobilenet_v2", "MobileNetV2",
           ("1.4", "1.3", "1.0", "0.75", "0.5", "0.35"),
           {"1.4": (224,), "1.3": (224,), "": _V2_SIZES},
           preprocessing.SIGNED_RANGE, _v2_file, _KERAS + "mobilenet_v2/",
           _v2),
    *(Family(f"mobilenet_v3_{kind}{'_minimalistic' if minimal else ''}",
             f"MobileNetV3 {kind.capitalize()}"
             f"{' minimalistic' if minimal else ''}", (),
             {"": _V3_SIZES}, preprocessing.PIXEL_RANGE,
             _v3_file(f"{kind}{'_minimalistic' if minimal else ''}"),
             _KERAS + "mobilenet_v3/", _v3(kind == "small", minimal))
      for kind in ("small", "large") for minimal in (False, True)),
    Family("efficientnet_b0", "EfficientNet B0", (),
           {"": (96, 128, 160, 192, 224)}, preprocessing.PIXEL_RANGE,
           lambda alpha, size: "efficientnetb0_notop.h5",
           "https://storage.googleapis.com/keras-applications/",
           _efficientnet_b0, _efficientnet_imagenet_scaling),
    # Tests only (random weights; no file is published for it).
    Family("test_tiny", "Test backbone", (), {"": (32, 64)},
           preprocessing.SIGNED_RANGE, lambda alpha, size: "",
           "", _tiny, hidden=True),
)
_BY_KEY = {f.key: f for f in FAMILIES}
# Longest keys first: "mobilenet_v3_small_minimalistic_224" must not be
# read as family "mobilenet_v3_small" with alpha "minimalistic".
_NAME = re.compile(
    r"^(?P<key>" + "|".join(sorted(map(re.escape, _BY_KEY), key=len,
                                   reverse=True)) +
    r")(?:_(?P<alpha>[0-9.]+))?_(?P<size>\d+)$")


@dataclasses.dataclass(frozen=True)
class Architecture:
  """A backbone: family, width and input side.

  Attributes:
    alpha: Width multiplier (1.0 for families with one width).
    image_size: Input side.
    family: The `Family.key`.
  """
  alpha: float
  image_size: int
  family: str = "mobilenet"

  @property
  def spec(self) -> Family:
    return _BY_KEY[self.family]

  @property
  def name(self) -> str:
    return self.spec.name(self.alpha, self.image_size)

  @property
  def weights_filename(self) -> str:
    """The name Keras gives this variant's ImageNet no-top weights."""
    return self.spec.weights_filename(self.alpha, self.image_size)

  @property
  def weights_url(self) -> str:
    return self.spec.weights_url + self.weights_filename

  @property
  def input_range(self) -> tuple[float, float]:
    return self.spec.input_range

  def build(self) -> keras.Model:
    """The Keras network, random weights, named after the architecture (so
    a saved model says which backbone, and so which input, it has)."""
    size = self.image_size
    return self.spec.constructor((size, size, 3), self.alpha, self.name)


def _read(name: str) -> tuple[Family, str, int] | None:
  match = _NAME.match(name.strip())
  if not match:
    return None
  family = _BY_KEY[match["key"]]
  alpha = match["alpha"] or ""
  if bool(alpha) != bool(family.alphas):
    return None
  return family, alpha, int(match["size"])


def parse_architecture(name: str) -> Architecture:
  """Reads an `--architecture` name, e.g. `mobilenet_v2_0.5_224`.

  Raises:
    QuickDrawError: not a variant Keras publishes ImageNet weights for.
  """
  read = _read(name)
  if read:
    family, alpha, size = read
    # "0.50" and "0.5" are one width: match by value, keep the table's text.
    alpha = next((a for a in family.alphas if float(a) == float(alpha)),
                 None) if alpha else ""
    if alpha is not None and size in family.sizes_for(alpha):
      return Architecture(float(alpha or 1.0), size, family.key)
  close = difflib.get_close_matches(name.strip(), all_names(), n=3,
                                    cutoff=0.8)
  hint = f"did you mean {' or '.join(close)}? " if close else ""
  raise QuickDrawError(
      f"--architecture={name} is not a backbone quickdraw offers; {hint}"
      "use mobilenet_<alpha>_<size> (v1), mobilenet_v2_<alpha>_<size>, "
      "mobilenet_v3_{small,large}[_minimalistic]_<size> or "
      "efficientnet_b0_<size>; --help lists the alphas and sizes")


def names_help() -> str:
  """The name forms, one clause per family, for errors and --help."""
  parts = []
  listed = [f for f in FAMILIES if not f.hidden]
  for family in listed:
    if family.alphas:
      sizes = sorted({s for a in family.alphas for s in family.sizes_for(a)})
      parts.append(f"{family.key}_<alpha>_<size> (alpha "
                   f"{', '.join(family.alphas)}; size "
                   f"{', '.join(map(str, sizes))})")
  keys = [f.key for f in listed if not f.alphas]
  sizes = sorted({s for f in listed if not f.alphas
                  for s in f.sizes_for("")})
  parts.append(f"{' / '.join(keys)} + _<size> (size "
               f"{', '.join(map(str, sizes))})")
  return "; ".join(parts)


def all_names() -> list[str]:
  """Every `--architecture` name quickdraw offers."""
  return [n for family in FAMILIES if not family.hidden
          for n in family.names()]


def architecture_of_weights_file(filename: str) -> list[str]:
  """The architectures whose Keras ImageNet weights file is named
  `filename` (several sizes share one file in one-file families); [] for a
  name that is not one of Keras' files quickdraw knows."""
  return [n for n in all_names()
          if parse_architecture(n).weights_filename == filename]


def find_architecture(model: keras.Model) -> Architecture | None:
  """The backbone inside a quickdraw model (the model itself, or a nested
  model named after its architecture), at the size it was built for; None
  for a model with no backbone quickdraw names (a stand-in network)."""
  candidates = [model] + [layer for layer in getattr(model, "layers", [])
                          if isinstance(layer, keras.Model)]
  for candidate in candidates:
    read = _read(candidate.name)
    if read:
      family, alpha, size = read
      return Architecture(float(alpha or 1.0), size, family.key)
  return None


def weights_digest(model: keras.Model) -> str:
  """A sha256 of every weight value of `model`, in layer order."""
  digest = hashlib.sha256()
  for weight in model.weights:
    value = np.ascontiguousarray(keras.ops.convert_to_numpy(weight))
    digest.update(weight.path.encode() + str(value.shape).encode())
    digest.update(value.tobytes())
  return digest.hexdigest()


def input_range_of(model: keras.Model) -> tuple[float, float]:
  """The values `model` takes: its backbone family's input range, or
  [-1, 1] (retrain.py's contract) for a model without a named backbone."""
  architecture = find_architecture(model)
  return (architecture.input_range if architecture else
          preprocessing.SIGNED_RANGE)


def fine_tune_candidates(backbone: keras.Model) -> list[keras.layers.Layer]:
  """The layers `--fine_tune_layers` counts, input to output: those with
  trainable weights (convolutions, depthwise convolutions, dense layers,
  squeeze-and-excitation convolutions). Batch norm stays frozen, and
  Keras' input `Normalization` holds constants, so neither counts."""
  frozen_kinds = (keras.layers.BatchNormalization, keras.layers.Normalization)
  return [layer for layer in backbone.layers
          if layer.weights and not isinstance(layer, frozen_kinds)]
