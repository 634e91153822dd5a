"""The Android side: every exported .tflite in MediaPipe Tasks, as an app
loads it, and the canvas model on canvases drawn as a phone would draw them.

MediaPipe's Python package runs the same C++ ImageClassifier as Android. The
canvases are rendered from the generated classes' strokes at several canvas
sizes, pen widths and positions, in both ink polarities.
"""

import dataclasses
import itertools
import os

import numpy as np
import pytest
import tensorflow as tf
from absl.testing import flagsaver

from quickdraw import export, preprocessing, quality, tflite_metadata
from quickdraw.testing import synthetic
from quickdraw.cli import predict as predict_cli
from quickdraw.errors import QuickDrawError
from quickdraw.splits import Split
from quickdraw.export import flow as export_flow
from quickdraw import data_source
from quickdraw.export import contracts

from conftest import CATEGORIES, STAND_IN_SIZE, export_stand_in

mp = pytest.importorskip(
    "mediapipe", reason="mediapipe is in the test extra: pip install -e "
    "'.[test]'")
from mediapipe.tasks import python as mp_tasks  # noqa: E402
from mediapipe.tasks.python import vision  # noqa: E402
from mediapipe.tasks.metadata import (  # noqa: E402
    metadata_schema_py_generated as metadata_schema)

CANVAS = 256


@pytest.fixture(scope="module")
def exported(stand_in, tmp_path_factory):
  return export_stand_in(stand_in, tmp_path_factory.mktemp("android"),
                         quantize=export.QUANTIZATIONS, canvas_size=CANVAS,
                         check_canvases=50)


def classifier_for(path):
  """MediaPipe's classifier with no threshold (the model's own would leave
  unsure answers out: test_the_model_carries_its_threshold)."""
  options = vision.ImageClassifierOptions(
      base_options=mp_tasks.BaseOptions(model_asset_path=str(path)),
      max_results=1, score_threshold=quality.EVERY_SCORE)
  return vision.ImageClassifier.create_from_options(options)


def mediapipe_top1(classifier, picture):
  image = mp.Image(image_format=mp.ImageFormat.SRGB,
                   data=np.ascontiguousarray(picture))
  return classifier.classify(image).classifications[0].categories[0]


def canvases():
  """(class, picture): strokes drawn at several canvas sizes, pen widths
  and positions, dark on light and light on dark.

  Pens are 8% to 15% of the figure's size: the generated training drawings'
  strokes are about 8% (2 of 24 pixels), and a model trained on them knows
  nothing thinner.
  """
  rng = np.random.default_rng(0)
  for class_id, size, width, place, dark in itertools.product(
      range(len(CATEGORIES)), (128, 256, 512, 900), (0.08, 0.11, 0.15),
      ("centre", "off"), (True, False)):
    extent = size * rng.uniform(0.3, 0.6)
    if place == "centre":
      centre = (size / 2, size / 2)
    else:  # towards a corner, still whole on the canvas
      centre = tuple(rng.uniform(extent / 2 + 0.05 * size,
                                 size - extent / 2 - 0.05 * size, 2))
    yield class_id, synthetic.render_canvas(
        class_id, size, max(2.0, width * extent), extent, centre, dark,
        seed=int(rng.integers(1 << 30)))


@pytest.mark.parametrize("mode", export.MODES)
def test_mediapipe_loads_every_model_and_names_the_categories(exported,
                                                              mode):
  drawings = np.concatenate([synthetic.make_drawings(c, 10, seed=11)
                             for c in range(len(CATEGORIES))])
  truth = np.repeat(CATEGORIES, 10)
  # The network: a drawing as MediaPipe sees an image, light ink on black.
  with classifier_for(exported.tflite_path(mode)) as classifier:
    names = [mediapipe_top1(classifier, np.repeat(
        d.reshape(28, 28, 1), 3, -1)).category_name for d in drawings]
  assert np.mean(np.array(names) == truth) >= 0.95
  # The app's model: canvases.
  pictures = list(canvases())
  with classifier_for(exported.tflite_path(mode, canvas=True)) as classifier:
    names = [mediapipe_top1(classifier, p).category_name
             for _, p in pictures]
  truth = [CATEGORIES[c] for c, _ in pictures]
  assert set(names) <= set(CATEGORIES)  # names from the model's metadata
  assert np.mean(np.array(names) == np.array(truth)) >= 0.9


def test_the_assets_model_loads_in_mediapipe(exported):
  path = os.path.join(exported.android_assets_dir, "model.tflite")
  class_id, picture = next(canvases())
  with classifier_for(path) as classifier:
    assert mediapipe_top1(classifier, picture).category_name == (
        CATEGORIES[class_id])


def test_canvas_model_in_mediapipe_agrees_with_predict(exported):
  """The app's canvas model, run by MediaPipe on the canvas as the app
  hands it over, against quickdraw-predict's preprocessing of the same
  picture followed by the network."""
  pictures = list(canvases())
  with classifier_for(exported.tflite_path("float32", canvas=True)) as c:
    app = [mediapipe_top1(c, p).category_name for _, p in pictures]
  folder = os.path.dirname(exported.output_tflite)
  paths = []
  for i, (_, picture) in enumerate(pictures):
    paths.append(os.path.join(folder, f"canvas_{i}.png"))
    tf.io.write_file(paths[-1], tf.io.encode_png(picture))
  predicted = [r.top[0][0] for r in predict_cli.predict(
      exported.output_tflite, None, paths)]
  agreement = np.mean(np.array(app) == np.array(predicted))
  assert len(pictures) == 192 and agreement >= 0.99


def _read_metadata(model_bytes):
  model = tflite_metadata.tflite_graph.read(model_bytes)
  entry = next(e for e in model.metadata if e.name == b"TFLITE_METADATA")
  data = bytes(model.buffers[entry.buffer].data)
  assert data[4:8] == b"M001"
  return metadata_schema.ModelMetadataT.InitFromObj(
      metadata_schema.ModelMetadata.GetRootAs(data, 0))


@pytest.mark.parametrize("canvas", [False, True])
def test_metadata_fields(exported, canvas):
  with open(exported.tflite_path("int8", canvas=canvas), "rb") as f:
    model = f.read()
  meta = _read_metadata(model)
  assert meta.name == b"quickdraw doodle classifier"
  assert meta.version.startswith(b"quickdraw ")
  assert meta.license == b"Apache-2.0" and meta.minParserVersion == b"1.0.0"
  assert b"4 QuickDraw categories" in meta.description
  tensor = meta.subgraphMetadata[0].inputTensorMetadata[0]
  props = tensor.content.contentProperties
  assert props.colorSpace == metadata_schema.ColorSpaceType.RGB
  size = CANVAS if canvas else STAND_IN_SIZE
  assert (props.defaultSize.width, props.defaultSize.height) == (size, size)
  if canvas:  # uint8 input: no normalization
    assert not tensor.processUnits
  else:
    norm = tensor.processUnits[0].options
    assert list(norm.mean) == [127.5] and list(norm.std) == [127.5]
  output = meta.subgraphMetadata[0].outputTensorMetadata[0]
  labels = output.associatedFiles[0]
  assert labels.name == b"labels.txt"
  assert labels.type == metadata_schema.AssociatedFileType.TENSOR_AXIS_LABELS
  assert tflite_metadata.read_labels(model) == list(CATEGORIES)
  # The calibrated threshold, as ScoreThresholdingOptions (read by
  # MediaPipe's own schema).
  (unit,) = output.processUnits
  assert unit.optionsType == (
      metadata_schema.ProcessUnitOptions.ScoreThresholdingOptions)
  threshold = contracts.score_threshold_for(exported.tflite_path("int8"))
  assert unit.options.globalScoreThreshold == pytest.approx(threshold)
  assert tflite_metadata.read_score_threshold(model) == pytest.approx(
      threshold)


def test_the_model_carries_its_threshold(exported, tmp_path):
  """Without model_info.json beside it, predict reads the threshold from
  the model, and MediaPipe applies it when the app sets none: a blank
  canvas (equal scores) gets an empty result, the app's "not sure"."""
  alone = tmp_path / "model.tflite"
  source = os.path.join(exported.android_assets_dir, "model.tflite")
  with open(source, "rb") as f:
    alone.write_bytes(f.read())
  threshold = contracts.score_threshold_for(source)
  assert contracts.score_threshold_for(str(alone)) == pytest.approx(
      threshold)
  assert 1 / len(CATEGORIES) < threshold < 1
  options = vision.ImageClassifierOptions(
      base_options=mp_tasks.BaseOptions(model_asset_path=str(alone)))
  blank = np.full((CANVAS, CANVAS, 3), 255, np.uint8)
  class_id, picture = next(canvases())
  with vision.ImageClassifier.create_from_options(options) as classifier:
    def answers(p):
      return classifier.classify(mp.Image(
          image_format=mp.ImageFormat.SRGB,
          data=np.ascontiguousarray(p))).classifications[0].categories
    assert answers(blank) == []
    found = answers(picture)
    assert found and all(c.score >= threshold - 1e-6 for c in found)
    assert found[0].category_name == CATEGORIES[class_id]
  # An old model without the options: no threshold, as before.
  with open(exported.tflite_path("float32"), "rb") as f:
    model = f.read()
  assert tflite_metadata.read_score_threshold(
      tflite_metadata.with_metadata(model, tflite_metadata.metadata_buffer(
          tflite_metadata.ModelDescription("m", "d", "1", "a", "l"),
          tflite_metadata.ImageInput("input", "d", 8, 8), "out", "d"),
          CATEGORIES)) is None


def test_a_flex_op_fails_the_export(stand_in, tmp_path, monkeypatch):
  classifier, source = stand_in
  plain = preprocessing.canvas_to_drawings

  def with_a_flex_op(canvases):
    drawings = plain(canvases)
    # A determinant: TensorFlow has it, TFLite's builtins do not.
    return drawings + 0.0 * tf.linalg.det(drawings[:, :2, :2])[:, None, None]

  monkeypatch.setattr(preprocessing, "canvas_to_drawings", with_a_flex_op)
  config = export.ExportConfig(
      output_graph=str(tmp_path / "g.pb"),
      output_labels=str(tmp_path / "labels.txt"),
      output_tflite=str(tmp_path / "model.tflite"), report_dir=str(tmp_path))
  with pytest.raises(QuickDrawError) as e:
    export_flow.export_model(classifier, source.categories, config,
                        *data_source.drawings_from_split(source, Split.TEST, 20))
  assert "the canvas preprocessing needs ops that TFLite does not build in" \
      in str(e.value)
  assert "MatrixDeterminant" in str(e.value)
  assert os.listdir(tmp_path) == []  # nothing written


def _write_png(path, picture):
  tf.io.write_file(str(path), tf.io.encode_png(picture))


def test_predict_composites_a_transparent_canvas_over_white(exported,
                                                           tmp_path):
  class_id, picture = next(canvases())  # black ink on white
  ink = picture[..., :1] < 128
  # Black ink on a transparent canvas, as an Android ARGB canvas exports it.
  rgba = np.concatenate([np.zeros_like(picture),
                         np.where(ink, 255, 0).astype(np.uint8)], -1)
  _write_png(tmp_path / "transparent.png", rgba)
  _write_png(tmp_path / "opaque.png", picture)
  for model in (exported.output_tflite,
                exported.tflite_path("float32", canvas=True)):
    transparent, opaque = predict_cli.predict(
        model, None, [str(tmp_path / "transparent.png"),
                      str(tmp_path / "opaque.png")])
    assert transparent.top[0][0] == CATEGORIES[class_id]
    np.testing.assert_array_equal(transparent.drawing, opaque.drawing)


def test_predict_background_for_a_dark_themes_transparent_canvas(
    exported, tmp_path, capsys):
  class_id, picture = next(canvases())  # black ink on white
  ink = picture[..., :1] < 128
  # White ink on a transparent canvas: a dark theme's export.
  rgba = np.concatenate([np.full_like(picture, 255),
                         np.where(ink, 255, 0).astype(np.uint8)], -1)
  _write_png(tmp_path / "dark_theme.png", rgba)
  model = exported.tflite_path("float32", canvas=True)
  with flagsaver.flagsaver(model=model):
    predict_cli.main(["predict", str(tmp_path / "dark_theme.png")])
  # Over white, white ink is nothing; the hint names --background.
  said = capsys.readouterr().out
  assert "blank" in said and "--background=" in said
  with flagsaver.flagsaver(model=model, background="#121212"):
    predict_cli.main(["predict", str(tmp_path / "dark_theme.png")])
  said = capsys.readouterr().out
  assert "blank" not in said and CATEGORIES[class_id] in said
  with flagsaver.flagsaver(model=model, background="dark"):
    with pytest.raises(QuickDrawError) as e:
      predict_cli.main(["predict", str(tmp_path / "dark_theme.png")])
  assert "--background=dark: not a colour" in str(e.value)
  # A folder is said to be one.
  with flagsaver.flagsaver(model=model):
    with pytest.raises(QuickDrawError):
      predict_cli.main(["predict", str(tmp_path)])
  assert f"{tmp_path}: a folder; pass the pictures in it" in (
      capsys.readouterr().err)


def test_predict_warns_on_a_blank_canvas(exported, tmp_path, capsys):
  _write_png(tmp_path / "white.png", np.full((300, 300, 3), 255, np.uint8))
  _write_png(tmp_path / "clear.png", np.zeros((300, 300, 4), np.uint8))
  faint = np.full((300, 300, 3), 255, np.uint8)
  faint[100:110, 50:250] = 240  # a smudge, not a drawing
  _write_png(tmp_path / "faint.png", faint)
  class_id, picture = next(canvases())
  _write_png(tmp_path / "drawn.png", picture)
  out = tmp_path / "seen.png"
  with flagsaver.flagsaver(model=exported.tflite_path("int8", canvas=True),
                           save_drawings=str(out)):
    predict_cli.main(["predict"] + [str(tmp_path / f"{n}.png") for n in
                                    ("white", "clear", "faint", "drawn")])
  lines = capsys.readouterr().out.splitlines()
  for name in ("white", "clear", "faint"):
    line = next(l for l in lines if l.startswith(str(tmp_path / name)))
    assert "blank: no ink found, or too little to classify" in line
  drawn = next(l for l in lines if l.startswith(str(tmp_path / "drawn")))
  # An answer, sure or not (the stand-in CNN's scores are modest).
  assert drawn.rsplit(": ", 1)[1].startswith(CATEGORIES[class_id])
  assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_predict_answers_the_good_files_beside_a_bad_one(exported, tmp_path,
                                                        capsys):
  class_id, picture = next(canvases())
  _write_png(tmp_path / "star.png", picture)
  _write_png(tmp_path / "house.png", picture)
  (tmp_path / "notes.txt").write_text("not a picture")
  paths = [str(tmp_path / n) for n in ("star.png", "notes.txt",
                                       "missing.png", "house.png")]
  with flagsaver.flagsaver(model=exported.tflite_path("float32", canvas=True)):
    with pytest.raises(QuickDrawError) as e:
      predict_cli.main(["predict"] + paths)
  assert "2 of 4 inputs could not be read" in str(e.value)
  assert "the others were classified" in str(e.value)
  captured = capsys.readouterr()
  errors = captured.err.splitlines()
  assert len(errors) == 2
  assert "notes.txt" in errors[0] and "missing.png: no such file" in errors[1]
  answers = captured.out.splitlines()
  assert [a.split(": ")[0] for a in answers] == [paths[0], paths[3]]
  assert all(a.rsplit(": ", 1)[1].startswith(CATEGORIES[class_id])
             for a in answers)
  with flagsaver.flagsaver(model=exported.tflite_path("float32", canvas=True)):
    with pytest.raises(QuickDrawError) as alone:
      predict_cli.main(["predict", str(tmp_path / "notes.txt")])
  # No "others" when there were none.
  assert str(alone.value) == "1 of 1 inputs could not be read (above)"


def test_predict_says_not_sure_under_the_threshold(exported, tmp_path,
                                                   capsys, monkeypatch):
  model = exported.tflite_path("float32", canvas=True)
  # model_info.json beside the model gives the threshold by default.
  threshold = contracts.score_threshold_for(model)
  assert threshold is not None
  class_id, picture = next(canvases())
  path = str(tmp_path / "drawn.png")
  _write_png(path, picture)
  (result,) = predict_cli.predict(model, None, [path])
  assert result.sure == (result.top[0][1] >= threshold)
  (result,) = predict_cli.predict(model, None, [path], score_threshold=0.0)
  assert result.sure and result.top[0][0] == CATEGORIES[class_id]
  # The stand-in CNN is sure of everything, so the line for an answer
  # under the threshold is shown with its answer marked unsure.
  monkeypatch.setattr(predict_cli, "predict", lambda *a, **k: [
      dataclasses.replace(result, sure=False)])
  with flagsaver.flagsaver(model=model):
    predict_cli.main(["predict", path])
  line = capsys.readouterr().out.strip()
  assert line.startswith(f"{path}: not sure")
  assert line.rsplit(": ", 1)[1].startswith(CATEGORIES[class_id])
