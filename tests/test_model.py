import os
import shutil
import socket
import urllib.parse

import keras
import numpy as np
import pytest

from quickdraw import model
from quickdraw.errors import QuickDrawError

from conftest import SHARED_DATA

REAL_WEIGHTS = os.path.join(SHARED_DATA, "..", "weights",
                            "mobilenet_2_5_224_tf_no_top.h5")
# weights=None accepts small inputs: the tests stay fast on 2 cores.
TINY = model.Architecture(alpha=0.25, image_size=64)


@pytest.mark.parametrize("name, alpha, size", [
    ("mobilenet_1.0_224", 1.0, 224), ("mobilenet_0.75_192", 0.75, 192),
    ("mobilenet_0.50_160", 0.5, 160), ("mobilenet_0.5_160", 0.5, 160),
    ("mobilenet_0.25_128", 0.25, 128)])
def test_parse_architecture(name, alpha, size):
  arch = model.parse_architecture(name)
  assert (arch.alpha, arch.image_size) == (alpha, size)
  assert model.parse_architecture(arch.name) == arch


@pytest.mark.parametrize("name, hint", [
    ("mobilenet_1.0_299", "did you mean mobilenet_1.0_224"),
    ("mobilenet_2.0_224", "did you mean mobilenet_1.0_224"),
    ("inception_v3", ""), ("mobilenet_v2_1.4_128", "mobilenet_v2_1.4_224")])
def test_bad_architecture(name, hint):
  with pytest.raises(QuickDrawError) as e:
    model.parse_architecture(name)
  message = str(e.value)
  assert message.startswith(f"--architecture={name} is not a backbone "
                            "quickdraw offers; ")
  assert hint in message
  assert message.endswith(
      "use mobilenet_<alpha>_<size> (v1), mobilenet_v2_<alpha>_<size>, "
      "mobilenet_v3_{small,large}[_minimalistic]_<size> or "
      "efficientnet_b0_<size>; --help lists the alphas and sizes")


def test_classifier_shapes_and_frozen_backbone():
  backbone = model.build_backbone(TINY, None)
  assert backbone.output_shape == (None, 256)
  assert not backbone.trainable and not backbone.trainable_weights
  head = model.build_head(256, 5)
  classifier = model.build_classifier(backbone, head)
  assert classifier.input_shape == (None, 64, 64, 3)
  assert classifier.output_shape == (None, 5)
  # Only the head trains: its kernel and bias.
  assert [w.shape for w in classifier.trainable_weights] == [(256, 5), (5,)]
  images = np.random.default_rng(0).uniform(-1, 1, (2, 64, 64, 3))
  probs = classifier.predict(images.astype(np.float32), verbose=0)
  # A softmax over the logits and a none logit of 0, without the none's.
  kernel, bias = head.get_layer("final_result").get_weights()
  logits = np.concatenate([backbone.predict(images, verbose=0) @ kernel +
                           bias, np.zeros((2, 1))], 1)
  expected = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  np.testing.assert_allclose(probs, expected[:, :5], rtol=1e-4, atol=1e-6)
  assert (probs.sum(1) < 1).all()


@pytest.mark.parametrize("drawings", [False, True])
def test_mixing_trainer_scores_pictures_then_mixes_of_their_features(
    drawings):
  backbone = model.build_backbone(TINY, None)
  head = model.build_head(256, 5)
  classifier = model.build_classifier(backbone, head)
  rng = np.random.default_rng(0)
  if drawings:  # 28x28 drawings, upsampled in the model
    pictures = rng.integers(0, 256, (3, 28, 28, 1)).astype(np.uint8)
    images = model.DrawingsToImages(64, value_range=(-1, 1))(pictures)
  else:
    pictures = images = rng.uniform(-1, 1, (3, 64, 64, 3)).astype(np.float32)
  trainer = model.build_mixing_trainer(backbone, head, drawings=drawings)
  # The classifier's weights, no more.
  assert ({id(w) for w in trainer.weights} ==
          {id(w) for w in classifier.weights})
  pairs = np.array([[0, 1], [2, 0]], np.int32)
  shares = np.array([[0.3], [0.6]], np.float32)
  probs = np.asarray(trainer([pictures, pairs, shares]))
  features = np.asarray(backbone(images))
  mixes = shares * features[pairs[:, 0]] + (1 - shares) * features[
      pairs[:, 1]]
  np.testing.assert_allclose(probs[:3], classifier(images), atol=1e-5)
  np.testing.assert_allclose(probs[3:], head(mixes), atol=1e-5)
  # A batch without mixes.
  probs = trainer([pictures, np.zeros((0, 2), np.int32),
                   np.zeros((0, 1), np.float32)])
  assert probs.shape == (3, 5)


def test_unfreeze_top_layers_keeps_batch_norm_frozen():
  backbone = model.build_backbone(TINY, None)
  model.unfreeze_top_layers(backbone, 4)
  trainable = [l for l in backbone.layers if l.trainable and l.weights]
  # The top 4 convolutions (v1: pointwise, depthwise, pointwise, ...).
  assert [l.name for l in trainable] == [
      "conv_dw_12", "conv_pw_12", "conv_dw_13", "conv_pw_13"]
  assert not any(isinstance(l, keras.layers.BatchNormalization)
                 for l in backbone.layers if l.trainable and l.weights)
  model.unfreeze_top_layers(backbone, 0)
  assert not backbone.trainable_weights


def test_weights_none_and_bad_path(tmp_path):
  arch = model.parse_architecture("mobilenet_0.25_128")
  assert model.resolve_weights(arch, "none") is None
  with pytest.raises(QuickDrawError) as e:
    model.resolve_weights(arch, str(tmp_path / "w.h5"))
  assert str(e.value) == (f"--weights={tmp_path}/w.h5: no such file; pass a "
                          "Keras .h5 weights file, imagenet or none")


def test_imagenet_download_offline_names_the_alternative(tmp_path):
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
  arch = model.parse_architecture("mobilenet_1.0_224")
  base = f"http://127.0.0.1:{port}/"
  with pytest.raises(QuickDrawError) as e:
    model.resolve_weights(arch, "imagenet", str(tmp_path), base_url=base)
  message = str(e.value)
  assert message.startswith(
      "could not download ImageNet weights for mobilenet_1.0_224 from "
      f"{base}mobilenet_1_0_224_tf_no_top.h5 (")
  assert message.endswith(
      f"copy mobilenet_1_0_224_tf_no_top.h5 into {tmp_path}/models, or pass "
      "--weights=PATH to a Keras .h5 file (or --weights=none)")
  assert not os.listdir(tmp_path / "models")  # nothing half-written


def test_wrong_weights_file_is_a_clear_error(tmp_path):
  path = tmp_path / "not_weights.h5"
  path.write_bytes(b"not hdf5 at all")
  with pytest.raises(QuickDrawError, match=r"cannot be loaded into "
                     r"mobilenet_0\.25_64 .*; pass the no-top weights"):
    model.build_backbone(TINY, str(path))


needs_real_weights = pytest.mark.skipif(
    not os.path.isfile(REAL_WEIGHTS),
    reason=f"real ImageNet weights not found at {REAL_WEIGHTS} (development "
           "checkout only)")


@needs_real_weights
def test_imagenet_weights_download_into_model_dir(tmp_path):
  mirror = tmp_path / "mirror"
  mirror.mkdir()
  shutil.copy(REAL_WEIGHTS, mirror)
  arch = model.parse_architecture("mobilenet_0.25_224")
  base = "file://" + urllib.parse.quote(str(mirror)) + "/"
  path = model.resolve_weights(arch, "imagenet", str(tmp_path / "keras"),
                               base_url=base)
  assert path == str(tmp_path / "keras" / "models" /
                     "mobilenet_2_5_224_tf_no_top.h5")
  backbone = model.build_backbone(arch, path)
  reference = model.build_backbone(arch, REAL_WEIGHTS)
  for a, b in zip(backbone.weights, reference.weights):
    np.testing.assert_array_equal(a.numpy(), b.numpy())


def test_calibrated_random_backbone_gives_informative_features():
  from quickdraw import preprocessing
  from quickdraw.testing import synthetic
  drawings = np.concatenate([synthetic.make_drawings(c, 8) for c in range(4)])
  images = preprocessing.upsample_to_rgb(drawings.reshape(-1, 28, 28, 1), 32)
  backbone = model.build_backbone(model.Architecture(0.25, 32), None)
  before = backbone.predict(images, verbose=0)
  assert before.std(0).max() < 1e-6  # default statistics: features vanish
  model.calibrate_batch_norm(backbone, images)
  after = backbone.predict(images, verbose=0)
  assert after.std(0).mean() > 0.1
  assert not backbone.trainable and not backbone.trainable_weights
