"""Every backbone family end to end: train a head, export float32 and int8
artifacts, load the app's model in MediaPipe, and read each file's contract
back.

The families other than v1 have no ImageNet weights here, so they train
with `weights=None` (batch norm calibrated on the drawings) at 32 px on the
generated classes: fast, and the same code path as real weights. v1 runs
end to end in test_export (configs/smoke.flags) and, with real weights, in
test_real_data and test_quality; the workflow tests run on the test
backbone (backbones.py, "test_tiny"). MobileNetV3 Large (the same
Keras builder and table entry as Small, which trains here) and the
minimalistic V3 variants (that builder without hard-swish and
squeeze-excite: fewer kinds of ops) are exported untrained, float32 and
int8, and loaded in MediaPipe, which keeps the suite within its time.
"""

import dataclasses
import http.client
import json
import os

import keras
import numpy as np
import pytest
import tensorflow as tf

from quickdraw import (backbones, demo, export, inference, preprocessing,
                       training)
from quickdraw.testing import synthetic
from quickdraw import model as model_lib
from quickdraw.cli import predict as predict_cli
from quickdraw.config import DataConfig
from quickdraw.export import flow as export_flow

from conftest import CATEGORIES, serve_in_background

mp = pytest.importorskip(
    "mediapipe", reason="mediapipe is in the test extra: pip install -e "
    "'.[test]'")
from mediapipe.tasks.metadata import (  # noqa: E402
    metadata_schema_py_generated as metadata_schema)
from test_android import classifier_for, mediapipe_top1  # noqa: E402

SIZE = 32  # Keras' smallest input for these families
CANVAS = 128
# Head epochs: from the bottleneck cache, each costs little.
EPOCHS = 20
# float32 and full-integer int8, whose kernels depend on the family's ops;
# dynamic and float16 change weights alone (tested on v1 in test_export).
MODES = ("float32", "int8")
# One architecture per family of the table but v1 (see the docstring):
# trained, or exported untrained.
FAMILIES = {
    "mobilenet_v2": "mobilenet_v2_0.35_96",
    "mobilenet_v3_small": "mobilenet_v3_small_96",
    "efficientnet_b0": "efficientnet_b0_96",
}
UNTRAINED = {
    "mobilenet_v3_large": "mobilenet_v3_large_96",
    "mobilenet_v3_small_minimalistic": "mobilenet_v3_small_minimalistic_96",
    "mobilenet_v3_large_minimalistic": "mobilenet_v3_large_minimalistic_96",
}


def test_the_table_has_a_test_for_every_family():
  # v1 and the test backbone run through every workflow test.
  assert set(FAMILIES) | set(UNTRAINED) | {"mobilenet", "test_tiny"} == {
      f.key for f in backbones.FAMILIES}


@pytest.fixture(scope="module", params=sorted(FAMILIES))
def run(request, data_dir, tmp_path_factory):
  """(architecture, run folder, TrainResult) of one family, exported with
  every variant and Android assets."""
  name = FAMILIES[request.param]
  out = tmp_path_factory.mktemp(request.param)
  data = DataConfig(categories=CATEGORIES, data_dir=data_dir, download=False,
                    samples_per_class=120, image_size=SIZE)
  config = training.TrainConfig(
      architecture=name, weights="none", epochs=EPOCHS, train_batch_size=32,
      output_dir=str(out), bottleneck_dir=str(out / "cache"), verbose=0,
      # No junk: its 2,000 pictures' features cost four times the
      # drawings', and outlier exposure is the workflow tests' (test_tiny);
      # no pen re-draws either (tests/test_redraws.py, the workflow tests).
      junk_share=0.0, redraw_share=0.0)
  exporting = export.ExportConfig(
      output_graph=str(out / "retrained_graph.pb"),
      output_labels=str(out / "retrained_labels.txt"),
      output_tflite=str(out / "model.tflite"), report_dir=str(out),
      quantize=("int8",), android_assets_dir=str(out / "assets"),
      canvas_size=CANVAS, check_drawings=48, check_canvases=24,
      representative_drawings=32,
      # Random weights quantize badly: without this, int8 would try a dozen
      # float-layer choices (tested on v1 in test_export). Here it is
      # enough that each family's int8 converts to builtins and runs.
      max_quantization_loss=100,
      # Random weights amplify float rounding: EfficientNet B0's float32
      # TFLite strayed 0.001 from Keras here. Wrong preprocessing or
      # weights stray by tenths.
      float_tolerance=0.01)
  history = EpochLogs()
  result = training.train_and_evaluate(data, config, [history])
  report = export_flow.export_run(data, exporting, classifier=result.classifier,
                                  source=result.source)
  return (backbones.parse_architecture(name), out, result, history.logs,
          report)


class EpochLogs(keras.callbacks.Callback):
  """Keeps each epoch's logs."""

  def __init__(self):
    super().__init__()
    self.logs = []

  def on_epoch_end(self, epoch, logs=None):
    self.logs.append(dict(logs or {}))


def test_the_head_learns_and_every_artifact_is_written(run):
  architecture, out, result, logs, report = run
  # Random features (no ImageNet weights here) tell the generated shapes
  # apart only so far, so the test asks that the head learns them, not how
  # well the random backbone generalises.
  assert result.epochs_run == {"head": EPOCHS} and len(logs) == EPOCHS
  assert logs[-1]["loss"] < 0.8 * logs[0]["loss"]
  assert logs[-1]["accuracy"] >= 0.6
  names = {"retrained_graph.pb", "retrained_labels.txt", "model.keras",
           "model_info.json", "export_report.json"}
  for mode in MODES:
    suffix = "" if mode == "float32" else f"_{mode}"
    names |= {f"model{suffix}.tflite", f"model_canvas{suffix}.tflite"}
  assert names <= set(os.listdir(out))
  assert sorted(os.listdir(out / "assets")) == [
      "labels.txt", "model.tflite", "model_info.json", "retrained_graph.pb",
      "retrained_labels.txt"]
  assert report["architecture"] == dataclasses.replace(
      architecture, image_size=SIZE).name
  artifacts = report["artifacts"]
  assert set(artifacts) == {"frozen_graph"} | {
      f"{kind}_{mode}" for kind in ("tflite", "canvas")
      for mode in MODES}
  # The float artifacts compute what Keras computes (the export fails
  # otherwise); the canvas models' preprocessing is the eager function's.
  for name in ("frozen_graph", "tflite_float32", "canvas_float32"):
    assert artifacts[name]["max_probability_difference"] <= 0.01
  for mode in MODES:
    assert (artifacts[f"canvas_{mode}"]["preprocessing_difference"]
            <= export.PREPROCESSING_TOLERANCE)


def test_model_info_states_each_files_input(run):
  architecture, out, _, _, _ = run
  low, high = architecture.input_range
  with open(out / "model_info.json") as f:
    info = json.load(f)
  drawing = info["drawing_input"]
  assert drawing["value_range"] == [low, high]
  if architecture.family.startswith("mobilenet_v2"):
    assert (drawing["mean"], drawing["std"]) == (127.5, 127.5)
    assert drawing["normalization"] == (
        "value = (pixel - 127.5) / 127.5, in [-1, 1]")
  else:  # V3 and EfficientNet rescale inside
    assert (drawing["mean"], drawing["std"]) == (0.0, 1.0)
    assert "0 to 255" in drawing["normalization"]
  assert info["canvas_input"]["dtype"] == "uint8"
  assert info["canvas_input"]["shape"] == [1, CANVAS, CANVAS, 3]
  with open(out / "assets" / "model_info.json") as f:
    assets = json.load(f)
  assert assets["frozen_graph"]["input"] == drawing
  assert assets["input"] == info["canvas_input"]


def _metadata(path):
  from quickdraw import tflite_metadata
  with open(path, "rb") as f:
    model = f.read()
  m = tflite_metadata.tflite_graph.read(model)
  entry = next(e for e in m.metadata if e.name == b"TFLITE_METADATA")
  meta = metadata_schema.ModelMetadataT.InitFromObj(
      metadata_schema.ModelMetadata.GetRootAs(
          bytes(m.buffers[entry.buffer].data), 0))
  return meta.subgraphMetadata[0].inputTensorMetadata[0], model


@pytest.mark.parametrize("mode", MODES)
def test_metadata_normalization_matches_the_family(run, mode):
  from quickdraw import tflite_metadata
  architecture, out, _, _, _ = run
  suffix = "" if mode == "float32" else f"_{mode}"
  tensor, model = _metadata(out / f"model{suffix}.tflite")
  norm = tensor.processUnits[0].options
  mean, std = preprocessing.normalization(architecture.input_range)
  assert (list(norm.mean), list(norm.std)) == ([mean], [std])
  assert tflite_metadata.read_normalization(model) == (mean, std)
  tensor, model = _metadata(out / f"model_canvas{suffix}.tflite")
  assert not tensor.processUnits  # the canvas: uint8, as on screen
  assert tflite_metadata.read_normalization(model) is None


def _canvases(count):
  rng = np.random.default_rng(1)
  for i in range(count):
    class_id = i % len(CATEGORIES)
    extent = CANVAS * rng.uniform(0.4, 0.7)
    yield class_id, synthetic.render_canvas(
        class_id, CANVAS, 0.1 * extent, extent, (CANVAS / 2, CANVAS / 2),
        dark_on_light=bool(i % 2), seed=i)


def test_mediapipe_runs_the_apps_model_and_the_network_as_we_do(run):
  """MediaPipe feeds the canvas model the canvas, and the network a picture
  normalized by its metadata: both must answer as LiteRT does with our own
  preprocessing, whatever the family's input range."""
  architecture, out, _, _, _ = run
  pictures = [p for _, p in _canvases(16)]
  ours = inference.TFLitePredictor(str(out / "assets" / "model.tflite"))
  expected = ours(np.stack(pictures)).argmax(1)
  with classifier_for(out / "assets" / "model.tflite") as classifier:
    got = [mediapipe_top1(classifier, p).index for p in pictures]
  assert np.mean(np.array(got) == expected) >= 0.9
  # The drawing network: a drawing upsampled to its input, as uint8 RGB.
  drawings = np.concatenate([synthetic.make_drawings(c, 4, seed=5)
                             for c in range(len(CATEGORIES))])
  network = inference.TFLitePredictor(str(out / "model.tflite"))
  assert network.input_range == architecture.input_range
  images = np.clip(np.round(preprocessing.upsample_to_rgb(
      drawings.reshape(-1, 28, 28, 1), SIZE, preprocessing.PIXEL_RANGE)),
                   0, 255).astype(np.uint8)
  # The same uint8 pictures, scaled by us: random weights make near-ties,
  # which the rounding to uint8 alone would flip.
  expected = network(preprocessing.scale_to_range(
      images, architecture.input_range).numpy()).argmax(1)
  with classifier_for(out / "model.tflite") as classifier:
    got = [mediapipe_top1(classifier, image).index for image in images]
  assert np.mean(np.array(got) == expected) >= 0.9


def test_predict_reads_each_artifacts_contract(run, tmp_path):
  """`.keras` by its backbone, `.tflite` by its metadata, `.pb` by the
  model_info.json beside it: the three give the same answers."""
  architecture, out, _, _, _ = run
  paths = []
  for i, (_, picture) in enumerate(_canvases(8)):
    paths.append(str(tmp_path / f"canvas_{i}.png"))
    tf.io.write_file(paths[-1], tf.io.encode_png(picture))
  answers = {}
  for name in ("model.keras", "retrained_graph.pb", "model.tflite",
               "model_canvas.tflite"):
    predictor = inference.load_predictor(str(out / name))
    if not predictor.takes_canvas:
      assert predictor.input_range == architecture.input_range, name
    answers[name] = [r.top[0][0] for r in predict_cli.predict(
        str(out / name), None, paths)]
  assert len({tuple(a) for a in answers.values()}) == 1, answers


def test_the_demo_answers_with_the_assets_model(run):
  _, out, _, _, _ = run
  classifier = demo.Classifier(str(out / "assets" / "model.tflite"))
  server = demo.make_server(classifier, "127.0.0.1", 0)
  serve_in_background(server)
  try:
    class_id, picture = next(_canvases(1))
    connection = http.client.HTTPConnection(*server.server_address[:2],
                                            timeout=30)
    connection.request("POST", "/classify",
                       body=tf.io.encode_png(picture).numpy(),
                       headers={"Content-Type": "image/png"})
    response = connection.getresponse()
    answer = json.loads(response.read())
    connection.close()
  finally:
    server.shutdown()
    server.server_close()
  assert response.status == 200 and not answer["blank"]
  expected = classifier.classify(picture)["top"][0]["category"]
  assert answer["top"][0]["category"] == expected
  assert set(classifier.info()["categories"]) == set(CATEGORIES)


@pytest.mark.parametrize("key", sorted(UNTRAINED))
def test_untrained_families_export_for_the_app(key, tmp_path):
  """Untrained (random weights, batch norm calibrated): the float32 and
  int8 networks and canvas models convert to builtins with the family's
  metadata, and MediaPipe runs the app's model as LiteRT does."""
  architecture = dataclasses.replace(
      backbones.parse_architecture(UNTRAINED[key]), image_size=SIZE)
  drawings = np.concatenate([synthetic.make_drawings(c, 16, seed=3)
                             for c in range(len(CATEGORIES))])
  labels = np.repeat(np.arange(len(CATEGORIES)), 16)
  backbone = model_lib.build_backbone(architecture, None)
  model_lib.calibrate_batch_norm(backbone, preprocessing.upsample_to_rgb(
      drawings.reshape(-1, 28, 28, 1), SIZE, architecture.input_range))
  classifier = model_lib.build_classifier(backbone, model_lib.build_head(
      int(backbone.output_shape[-1]), len(CATEGORIES)))
  config = export.ExportConfig(
      output_graph=str(tmp_path / "retrained_graph.pb"),
      output_labels=str(tmp_path / "retrained_labels.txt"),
      output_tflite=str(tmp_path / "model.tflite"), report_dir=str(tmp_path),
      quantize=("int8",), android_assets_dir=str(tmp_path / "assets"),
      canvas_size=CANVAS, check_canvases=16, max_quantization_loss=100,
      float_tolerance=0.01)
  report = export_flow.export_model(classifier, CATEGORIES, config, drawings,
                               labels, drawings[::2], (drawings, labels))
  assert report["architecture"] == architecture.name
  for mode in ("float32", "int8"):
    for canvas in (False, True):
      tensor, _ = _metadata(config.tflite_path(mode, canvas))
      if canvas:
        assert not tensor.processUnits
      else:
        assert list(tensor.processUnits[0].options.mean) == [0.0]
  pictures = [p for _, p in _canvases(8)]
  app = str(tmp_path / "assets" / "model.tflite")
  expected = inference.TFLitePredictor(app)(np.stack(pictures)).argmax(1)
  with classifier_for(app) as classifier:
    got = [mediapipe_top1(classifier, p).index for p in pictures]
  assert np.mean(np.array(got) == expected) >= 0.9
