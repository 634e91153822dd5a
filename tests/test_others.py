"""Other categories' doodles: which ones, split how, opened from where, and
their part in training batches and the score threshold."""

import dataclasses
import json
import os

import numpy as np
import pytest

from quickdraw import categories as categories_lib
from quickdraw import input_pipeline, others, outliers, splits
from quickdraw.config import DataConfig
from quickdraw.data_source import QuickDrawSource
from quickdraw.errors import QuickDrawError
from quickdraw.splits import Split
from quickdraw.testing import synthetic

from conftest import CATEGORIES, TINY

# Official names the generated extra figures are filed under.
EXTRAS = ("hexagon", "octagon", "zigzag", "star")


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
  """The tests' four categories and four more, as official files."""
  path = tmp_path_factory.mktemp("others_data")
  synthetic.write_category_files(str(path), CATEGORIES + EXTRAS, 120)
  return str(path)


def _data(folder, **kwargs):
  return DataConfig(categories=CATEGORIES, data_dir=folder, download=False,
                    samples_per_class=100, **kwargs)


def test_the_setting_names_them(folder):
  # Offline by default: the folder's other files, in the official order.
  assert others.choose(_data(folder)) == ["hexagon", "octagon", "star",
                                          "zigzag"]
  assert others.choose(_data(folder, other_categories="none")) == []
  assert others.choose(_data(folder, other_categories='star, "zigzag"')) == [
      "star", "zigzag"]
  with pytest.raises(QuickDrawError, match="'circle', which --categories"):
    others.choose(_data(folder, other_categories="star,circle"))
  with pytest.raises(QuickDrawError, match="not a QuickDraw category"):
    others.choose(_data(folder, other_categories="starfish"))
  # Online: every official name but the chosen ones, in the official order.
  sample = others.choose(DataConfig(categories=CATEGORIES, data_dir=folder,
                                    download=True))
  official = list(categories_lib.official_categories())
  assert sample == [n for n in official if n not in CATEGORIES]
  assert sample == others.unchosen_names(DataConfig(categories=CATEGORIES))


def test_drawings_per_category_spreads_the_rows_over_the_categories():
  # Offline's few files keep 100 each; all 335 other official categories
  # get one sampling block each (one request), as many drawings in all.
  assert others.drawings_per_category(4) == 100
  assert others.drawings_per_category(100) == 100
  assert others.drawings_per_category(200) == 50
  assert others.drawings_per_category(335) == splits.SAMPLE_BLOCK_ROWS == 32
  assert others.drawings_per_category(10_000) == 32


def test_a_quarter_is_held_out_by_name_and_adding_names_moves_none():
  names = [f"name {i}" for i in range(40)]
  exposure, held_out = others.split_names(names, seed=0)
  assert sorted(exposure + held_out) == sorted(names)
  assert 4 <= len(held_out) <= 16  # about a quarter of 40
  more_exposure, more_held = others.split_names(names + ["x", "y"], seed=0)
  assert set(held_out) <= set(more_held)
  assert set(exposure) <= set(more_exposure)
  # Two names: one of each; one name: exposure only.
  assert [len(p) for p in others.split_names(["a", "b"], 0)] == [1, 1]
  assert others.split_names(["a"], 0) == (["a"], [])


def test_open_reads_the_rows_and_falls_back_offline(folder, tmp_path,
                                                     caplog):
  opened = others.open_others(_data(folder))
  assert sorted(opened.categories) == sorted(EXTRAS)
  assert opened.held_out_categories and opened.exposure_categories
  assert opened.exposure.shape == (100 * len(opened.exposure_categories),
                                   784)
  assert opened.held_out.dtype == np.uint8
  # Online but the mirror has none of the sampled categories: the folder's
  # other files, said in a warning, instead of a failed run.
  empty = tmp_path / "mirror"
  empty.mkdir()
  data = DataConfig(categories=CATEGORIES, data_dir=folder, download=True,
                    download_base_url=empty.as_uri(), samples_per_class=100)
  fallback = others.open_others(data)
  assert sorted(fallback.categories) == sorted(EXTRAS)
  assert "not fetched" in caplog.text
  # Named ones that cannot be had are an error, as chosen ones are.
  with pytest.raises(QuickDrawError):
    others.open_others(DataConfig(
        categories=CATEGORIES, data_dir=folder, download=False,
        other_categories="snail"))


def test_held_back_drawings_are_rows_the_run_did_not_read(folder):
  """The quality figures of kinds a run saw score new drawings of them."""
  data = _data(folder)
  opened = others.open_others(data)
  for kind in ("exposure", "held_out"):
    names = getattr(opened, f"{kind}_categories")
    new = others.held_back(data, names, opened.drawings_per_category, 8)
    assert new.shape == (8 * len(names), 784) and new.dtype == np.uint8
    read = {row.tobytes() for row in getattr(opened, kind)}
    for name, rows in zip(names, np.split(new, len(names))):
      whole = np.load(os.path.join(folder, f"{name}.npy"))
      file_rows = {row.tobytes(): i for i, row in enumerate(whole)}
      # Each is a row of its own file, and none was read by the run.
      assert all(row.tobytes() in file_rows for row in rows)
      assert not read & {row.tobytes() for row in rows}
      # Spread over the 20 rows left (120 in the file, 100 read).
      assert len({file_rows[row.tobytes()] for row in rows}) == 8


def test_batches_carry_both_pools_labelled_none(folder):
  source = QuickDrawSource.open(_data(folder))
  junk = np.full((5, 28, 28, 1), 7, np.uint8)
  doodles = np.full((5, 28, 28, 1), 9, np.uint8)
  ds = input_pipeline.make_dataset(source, Split.TRAIN, 16, shuffle=True,
                                   epochs=1, value_range=None,
                                   exposure=[(junk, 2), (doodles, 3)])
  x, labels = next(iter(ds))
  assert x.shape[0] == 16 + 2 + 3
  labels = labels.numpy()
  assert (labels[16:] == outliers.JUNK_LABEL).all()
  assert (labels[:16] >= 0).all()
  assert (x.numpy()[16:18] == 7).all() and (x.numpy()[18:] == 9).all()


def test_a_run_trains_on_them_and_chooses_its_threshold_on_both_sides(
    folder, tmp_path):
  from quickdraw import training
  from quickdraw.export import config as export_config
  from quickdraw.export import contracts, flow
  out = tmp_path / "run"
  data = _data(folder, image_size=32)
  config = training.TrainConfig(
      architecture=TINY, weights="none", epochs=10, train_batch_size=32,
      other_share=0.2,
      output_dir=str(out), bottleneck_dir=str(tmp_path / "cache"), verbose=0)
  result = training.train_and_evaluate(data, config, [])
  run = json.loads((out / "run.json").read_text())
  described = run["other_categories"]
  assert sorted(described["exposure"] + described["held_out"]) == sorted(
      EXTRAS)
  assert result.others.held_out_categories == tuple(described["held_out"])
  # Their features are cached like the junk's.
  assert [n for n in os.listdir(tmp_path / "cache")
          if n.startswith("others-")]
  exporting = export_config.ExportConfig(
      output_graph=str(out / "g.pb"), output_labels=str(out / "l.txt"),
      output_tflite=str(out / "model.tflite"), report_dir=str(out),
      canvas_size=64, check_drawings=40, check_canvases=30,
      float_tolerance=0.01, android_assets_dir=str(out / "android_assets"))
  report = flow.export_run(data, exporting, classifier=result.classifier,
                           source=result.source, others=result.others)
  calibrated = report["calibration"]
  assert calibrated["unknown"]["categories"] == described["held_out"]
  # Chosen as the app sees them: canvases of both sides, every held-out
  # drawing of the known side.
  assert calibrated["measured_on"] == "canvases"
  assert calibrated["known_drawings"] == result.source.split_size(
      Split.VALIDATION)
  assert "on the app's canvases" in calibrated["rule"]
  assert calibrated["unknown"]["drawings"] == exporting.check_canvases
  assert {"threshold", "right_answered", "right_kept",
          "unknown_refused"} <= set(calibrated["curve"][0])
  assert (out / "threshold_curve.png").stat().st_size > 0
  threshold = calibrated["score_threshold"]
  assert contracts.score_threshold_for(str(out / "model.tflite")) == (
      threshold)
  # The quality figures of the kinds it saw score new drawings of them, as
  # the app sees them (MediaPipe, the model's own threshold).
  from quickdraw import quality
  figures = quality.score_run(str(out), canvas_drawings=20,
                              others_per_category=4, canvas_side=64,
                              seen_per_category=5)
  for kind in ("exposure", "held_out"):
    assert 0 <= figures[f"{kind}_refused"] <= 1
  # Asked to refuse 90% of the held-out doodles, the export does.
  strict = flow.export_run(
      data, dataclasses.replace(exporting, unknown_recall=0.9),
      classifier=result.classifier, source=result.source,
      others=result.others)["calibration"]
  assert strict["unknown"]["refused"] >= 0.9
  assert strict["score_threshold"] >= threshold or (
      calibrated["unknown"]["refused"] >= 0.9)
