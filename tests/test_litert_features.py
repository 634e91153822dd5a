"""Bottlenecks by LiteRT: the same features as Keras, a kept conversion,
the fallback to Keras, and the export's references on them."""

import dataclasses
import os

import keras
import numpy as np
import pytest

from quickdraw import (backbones, bottlenecks, input_pipeline,
                       litert_features, model, preprocessing)
from quickdraw.export import checks, flow

SIZE = 64
TINY = model.Architecture(alpha=0.25, image_size=SIZE)


def _backbone(seed=0):
  keras.utils.set_random_seed(seed)
  return model.build_backbone(TINY, None)


@pytest.fixture(autouse=True)
def always_worth(monkeypatch):
  """Every test run converts, however few its drawings; the in-process
  memo starts empty."""
  monkeypatch.setattr(litert_features, "MIN_DRAWINGS", 0)
  litert_features._MADE.clear()


def test_the_split_s_features_are_keras_own(make_source, tmp_path,
                                             monkeypatch):
  """The split computed by LiteRT (never by Keras' compiled forward) holds
  the features Keras computes, in index order."""
  backbone = _backbone()
  source = make_source()

  def no_keras(*args):
    raise AssertionError("Keras computed the bottlenecks")
  monkeypatch.setattr(bottlenecks, "compiled_forward", no_keras)
  features, labels, computed = bottlenecks.load_or_compute(
      backbone, source, "train", SIZE, str(tmp_path), batch_size=32,
      verbose=0)
  assert computed
  np.testing.assert_array_equal(labels, source.index("train").class_ids)
  images = np.concatenate([x for x, _ in input_pipeline.make_dataset(
      source, "train", 64, image_size=SIZE, shuffle=False,
      value_range=preprocessing.SIGNED_RANGE)])
  expected = backbone.predict(images, verbose=0)
  scale = np.abs(expected).max()
  assert np.abs(features - expected).max() <= litert_features.TOLERANCE * (
      scale)
  kept = [f for f in os.listdir(tmp_path) if f.startswith("litert-")]
  assert len(kept) == 1 and kept[0].endswith(".tflite")


def test_a_backbone_that_rescales_inside_takes_drawings_too(make_source,
                                                            tmp_path):
  """The LiteRT model upsamples the drawings into its backbone's range
  itself: for a family that takes 0..255 (MobileNetV3, which rescales
  inside), its features of the run's drawings are Keras' of the same
  drawings upsampled."""
  architecture = dataclasses.replace(
      backbones.parse_architecture("mobilenet_v3_small_minimalistic_96"),
      image_size=SIZE)
  keras.utils.set_random_seed(0)
  backbone = model.build_backbone(architecture, None)
  assert backbones.input_range_of(backbone) == (0.0, 255.0)
  drawings = np.asarray(next(iter(input_pipeline.make_dataset(
      make_source(), "test", 32, shuffle=False, value_range=None)))[0])
  lite = litert_features.forward(backbone, SIZE, str(tmp_path), 32,
                                 lambda: drawings)
  assert lite is not None and lite.image_size == 28
  expected = backbone.predict(preprocessing.upsample_to_rgb(
      drawings, SIZE, (0.0, 255.0)), verbose=0)
  assert np.abs(lite(drawings) - expected).max() <= (
      litert_features.TOLERANCE * np.abs(expected).max())


def test_a_kept_model_is_loaded_not_converted(make_source, tmp_path,
                                              monkeypatch):
  backbone = _backbone()
  bottlenecks.load_or_compute(backbone, make_source(), "train", SIZE,
                              str(tmp_path), verbose=0)
  litert_features._MADE.clear()  # as a new process

  def no_conversion(*args):
    raise AssertionError("converted again")
  monkeypatch.setattr(litert_features, "_convert", no_conversion)
  _, _, computed = bottlenecks.load_or_compute(
      backbone, make_source(), "validation", SIZE, str(tmp_path), verbose=0)
  assert computed
  # Other weights are another model: never the kept one.
  other = _backbone(seed=1)
  assert litert_features.model_path(str(tmp_path), other, SIZE) != (
      litert_features.model_path(str(tmp_path), backbone, SIZE))


def test_a_damaged_kept_model_is_converted_again(make_source, tmp_path):
  backbone = _backbone()
  path = litert_features.model_path(str(tmp_path), backbone, SIZE)
  with open(path, "wb") as f:
    f.write(b"not a model")
  drawings = np.asarray(next(iter(input_pipeline.make_dataset(
      make_source(), "train", 8, shuffle=False, value_range=None)))[0])
  lite = litert_features.forward(backbone, SIZE, str(tmp_path), 8,
                                 lambda: drawings)
  assert lite is not None
  with open(path, "rb") as f:
    assert f.read() != b"not a model"


def test_a_disagreeing_conversion_falls_back_to_keras(make_source, tmp_path,
                                                      monkeypatch, caplog):
  """Features off by more than the tolerance: a notice, Keras computes
  them, and nothing is kept."""
  monkeypatch.setattr(litert_features, "TOLERANCE", -1.0)
  backbone = _backbone()
  features, _, computed = bottlenecks.load_or_compute(
      backbone, make_source(), "train", SIZE, str(tmp_path), verbose=0)
  assert computed and len(features)
  assert "computed by Keras" in caplog.text
  assert not [f for f in os.listdir(tmp_path) if f.startswith("litert-")]


def test_an_accelerator_or_too_few_drawings_keep_keras(tmp_path,
                                                       monkeypatch):
  backbone = _backbone()
  sample = lambda: np.zeros((4, 28, 28, 1), np.uint8)  # noqa: E731
  monkeypatch.setattr(litert_features, "on_cpu_only", lambda: False)
  assert litert_features.forward(backbone, SIZE, str(tmp_path), 10**6,
                                 sample) is None
  monkeypatch.undo()
  monkeypatch.setattr(litert_features, "MIN_DRAWINGS", 1000)
  # 10,000 drawings at 64 px are 816 at 224: not worth a conversion.
  assert litert_features.forward(backbone, SIZE, str(tmp_path), 10_000,
                                 sample) is None
  assert not os.listdir(tmp_path)


def test_the_export_s_references_run_the_head_on_litert_features(
    make_source, tmp_path):
  """Calibration and the checks take `litert_features.predictor`: the head
  on the LiteRT features for a frozen backbone, the same probabilities as
  Keras; Keras again once the backbone's weights change (fine-tuning)."""
  backbone = _backbone()
  head = model.build_head(int(backbone.output_shape[-1]), 4)
  classifier = model.build_classifier(backbone, head)
  assert isinstance(litert_features.predictor(classifier),
                    type(checks.inference.KerasPredictor("", classifier)))
  drawings = np.asarray(next(iter(input_pipeline.make_dataset(
      make_source(), "test", 40, shuffle=False, value_range=None)))[0])
  assert litert_features.forward(backbone, SIZE, str(tmp_path), 40,
                                 lambda: drawings) is not None
  fast = litert_features.predictor(classifier)
  assert isinstance(fast, litert_features.HeadOnFeatures)
  assert fast.input_range == backbones.input_range_of(classifier)
  keras_one = checks.inference.KerasPredictor("", classifier)
  np.testing.assert_allclose(
      checks.inference.predict_drawings(fast, drawings),
      checks.inference.predict_drawings(keras_one, drawings), atol=1e-4)
  # Calibration runs on it, and finds a temperature.
  labels = np.arange(len(drawings)) % 4
  assert flow.calibrate(classifier, drawings.reshape(-1, 784), labels,
                        canvases_each=8)["temperature"] > 0
  backbone.weights[-1].assign(backbone.weights[-1] * 1.01)
  assert not isinstance(litert_features.predictor(classifier),
                        litert_features.HeadOnFeatures)


def test_calibration_s_canvases_are_kept_for_the_next_run(monkeypatch,
                                                          tmp_path):
  """The held-out drawings re-drawn as app canvases (about 10 ms each) are
  kept in the bottleneck cache: a new process reads them, draws nothing,
  and gets the same drawings."""
  from quickdraw.testing import synthetic
  drawings = synthetic.make_drawings(0, 12).reshape(-1, 784)
  rows, seen = checks.seen_by_the_app(drawings, 12, 64, seed=2,
                                      folder=str(tmp_path))
  assert [f for f in os.listdir(tmp_path) if f.startswith("canvases-")]
  checks._SEEN.clear()  # as a new process

  def no_drawing(*args):
    raise AssertionError("drew the canvases again")
  monkeypatch.setattr(checks, "as_the_app_sees", no_drawing)
  again_rows, again = checks.seen_by_the_app(drawings, 12, 64, seed=2,
                                             folder=str(tmp_path))
  np.testing.assert_array_equal(again_rows, rows)
  np.testing.assert_array_equal(again, seen)


def test_the_checks_canvases_are_kept_compressed_for_the_next_run(
    monkeypatch, tmp_path):
  """The export checks' app canvases, kept in the bottleneck cache
  (compressed), come back the same in a new process without drawing."""
  from quickdraw.testing import synthetic
  drawings = synthetic.make_drawings(0, 12).reshape(-1, 784)
  rows, pictures, seen = checks.as_the_app_sees(drawings, 9, 96, seed=0,
                                                folder=str(tmp_path))
  expected = checks.as_the_app_sees(drawings, 9, 96, seed=0)
  for got, want in zip((rows, pictures, seen), expected):
    np.testing.assert_array_equal(got, want)
  kept = [f for f in os.listdir(tmp_path) if f.startswith("pictures-")]
  assert len(kept) == 2 and kept[0].startswith(kept[1][:-7])  # + .sha256
  assert os.path.getsize(tmp_path / min(kept)) < pictures.nbytes / 5

  def no_drawing(*args, **kwargs):
    raise AssertionError("drew the canvases again")
  monkeypatch.setattr(checks.canvases, "pen_suite", no_drawing)
  again = checks.as_the_app_sees(drawings, 9, 96, seed=0,
                                 folder=str(tmp_path))
  for got, want in zip(again, expected):
    np.testing.assert_array_equal(got, want)


def _converted(make_source, folder, count):
  """(backbone, classifier, `count` test drawings), the backbone's LiteRT
  model made in `folder`."""
  backbone = _backbone()
  classifier = model.build_classifier(
      backbone, model.build_head(int(backbone.output_shape[-1]), 4))
  drawings = np.asarray(next(iter(input_pipeline.make_dataset(
      make_source(), "test", count, shuffle=False, value_range=None)))[0])
  assert litert_features.forward(backbone, SIZE, folder, count,
                                 lambda: drawings) is not None
  return backbone, classifier, drawings


def test_features_of_the_export_s_drawings_are_kept_for_the_next_run(
    make_source, tmp_path, monkeypatch):
  """The head's references on drawings (calibration's held-out drawings
  and canvases, the checks' test drawings) keep their features beside the
  LiteRT model: a rerun's predictor, with the same backbone, computes
  none, and gives the same probabilities; other drawings are computed."""
  backbone, classifier, drawings = _converted(make_source, str(tmp_path), 24)
  first = checks.inference.predict_drawings(
      litert_features.predictor(classifier), drawings)
  kept = [f for f in os.listdir(tmp_path) if f.startswith("features-")
          and f.endswith(".npy")]
  assert len(kept) == 1

  calls = []
  lite = litert_features.registered(backbone)
  monkeypatch.setattr(type(lite), "__call__", lambda self, images: calls.append(
      len(images)) or np.zeros((len(images), backbone.output_shape[-1])))
  again = checks.inference.predict_drawings(
      litert_features.predictor(classifier), drawings.reshape(-1, 784))
  assert not calls
  np.testing.assert_array_equal(again, first)
  checks.inference.predict_drawings(litert_features.predictor(classifier),
                                    drawings[:5])
  assert calls == [5]


def test_the_checks_take_the_split_s_own_bottlenecks(make_source, tmp_path,
                                                     monkeypatch):
  """A first run's calibration and checks use drawings of splits whose
  features the run just computed: given those (rows of the cache, in the
  split's order), the predictor computes none, and gets the features
  LiteRT gives those very drawings."""
  from quickdraw.data_source import drawings_from_split, positions_from_split
  source = make_source()
  backbone, classifier, _ = _converted(make_source, str(tmp_path), 16)
  features, _, _ = bottlenecks.load_or_compute(
      backbone, source, "test", SIZE, str(tmp_path / "split"), batch_size=8,
      verbose=0)
  count = len(features) // 2
  drawings, _ = drawings_from_split(source, "test", count)
  expected = litert_features.registered(backbone)(
      drawings.reshape(-1, 28, 28, 1))
  litert_features.keep_features(classifier, drawings, features[
      positions_from_split(source, "test", count)])

  def no_features(self, images):
    raise AssertionError("computed the features again")
  monkeypatch.setattr(type(litert_features.registered(backbone)),
                      "__call__", no_features)
  head = classifier.layers[-1]
  np.testing.assert_allclose(
      checks.inference.predict_drawings(
          litert_features.predictor(classifier), drawings),
      head.predict(expected, verbose=0), atol=1e-5)
  with pytest.raises(ValueError):
    litert_features.keep_features(classifier, drawings, features[:1])


def test_a_reexport_loads_the_run_s_kept_model(make_source, tmp_path):
  """quickdraw-export's model, saved and loaded again, finds the LiteRT
  backbone its training kept (same weights, same key), converting
  nothing; an untrained copy finds none."""
  from quickdraw import run_files
  backbone, classifier, _ = _converted(make_source, str(tmp_path), 16)
  classifier.save(tmp_path / "model.keras")
  litert_features._MADE.clear()  # as quickdraw-export's own process
  loaded = run_files.load_model(str(tmp_path / "model.keras"))
  assert litert_features.load_kept(loaded, str(tmp_path))
  assert isinstance(litert_features.predictor(loaded),
                    litert_features.HeadOnFeatures)
  other = model.build_classifier(
      _backbone(seed=1), model.build_head(int(backbone.output_shape[-1]), 4))
  assert not litert_features.load_kept(other, str(tmp_path))
