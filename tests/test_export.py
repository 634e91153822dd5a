"""Export and predict, on a small stand-in classifier of generated classes.

A random-weight MobileNet cannot tell generated shapes apart, so these tests
export a small CNN with the same contract ([batch, S, S, 3] in [-1, 1] ->
softmax), trained here in seconds; the training tests cover exporting a
real quickdraw-train run.
"""

import dataclasses
import json
import os
import shutil
from unittest import mock

import keras
import numpy as np
import pytest
import tensorflow as tf
from absl.testing import flagsaver
from ai_edge_litert.interpreter import Interpreter

from quickdraw import (canvases, export, inference, preprocessing,
                       quantization, tflite_graph, training)
from quickdraw.testing import synthetic
from quickdraw.cli import export as export_cli
from quickdraw.cli import predict as predict_cli
from quickdraw.config import DataConfig
from quickdraw.data_source import QuickDrawSource
from quickdraw.errors import QuickDrawError
from quickdraw.splits import Split
from quickdraw.export import flow as export_flow
from quickdraw.export import convert as export_convert
from quickdraw.export import checks as export_checks
from quickdraw import data_source
from quickdraw.export import contracts

from conftest import CATEGORIES, SMOKE_MIN_TOP1, STAND_IN_SIZE as SIZE

CANVAS = 96  # small canvas models: quick to check


def inputs_from_split(source, split, count: int, image_size: int):
  """Up to `count` drawings spread over a split, as [-1, 1] model inputs."""
  drawings, labels = data_source.drawings_from_split(source, split, count)
  images = inference.to_model_input(drawings, image_size,
                                    value_range=preprocessing.SIGNED_RANGE)
  return images, labels


@pytest.fixture(scope="module")
def trained(stand_in):
  return stand_in


@pytest.fixture(scope="module")
def test_inputs(trained):
  _, source = trained
  return inputs_from_split(source, Split.TEST, 200, SIZE)


@pytest.fixture(scope="module")
def test_drawings(trained):
  """The same 200 test drawings as uint8 rows, as the export checks them."""
  _, source = trained
  return data_source.drawings_from_split(source, Split.TEST, 200)


def config_for(folder, **overrides):
  values = dict(output_graph=os.path.join(folder, "retrained_graph.pb"),
                output_labels=os.path.join(folder, "retrained_labels.txt"),
                output_tflite=os.path.join(folder, "model.tflite"),
                report_dir=str(folder))
  values.update(overrides)
  return export.ExportConfig(**values)


@pytest.fixture(scope="module")
def exported(trained, test_drawings, tmp_path_factory):
  classifier, source = trained
  folder = tmp_path_factory.mktemp("export")
  config = config_for(folder, quantize=("dynamic", "float16", "int8"),
                      android_assets_dir=str(folder / "app" / "assets"),
                      canvas_size=CANVAS, check_canvases=100)
  representative = data_source.drawings_from_split(source, Split.TRAIN, 100)[0]
  report = export_flow.export_model(
      classifier, source.categories, config, *test_drawings, representative,
      data_source.drawings_from_split(source, Split.VALIDATION, 100))
  return config, report


def accuracy(probabilities, labels):
  return float(np.mean(np.argmax(probabilities, 1) == labels))


def test_stand_in_knows_the_classes(trained, test_inputs):
  classifier, _ = trained
  images, labels = test_inputs
  assert accuracy(classifier.predict(images, verbose=0), labels) >= 0.95


def test_frozen_graph_with_tf_compat_v1_alone(exported, test_inputs):
  config, _ = exported
  images, labels = test_inputs
  graph_def = tf.compat.v1.GraphDef()
  with open(config.output_graph, "rb") as f:
    graph_def.ParseFromString(f.read())
  graph = tf.Graph()
  with graph.as_default():
    tf.compat.v1.import_graph_def(graph_def, name="")
  assert graph.get_tensor_by_name("input:0").shape.as_list() == [
      None, SIZE, SIZE, 3]
  with tf.compat.v1.Session(graph=graph) as session:
    probabilities = session.run("final_result:0", {"input:0": images})
  assert accuracy(probabilities, labels) >= 0.95
  np.testing.assert_allclose(probabilities.sum(1), 1, rtol=1e-5)


@pytest.mark.parametrize("mode", ["float32", "dynamic", "float16", "int8"])
def test_tflite_in_the_interpreter(exported, test_inputs, mode):
  config, report = exported
  images, labels = test_inputs
  interpreter = Interpreter(model_path=config.tflite_path(mode))
  inp = interpreter.get_input_details()[0]
  out = interpreter.get_output_details()[0]
  assert inp["dtype"] == np.float32 and list(inp["shape"]) == [1, SIZE,
                                                               SIZE, 3]
  assert (inp["name"], out["name"]) == ("input", "final_result")
  assert interpreter.get_signature_list() == {
      "serving_default": {"inputs": ["input"], "outputs": ["final_result"]}}
  interpreter.allocate_tensors()
  predictions = []
  for image in images:
    interpreter.set_tensor(inp["index"], image[None])
    interpreter.invoke()
    predictions.append(interpreter.get_tensor(out["index"])[0])
  assert accuracy(np.array(predictions), labels) >= 0.93
  figures = report["artifacts"][f"tflite_{mode}"]
  if mode == "float32":
    assert figures["top1_agreement"] == 1.0
    assert figures["max_probability_difference"] <= export.FLOAT_TOLERANCE
  else:
    assert figures["bytes"] < report["artifacts"]["tflite_float32"]["bytes"]


def test_report_and_labels(exported):
  config, report = exported
  assert report["artifacts"]["frozen_graph"]["top1_agreement"] == 1.0
  # The frozen graph (TensorFlow, Keras' speed) is checked on a sample.
  assert report["artifacts"]["frozen_graph"]["drawings"] == min(
      export_checks.GRAPH_CHECK_DRAWINGS, report["check_drawings"])
  with open(os.path.join(config.report_dir, export.REPORT)) as f:
    assert json.load(f) == report
  with open(config.output_labels) as f:
    assert f.read().splitlines() == list(CATEGORIES)


def test_android_assets(exported):
  config, report = exported
  folder = config.android_assets_dir
  present = sorted(os.listdir(folder))
  assert present == ["labels.txt", "model.tflite", "model_info.json",
                     "retrained_graph.pb", "retrained_labels.txt"]
  with open(os.path.join(folder, "model.tflite"), "rb") as a, open(
      config.tflite_path("float32", canvas=True), "rb") as b:
    assert a.read() == b.read()  # --android_model's default: float32
  assert report["android_assets"]["given"] == "float32"
  with open(os.path.join(folder, "model_info.json")) as f:
    info = json.load(f)
  # It describes exactly the files that are there.
  named = {info["tflite"], info["frozen_graph"]["file"], *info["labels"],
           "model_info.json"}
  assert named == set(present)
  assert info["input"]["shape"] == [1, CANVAS, CANVAS, 3]
  assert info["input"]["dtype"] == "uint8"
  assert info["frozen_graph"]["input"]["shape"] == [1, SIZE, SIZE, 3]
  assert "127.5" in info["frozen_graph"]["input"]["normalization"]
  assert info["output"]["order"] == list(CATEGORIES)
  assert info["output"]["name"] == "final_result"
  umask = os.umask(0)
  os.umask(umask)
  # Readable as any new file is (mkstemp's own files are owner-only).
  assert os.stat(os.path.join(folder, "model.tflite")).st_mode & 0o777 == (
      0o666 & ~umask)


def test_run_model_info_names_every_model(exported):
  config, _ = exported
  with open(os.path.join(config.report_dir, "model_info.json")) as f:
    info = json.load(f)
  for kind in ("canvas_models", "drawing_models"):
    for path in info[kind].values():
      assert os.path.isfile(os.path.join(config.report_dir, path)), path
  assert info["canvas_models"]["int8"] == "model_canvas_int8.tflite"
  assert info["canvas_input"]["dtype"] == "uint8"
  assert info["drawing_input"]["dtype"] == "float32"


@pytest.mark.parametrize("mode", ["float32", "dynamic", "float16", "int8"])
def test_canvas_models_keep_the_preprocessing_exact(exported, mode):
  """Quantizing the network leaves the geometry alone, in every variant:
  the tensor the network receives equals canvas_to_drawings' output."""
  config, report = exported
  figures = report["artifacts"][f"canvas_{mode}"]
  assert figures["preprocessing_difference"] <= export.PREPROCESSING_TOLERANCE
  interpreter = Interpreter(model_path=config.tflite_path(mode, canvas=True))
  inp = interpreter.get_input_details()[0]
  out = interpreter.get_output_details()[0]
  assert inp["dtype"] == np.uint8
  assert list(inp["shape"]) == [1, CANVAS, CANVAS, 3]
  assert (inp["name"], out["name"]) == ("input", "final_result")
  with open(config.tflite_path(mode, canvas=True), "rb") as f:
    tflite_graph.check_builtin_ops(f.read(), "the canvas model")


def test_scores_are_calibrated_with_a_threshold(trained, exported):
  """The temperature fitted on validation drawings is in every artifact,
  the calibration error falls, and model_info.json (the run's and the
  app's) carries the threshold predict reads back."""
  classifier, _ = trained
  config, report = exported
  calibrated = report["calibration"]
  assert calibrated["temperature"] != 1.0
  assert calibrated["ece_after"] < calibrated["ece_before"]
  assert calibrated["nll_after"] <= calibrated["nll_before"] + 1e-6
  threshold = calibrated["score_threshold"]
  assert 1 / len(CATEGORIES) < threshold <= 1
  for folder in (config.report_dir, config.android_assets_dir):
    with open(os.path.join(folder, "model_info.json")) as f:
      output = json.load(f)["output"]
    assert output["score_threshold"] == threshold
    assert output["temperature"] == calibrated["temperature"]
    assert contracts.score_threshold_for(
        os.path.join(folder, "model.tflite")) == threshold
  # The frozen graph answers as the Keras model with its logits / T; the
  # Keras model itself is given back unchanged.
  from quickdraw import calibration
  drawings = data_source.drawings_from_split(trained[1], Split.TEST, 50)[0]
  plain = inference.predict_drawings(
      inference.KerasPredictor("", classifier), drawings)
  graph = inference.predict_drawings(
      inference.FrozenGraphPredictor(config.output_graph), drawings)
  np.testing.assert_allclose(
      graph, calibration.rescale(plain, calibrated["temperature"]),
      atol=2e-4)


@pytest.mark.parametrize("mode", ["float32", "int8"])
def test_nothing_drawn_gets_equal_scores(exported, mode):
  """A blank canvas and a dot: every category scores 1 / classes in the
  app's model (under any threshold), while a drawing is answered."""
  config, report = exported
  app = inference.TFLitePredictor(config.tflite_path(mode, canvas=True))
  blank = np.full((CANVAS, CANVAS, 3), 255, np.uint8)
  dot = blank.copy()
  dot[40:43, 50:53] = 0
  drawn = canvases.redraw(synthetic.make_drawings(1, 1), CANVAS)[0]
  scores = app(np.stack([blank, dot, drawn]))
  np.testing.assert_allclose(scores[:2], 1 / len(CATEGORIES), atol=1e-6)
  assert scores[2].max() > 1 / len(CATEGORIES) + 0.2


def test_android_model_picks_the_app_variant(trained, test_drawings,
                                             tmp_path):
  classifier, source = trained
  config = config_for(tmp_path, android_model="dynamic",
                      android_assets_dir=str(tmp_path / "assets"),
                      canvas_size=CANVAS, check_canvases=20)
  assert config.quantize == ("dynamic",)  # made because the app asks for it
  report = export_flow.export_model(classifier, source.categories, config,
                               *test_drawings)
  assert report["android_assets"] == {
      "folder": str(tmp_path / "assets"), "asked": "dynamic",
      "given": "dynamic"}
  assert (tmp_path / "assets" / "model.tflite").read_bytes() == (
      tmp_path / "model_canvas_dynamic.tflite").read_bytes()
  info = json.loads((tmp_path / "assets" / "model_info.json").read_text())
  assert info["variant"] == "canvas model, dynamic"
  with pytest.raises(QuickDrawError) as e:
    config_for(tmp_path, android_model="int4")
  assert str(e.value).startswith("--android_model=int4 is not a variant")


def _snapshot(*folders):
  """Every file under `folders`, by path, with its bytes."""
  files = {}
  for folder in folders:
    for root, _, names in os.walk(folder):
      for name in names:
        path = os.path.join(root, name)
        with open(path, "rb") as f:
          files[path] = f.read()
  return files


def _previous_config(folder):
  return config_for(folder / "run", canvas_size=CANVAS, check_canvases=20,
                    android_assets_dir=str(folder / "assets"))


@pytest.fixture(scope="module")
def clean_export(trained, test_drawings, tmp_path_factory):
  """One complete export into run/ and assets/, made once."""
  classifier, source = trained
  folder = tmp_path_factory.mktemp("clean_export")
  export_flow.export_model(classifier, source.categories,
                           _previous_config(folder), *test_drawings)
  return folder


@pytest.fixture
def previous_export(clean_export, tmp_path):
  """A copy of `clean_export` in tmp_path, to be left intact by a failed
  export: (its config, every file's bytes)."""
  for name in ("run", "assets"):
    shutil.copytree(clean_export / name, tmp_path / name)
  return (_previous_config(tmp_path),
          _snapshot(tmp_path / "run", tmp_path / "assets"))


def test_failed_export_leaves_the_previous_one(trained, test_drawings,
                                               previous_export, tmp_path):
  classifier, source = trained
  config, before = previous_export
  # Every float artifact now fails its parity check, after being written.
  with pytest.raises(QuickDrawError) as e:
    export_flow.export_model(classifier, ("a", "b", "c", "d"),
                        dataclasses.replace(config, float_tolerance=-1.0),
                        *test_drawings)
  assert "disagrees with the Keras model" in str(e.value)
  # Same files, same bytes, no temporaries, in the run and the assets.
  assert _snapshot(tmp_path / "run", tmp_path / "assets") == before


@pytest.mark.parametrize("destination", [
    "android_assets_dir", "output_graph", "output_labels", "output_tflite"])
def test_an_unwritable_destination_replaces_nothing(
    trained, test_drawings, previous_export, tmp_path, destination):
  """A path under a regular file: not even root can write there."""
  classifier, source = trained
  config, before = previous_export
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  bad = str(blocker / ("assets" if destination == "android_assets_dir"
                       else "x" + os.path.splitext(
                           getattr(config, destination))[1]))
  config = dataclasses.replace(config, **{destination: bad})
  with pytest.raises(QuickDrawError) as e:
    export_flow.export_model(classifier, source.categories, config,
                        *test_drawings)
  assert "cannot write" in str(e.value) and str(blocker) in str(e.value)
  after = _snapshot(tmp_path / "run", tmp_path / "assets")
  assert after == before


def test_a_rename_that_fails_midway_is_undone(trained, test_drawings,
                                              previous_export, tmp_path,
                                              monkeypatch):
  classifier, source = trained
  config, before = previous_export
  real_replace = os.replace
  calls = []

  def failing_replace(src, dst):
    # Let the first three temporaries in, then fail on an assets file.
    if ".tmp" in os.path.basename(src):
      calls.append(dst)
      if len(calls) > 3 and "assets" in str(dst):
        raise OSError(28, "No space left on device")
    return real_replace(src, dst)

  monkeypatch.setattr(os, "replace", failing_replace)
  with pytest.raises(QuickDrawError) as e:
    export_flow.export_model(classifier, ("a", "b", "c", "d"), config,
                        *test_drawings)
  assert "No space left on device" in str(e.value)
  assert "nothing was replaced" in str(e.value)
  assert len(calls) > 3
  monkeypatch.undo()
  assert _snapshot(tmp_path / "run", tmp_path / "assets") == before


def test_a_destination_that_is_a_folder_replaces_nothing(
    trained, test_drawings, previous_export, tmp_path):
  classifier, source = trained
  config, before = previous_export
  (tmp_path / "assets" / "labels.txt").unlink()
  (tmp_path / "assets" / "labels.txt").mkdir()
  before = _snapshot(tmp_path / "run", tmp_path / "assets")
  with pytest.raises(QuickDrawError) as e:
    export_flow.export_model(classifier, source.categories, config,
                        *test_drawings)
  assert "labels.txt: it is a folder" in str(e.value)
  assert _snapshot(tmp_path / "run", tmp_path / "assets") == before


def test_a_variant_over_the_loss_limit_never_reaches_the_app(
    trained, test_drawings, tmp_path, monkeypatch, caplog):
  classifier, source = trained
  untrained = keras.models.clone_model(classifier)  # random weights
  real = export_convert.int8_bytes

  def int8_of_the_wrong_model(frozen, *args, **kwargs):
    return real(export_convert.serving_function(untrained, "final_result"),
                *args, **kwargs)

  monkeypatch.setattr(export_convert, "int8_bytes", int8_of_the_wrong_model)
  caplog.set_level("WARNING", logger="absl")  # whatever absl was left at
  config = config_for(tmp_path, android_model="int8",
                      android_assets_dir=str(tmp_path / "assets"),
                      canvas_size=CANVAS, check_canvases=20)
  report = export_flow.export_model(
      classifier, source.categories, config, *test_drawings,
      data_source.drawings_from_split(source, Split.TRAIN, 50)[0],
      data_source.drawings_from_split(source, Split.VALIDATION, 50))
  int8 = report["artifacts"]["tflite_int8"]
  assert int8["loss_points"] > config.max_quantization_loss
  assert not int8["within_loss_limit"]
  assert report["android_assets"]["given"] == "float32"
  assert (tmp_path / "assets" / "model.tflite").read_bytes() == (
      tmp_path / "model_canvas.tflite").read_bytes()
  # Each said once, with how to get an int8 model that ships.
  warnings = [r.getMessage() for r in caplog.records
              if r.levelname == "WARNING"]
  assert sum("model_int8.tflite loses" in w for w in warnings) == 1
  assert any("configs/accurate.flags" in w for w in warnings)
  assert sum("receive the float32 canvas model instead" in w
             for w in warnings) == 1
  assert "over the loss limit" in export_checks.format_report(report)


@pytest.mark.parametrize("loss_target", [100.0, -1.0])
def test_int8_ranks_layers_only_when_every_layer_quantized_loses_too_much(
    trained, loss_target):
  """Within the target, the fully quantized model is the answer and the
  debugger never runs; beyond it (here: an unreachable target), layers are
  ranked and kept in float while any suspect brings int8 closer."""
  classifier, source = trained
  frozen = export_convert.serving_function(classifier, "final_result")
  float_network = export_convert.tflite_bytes(
      frozen, "float32", value_range=preprocessing.SIGNED_RANGE)
  held_out, labels = data_source.drawings_from_split(
      source, Split.VALIDATION, 60)
  representative = data_source.drawings_from_split(
      source, Split.TRAIN, 30)[0]
  float_classes = quantization.predictions(
      float_network, held_out, value_range=preprocessing.SIGNED_RANGE)
  with mock.patch.object(tf.lite.experimental, "QuantizationDebugger",
                         wraps=tf.lite.experimental.QuantizationDebugger
                         ) as debugger:
    result = quantization.int8_network(
        tf.lite.TFLiteConverter.from_concrete_functions(
            [frozen], trackable_obj=tf.Module()),
        SIZE, representative, held_out, labels, float_classes, loss_target,
        max_float_layers=2, value_range=preprocessing.SIGNED_RANGE)
  classes = quantization.predictions(result.model, held_out,
                                     value_range=preprocessing.SIGNED_RANGE)
  loss = 100 * (np.mean(float_classes == labels) - np.mean(classes == labels))
  assert result.held_out_loss[-1] == pytest.approx(loss)
  if loss_target > 0:
    debugger.assert_not_called()
    assert (result.float_layers, result.layer_errors) == ([], {})
    assert len(result.held_out_loss) == 1
  else:
    debugger.assert_called_once()
    # The stand-in's three layers with weights, each ranked.
    assert len(result.layer_errors) == 3
    assert set(result.float_layers) <= set(result.layer_errors)
    assert len(result.float_layers) <= 2
    assert len(result.held_out_loss) == len(result.float_layers) + 1


def test_bad_quantize_mode(tmp_path):
  with pytest.raises(QuickDrawError) as e:
    config_for(tmp_path, quantize=("int4",))
  assert str(e.value).startswith("--quantize=int4 is not a mode")


def _png(path, drawing, size, dark_on_light):
  image = tf.image.resize(drawing[..., None].astype(np.float32), (size, size))
  image = image.numpy().clip(0, 255).astype(np.uint8)
  if dark_on_light:
    image = 255 - image
  tf.io.write_file(str(path), tf.io.encode_png(image))


@pytest.mark.parametrize("artifact", ["model.tflite", "model_canvas.tflite",
                                      "model_canvas_int8.tflite",
                                      "retrained_graph.pb", "model.keras"])
def test_predict_pngs_of_both_polarities_and_npy_rows(
    trained, exported, tmp_path, artifact):
  classifier, source = trained
  config, _ = exported
  model_path = os.path.join(config.report_dir, artifact)
  if artifact == "model.keras" and not os.path.exists(model_path):
    classifier.save(model_path)
  index = source.index(Split.TEST)
  inputs, truth = [], []
  for class_id, name in enumerate(CATEGORIES):
    position = int(np.flatnonzero(index.class_ids == class_id)[0])
    drawing = source.gather_positions(index, [position])[0][0].reshape(28, 28)
    for dark in (False, True):
      path = tmp_path / f"{name}_{'dark' if dark else 'light'}.png"
      _png(path, drawing, 200, dark)
      inputs.append(str(path))
      truth.append(name)
  rows = source.gather_positions(index, np.arange(0, len(index), 7))[0]
  np.save(tmp_path / "rows.npy", rows)
  np.save(tmp_path / "dark_rows.npy", 255 - rows.reshape(-1, 28, 28))
  inputs += [str(tmp_path / "rows.npy"), str(tmp_path / "dark_rows.npy")]
  truth += [CATEGORIES[i] for i in index.class_ids[::7]] * 2
  # Labels: from inside a .tflite, else the labels file beside the model.
  results = predict_cli.predict(model_path, None, inputs, top_k=2)
  assert len(results) == len(truth)
  assert results[-1].name.endswith("dark_rows.npy[%d]" % (len(rows) - 1))
  predicted = [r.top[0][0] for r in results]
  assert np.mean(np.array(predicted) == np.array(truth)) >= 0.9
  assert all(len(r.top) == 2 and r.top[0][1] >= r.top[1][1]
             for r in results)


def test_drawing_from_image_polarity_and_framing():
  canvas = np.full((100, 60), 255, np.uint8)  # dark ink on white
  canvas[20:80, 10:50] = 0
  drawing = inference.drawing_from_image(canvas)
  assert drawing.shape == (28, 28) and drawing.max() == 255
  # Framed as QuickDraw's bitmaps are: the box's long side spans rows
  # 1..26, and the box is centred across.
  assert drawing[0].max() == 0 and drawing[1].max() > 0
  assert drawing[26].max() > 0 and drawing[27].max() == 0
  cols = np.flatnonzero(drawing.max(0))
  assert cols[0] + cols[-1] == 27
  light = np.zeros((28, 28), np.uint8)
  light[5:9, 5:9] = 200
  np.testing.assert_array_equal(inference.drawing_from_image(light), light)


def test_predict_errors(exported, tmp_path):
  config, _ = exported
  with pytest.raises(QuickDrawError) as e:
    predict_cli.predict(str(tmp_path / "none.tflite"), config.output_labels,
                        [])
  assert "no such file" in str(e.value)
  wrong_labels = tmp_path / "labels.txt"
  wrong_labels.write_text("a\nb\n")
  np.save(tmp_path / "rows.npy", np.zeros((1, 784), np.uint8))
  with pytest.raises(QuickDrawError) as e:
    predict_cli.predict(config.output_tflite, str(wrong_labels),
                        [str(tmp_path / "rows.npy")])
  assert "has 4 outputs but there are 2 labels" in str(e.value)
  bad = tmp_path / "bad.png"
  bad.write_bytes(b"not an image")
  with pytest.raises(QuickDrawError) as e:
    predict_cli.predict(config.output_tflite, config.output_labels,
                        [str(bad)])
  assert str(e.value) == f"{bad}: not a PNG, JPEG, GIF, BMP or WebP image"


def test_export_command_reexports_a_trained_run(data_dir, tmp_path, capsys):
  out = tmp_path / "run"
  data = DataConfig(categories=CATEGORIES, data_dir=data_dir,
                             download=False, samples_per_class=60,
                             image_size=SIZE)
  training.train_and_evaluate(data, training.TrainConfig(
      architecture="test_tiny_32", weights="none", epochs=1,
      train_batch_size=32, bottleneck_dir=str(tmp_path / "cache"),
      output_dir=str(out), verbose=0))
  assert not (out / "model.tflite").exists()
  with flagsaver.flagsaver(output_dir=str(out), quantize=["dynamic"],
                           check_drawings=20):
    export_cli.main(["export"])
  report = json.loads((out / "export_report.json").read_text())
  assert report["check_drawings"] == 20
  assert report["artifacts"]["tflite_float32"]["top1_agreement"] == 1.0
  assert report["artifacts"]["frozen_graph"]["top1_agreement"] == 1.0
  assert (out / "model_dynamic.tflite").exists()
  # model.keras is saved again calibrated: predict's threshold means the
  # same for it as for every other artifact.
  drawings = synthetic.make_drawings(2, 8)
  keras_scores = inference.predict_drawings(
      inference.load_predictor(str(out / "model.keras")), drawings)
  tflite_scores = inference.predict_drawings(
      inference.load_predictor(str(out / "model.tflite")), drawings)
  np.testing.assert_allclose(keras_scores, tflite_scores, atol=1e-4)

  # The app's files: recorded with the run, written there again by default.
  assets = tmp_path / "app" / "assets"
  small = dict(output_dir=str(out), check_drawings=20, check_canvases=10,
               canvas_size=CANVAS, representative_drawings=20)
  with flagsaver.flagsaver(android_assets_dir=str(assets), **small):
    export_cli.main(["export"])
  run = json.loads((out / "run.json").read_text())
  assert run["export"]["android_assets_dir"] == str(assets)
  first = (assets / "model.tflite").read_bytes()

  # No --android_assets_dir: the recorded folder gets the new app model.
  with flagsaver.flagsaver(quantize=["int8"], android_model="int8", **small):
    export_cli.main(["export"])
  said = capsys.readouterr().out
  assert f"The app's files go to {assets} again" in said
  report = json.loads((out / "export_report.json").read_text())
  assert report["android_assets"]["folder"] == str(assets)
  # run.json records the variant the app got (float32 if int8 lost too
  # much on these random weights).
  run = json.loads((out / "run.json").read_text())
  assert run["export"]["android_model"] == report["android_assets"]["given"]
  second = (assets / "model.tflite").read_bytes()
  assert second != first
  info = json.loads((assets / "model_info.json").read_text())
  assert "int8" in json.dumps(info)

  with flagsaver.flagsaver(android_assets=False, **small):
    export_cli.main(["export"])
  assert "are left as they were" in capsys.readouterr().out
  assert (assets / "model.tflite").read_bytes() == second
  # Variants this export did not write are gone, not left beside it.
  for name in ("model_int8.tflite", "model_canvas_int8.tflite",
               "model_dynamic.tflite", "model_canvas_dynamic.tflite"):
    assert not (out / name).exists(), name
  assert (out / "model_canvas.tflite").exists()

  # An app using MediaPipe does not need the legacy graph.
  assert (assets / "retrained_graph.pb").exists()
  with flagsaver.flagsaver(android_graph=False, **small):
    export_cli.main(["export"])
  assert sorted(os.listdir(assets)) == [
      "labels.txt", "model.tflite", "model_info.json", "retrained_labels.txt"]
  info = json.loads((assets / "model_info.json").read_text())
  assert "frozen_graph" not in info


def test_export_command_without_a_run(tmp_path):
  with flagsaver.flagsaver(output_dir=str(tmp_path)):
    with pytest.raises(QuickDrawError) as e:
      export_cli.main(["export"])
  assert str(e.value).startswith(f"no trained model in --output_dir={tmp_path}")


def test_end_to_end_npy_files_to_a_tflite_that_knows_its_classes(
    trained_run):
  """quickdraw-train with configs/smoke.flags (the shared run), then the
  TFLite file alone."""
  out = trained_run
  run = json.loads((out / "run.json").read_text())
  assert run["data"]["categories"] == list(CATEGORIES)
  source = QuickDrawSource.open(DataConfig(**run["data"]))
  size = run["data"]["image_size"]
  images, labels = inputs_from_split(source, Split.TEST, 1000, size)
  assert len(labels) > 100
  probabilities = inference.TFLitePredictor(str(out / "model.tflite"))(images)
  assert accuracy(probabilities, labels) >= SMOKE_MIN_TOP1
  with open(out / "retrained_labels.txt") as f:
    assert f.read().splitlines() == list(CATEGORIES)


def test_each_report_row_has_its_own_loss(exported):
  _, report = exported
  artifacts = report["artifacts"]
  for mode in ("dynamic", "float16", "int8"):
    network, canvas = artifacts[f"tflite_{mode}"], artifacts[f"canvas_{mode}"]
    assert network["loss_points"] == pytest.approx(100 * (
        artifacts["tflite_float32"]["test_top1"] - network["test_top1"]))
    assert canvas["loss_points"] == pytest.approx(100 * (
        artifacts["canvas_float32"]["canvas_top1"] - canvas["canvas_top1"]))
  text = export_checks.format_report(report)
  assert "canvas_* rows (the app's model)" in text
  assert "re-drawn with a pen as app canvases" in text
