"""The backbone table: names, Keras' weight files, input ranges, what
fine-tuning counts, and that a loaded backbone computes what Keras' own
constructor with ImageNet weights computes."""

import os

import h5py
import keras
import numpy as np
import pytest

from quickdraw import backbones, model, preprocessing
from quickdraw.errors import QuickDrawError

from conftest import SHARED_DATA

WEIGHTS_DIR = os.path.join(SHARED_DATA, "..", "weights")


def test_every_name_reads_back_and_names_its_weights_file():
  names = backbones.all_names()
  assert len(names) == len(set(names)) == 16 + 22 + 4 * 5 + 5
  for name in names:
    arch = backbones.parse_architecture(name)
    assert arch.name == name
    assert name in backbones.architecture_of_weights_file(
        arch.weights_filename)
    assert arch.weights_url.endswith("/" + arch.weights_filename)


@pytest.mark.parametrize("name, family, alpha, size, low", [
    ("mobilenet_1.0_224", "mobilenet", 1.0, 224, -1.0),
    ("mobilenet_0.50_128", "mobilenet", 0.5, 128, -1.0),
    ("mobilenet_v2_0.35_96", "mobilenet_v2", 0.35, 96, -1.0),
    ("mobilenet_v2_0.50_224", "mobilenet_v2", 0.5, 224, -1.0),
    ("mobilenet_v2_1.4_224", "mobilenet_v2", 1.4, 224, -1.0),
    ("mobilenet_v3_small_224", "mobilenet_v3_small", 1.0, 224, 0.0),
    ("mobilenet_v3_large_minimalistic_160",
     "mobilenet_v3_large_minimalistic", 1.0, 160, 0.0),
    ("efficientnet_b0_192", "efficientnet_b0", 1.0, 192, 0.0)])
def test_parse(name, family, alpha, size, low):
  arch = backbones.parse_architecture(name)
  assert (arch.family, arch.alpha, arch.image_size) == (family, alpha, size)
  assert arch.input_range[0] == low


@pytest.mark.parametrize("name", [
    "mobilenet_v2_1.4_128",  # Keras publishes 1.3 and 1.4 at 224 only
    "mobilenet_v2_0.25_224", "mobilenet_v3_small_0.75_224",
    "mobilenet_v3_small", "efficientnet_b1_224", "efficientnet_b0_299"])
def test_names_without_published_weights_are_refused(name):
  with pytest.raises(QuickDrawError, match="is not a backbone quickdraw "
                     "offers"):
    backbones.parse_architecture(name)


def _requested_file(monkeypatch, build):
  """The weights file Keras' own constructor asks for."""
  from keras.src.utils import file_utils
  asked = []

  class Asked(Exception):
    pass

  def get_file(fname, origin, **kwargs):
    asked.append((fname, origin))
    raise Asked

  monkeypatch.setattr(file_utils, "get_file", get_file)
  with pytest.raises(Asked):
    build()
  return asked[0]


@pytest.mark.parametrize("name, build", [
    ("mobilenet_0.25_128", lambda: keras.applications.MobileNet(
        input_shape=(128, 128, 3), alpha=0.25, include_top=False)),
    ("mobilenet_v2_0.35_96", lambda: keras.applications.MobileNetV2(
        input_shape=(96, 96, 3), alpha=0.35, include_top=False)),
    ("mobilenet_v2_1.3_224", lambda: keras.applications.MobileNetV2(
        input_shape=(224, 224, 3), alpha=1.3, include_top=False)),
    ("mobilenet_v3_large_minimalistic_128",
     lambda: keras.applications.MobileNetV3Large(
         input_shape=(128, 128, 3), minimalistic=True, include_top=False)),
    ("mobilenet_v3_small_224", lambda: keras.applications.MobileNetV3Small(
        input_shape=(224, 224, 3), include_top=False)),
    ("efficientnet_b0_224", lambda: keras.applications.EfficientNetB0(
        input_shape=(224, 224, 3), include_top=False))])
def test_weights_file_names_are_keras_own(monkeypatch, name, build):
  arch = backbones.parse_architecture(name)
  filename, origin = _requested_file(monkeypatch, build)
  assert (arch.weights_filename, arch.weights_url) == (filename, origin)


@pytest.mark.parametrize("given, wanted, names", [
    ("mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5",
     "mobilenet_v2_0.5_224", "mobilenet_v2_0.35_224"),
    ("mobilenet_2_5_224_tf_no_top.h5", "mobilenet_0.50_224",
     "mobilenet_0.25_224"),
    ("weights_mobilenet_v3_small_224_1.0_float_no_top_v2.h5",
     "mobilenet_v3_large_224", "mobilenet_v3_small_<size> (any size)"),
    ("efficientnetb0_notop.h5", "mobilenet_v3_small_minimalistic_96",
     "efficientnet_b0_<size> (any size)")])
def test_weights_of_another_variant_name_the_architecture_they_fit(
    tmp_path, given, wanted, names):
  path = tmp_path / given
  path.write_bytes(b"")
  arch = backbones.parse_architecture(wanted)
  with pytest.raises(QuickDrawError) as e:
    model.resolve_weights(arch, str(path))
  message = str(e.value)
  assert f"are Keras' weights for {names}, not --architecture={wanted}" in (
      message)
  assert f"pass {arch.weights_filename}, or --architecture=" in message


def test_one_file_serves_every_size_of_v3_and_efficientnet(tmp_path):
  for name in ("mobilenet_v3_large_96", "efficientnet_b0_160"):
    arch = backbones.parse_architecture(name)
    path = tmp_path / arch.weights_filename
    path.write_bytes(b"")
    assert model.resolve_weights(arch, str(path)) == str(path)


@pytest.mark.parametrize("family", [f.key for f in backbones.FAMILIES])
def test_fine_tuning_counts_weighted_layers_and_never_batch_norm(family):
  arch = backbones.Architecture(0.35 if family == "mobilenet_v2" else (
      0.25 if family == "mobilenet" else 1.0), 32, family)
  backbone = model.build_backbone(arch, None)
  assert backbone.name == arch.name
  assert backbones.find_architecture(backbone) == arch
  candidates = backbones.fine_tune_candidates(backbone)
  assert candidates and not any(isinstance(
      l, (keras.layers.BatchNormalization, keras.layers.Normalization))
                                for l in candidates)
  assert all(l.weights for l in candidates)
  model.unfreeze_top_layers(backbone, 5)
  trainable = [l for l in backbone.layers if l.trainable and l.weights]
  assert trainable == candidates[-5:]
  model.unfreeze_top_layers(backbone, 1000)  # more than there are: all
  trainable = [l for l in backbone.layers if l.trainable and l.weights]
  assert trainable == candidates


def test_a_classifier_tells_its_input_range():
  for name, expected in (("mobilenet_v2_0.35_96", preprocessing.SIGNED_RANGE),
                         ("mobilenet_v3_small_96", preprocessing.PIXEL_RANGE)):
    arch = backbones.parse_architecture(name)
    backbone = model.build_backbone(
        backbones.Architecture(arch.alpha, 32, arch.family), None)
    classifier = model.build_classifier(backbone, model.build_head(
        int(backbone.output_shape[-1]), 3))
    assert backbones.input_range_of(classifier) == expected
  stand_in = keras.Sequential([keras.Input((32, 32, 3)),
                               keras.layers.Flatten(),
                               keras.layers.Dense(3)])
  assert backbones.input_range_of(stand_in) == preprocessing.SIGNED_RANGE


@pytest.mark.parametrize("value_range", [preprocessing.SIGNED_RANGE,
                                         preprocessing.PIXEL_RANGE])
def test_normalization_round_trips(value_range):
  mean, std = preprocessing.normalization(value_range)
  assert preprocessing.range_of_normalization(mean, std) == value_range
  pixels = np.array([0.0, 127.0, 255.0])
  scaled = preprocessing.scale_to_range(pixels, value_range).numpy()
  np.testing.assert_allclose(scaled, (pixels - mean) / std, atol=1e-6)
  np.testing.assert_allclose(
      preprocessing.unscale_from_range(scaled, value_range), pixels,
      atol=1e-4)


def _save_legacy_h5(backbone, path):
  """`backbone`'s weights in the legacy HDF5 layout of Keras' published
  files (one group per layer, in order)."""
  from keras.src.legacy.saving import legacy_h5_format
  with h5py.File(path, "w") as f:
    legacy_h5_format.save_weights_to_hdf5_group(f, backbone)


def test_efficientnet_from_a_file_computes_what_keras_imagenet_does(
    monkeypatch, tmp_path):
  """Keras' `EfficientNetB0(weights="imagenet")` adds a rescaling layer
  that loading the same file by path leaves out; our backbone folds it
  into the stem. Both must give the same features."""
  from keras.src.utils import file_utils
  arch = backbones.Architecture(1.0, 32, "efficientnet_b0")
  random = arch.build()
  keras.utils.set_random_seed(3)
  for weight in random.weights:  # non-trivial statistics everywhere
    weight.assign(np.random.default_rng(len(weight.path)).normal(
        0.5, 0.2, weight.shape).astype(np.float32))
  path = str(tmp_path / arch.weights_filename)
  _save_legacy_h5(random, path)
  monkeypatch.setattr(file_utils, "get_file", lambda *a, **k: path)
  reference = keras.applications.EfficientNetB0(
      input_shape=(32, 32, 3), include_top=False, pooling="avg")
  ours = model.build_backbone(arch, path)
  images = np.random.default_rng(0).uniform(0, 255, (4, 32, 32, 3)).astype(
      np.float32)
  expected = reference(images, training=False).numpy()
  np.testing.assert_allclose(ours(images, training=False).numpy(), expected,
                             rtol=1e-4, atol=1e-4 * np.abs(expected).max())
  without_fold = arch.build()
  without_fold.load_weights(path)
  assert not np.allclose(without_fold(images, training=False).numpy(),
                         expected, rtol=1e-3)


REAL_V2 = os.path.join(
    WEIGHTS_DIR,
    "mobilenet_v2_weights_tf_dim_ordering_tf_kernels_0.35_224_no_top.h5")


@pytest.mark.skipif(not os.path.isfile(REAL_V2), reason=(
    f"real MobileNetV2 weights not found at {REAL_V2} (development "
    "checkout only)"))
def test_real_v2_weights_load_as_keras_loads_them():
  arch = backbones.parse_architecture("mobilenet_v2_0.35_224")
  ours = model.build_backbone(arch, REAL_V2)
  reference = keras.applications.MobileNetV2(
      input_shape=(224, 224, 3), alpha=0.35, include_top=False,
      weights=REAL_V2, pooling="avg")
  images = np.random.default_rng(0).uniform(-1, 1, (2, 224, 224, 3)).astype(
      np.float32)
  np.testing.assert_allclose(ours(images).numpy(), reference(images).numpy(),
                             atol=1e-5)
