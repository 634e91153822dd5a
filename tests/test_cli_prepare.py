import json
import os

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from absl.testing import flagsaver

from quickdraw.cli import common, prepare
from quickdraw.errors import QuickDrawError

from conftest import CATEGORIES, run_command

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_main_writes_summary_and_sample_grid(data_dir, tmp_path, capsys):
  out = tmp_path / "run"
  with flagsaver.flagsaver(categories=list(CATEGORIES), data_dir=data_dir,
                           download=False, samples_per_class=100,
                           image_size=128, output_dir=str(out)):
    prepare.main(["prepare"])
  table = capsys.readouterr().out
  assert table.splitlines()[0].split() == [
      "category", "rows_in_file", "used", "train", "validation", "test",
      "file"]
  # Each category's row ends in its file, as the README says.
  first = table.splitlines()[1]
  assert first.split()[0] == CATEGORIES[0]
  assert first.endswith(os.path.join(data_dir, f"{CATEGORIES[0]}.npy"))
  assert table.splitlines()[-2].split()[:3] == ["total", "1200", "400"]
  summary = json.loads((out / "data_summary.json").read_text())
  assert [c["category"] for c in summary["categories"]] == list(CATEGORIES)
  assert all(c["train"] + c["validation"] + c["test"] == 100
             for c in summary["categories"])
  assert summary["config"]["image_size"] == 128
  grid = tf.io.decode_png((out / "data_samples.png").read_bytes()).numpy()
  assert grid.shape[0] > 4 * 56 and grid.max() == 255
  assert sorted(os.listdir(out)) == ["data_samples.png", "data_summary.json"]


def test_categories_file_flag(data_dir, tmp_path, capsys):
  names = tmp_path / "names.txt"
  names.write_text("# two of them\nline\ncircle\n")
  with flagsaver.flagsaver(categories_file=str(names), data_dir=data_dir,
                           download=False, output_dir=str(tmp_path / "o")):
    prepare.main(["prepare"])
  rows = capsys.readouterr().out.splitlines()
  assert [r.split()[0] for r in rows[1:3]] == ["line", "circle"]


def test_list_categories(capsys):
  with flagsaver.flagsaver(list_categories=True):
    prepare.main(["prepare"])
  names = capsys.readouterr().out.splitlines()
  assert len(names) == 345 and "smiley face" in names


def test_unknown_category_raises_before_any_work(tmp_path):
  with flagsaver.flagsaver(categories=["circle", "cats"],
                           data_dir=str(tmp_path / "nothing")):
    with pytest.raises(QuickDrawError, match="did you mean 'cat'"):
      prepare.main(["prepare"])
  assert not (tmp_path / "nothing").exists()


def test_user_errors_print_one_line_without_traceback(tmp_path):
  status, stderr = run_command("prepare", "--categories=circle,cats",
                               f"--data_dir={tmp_path}")
  assert status == 1
  assert stderr.splitlines() == [
      "prepare.py: error: 'cats' is not a QuickDraw category; did you mean "
      "'cat'?"]


def test_bad_file_through_the_command(tmp_path):
  np.save(tmp_path / "circle.npy", np.zeros((3, 785), np.uint8))
  status, stderr = run_command("prepare", "--categories=circle",
                               f"--data_dir={tmp_path}", "--nodownload")
  assert status == 1 and len(stderr.splitlines()) == 1
  assert stderr.splitlines()[-1].endswith(
      f"{tmp_path}/circle.npy: holds an array of shape (3, 785), expected "
      "(N, 784), (N, 1, 784) or (N, 28, 28) uint8 drawings of 28x28 pixels")


def test_unwritable_output_dir(data_dir, tmp_path):
  blocker = tmp_path / "file"
  blocker.write_text("")
  with flagsaver.flagsaver(categories=["circle"], data_dir=data_dir,
                           download=False, output_dir=str(blocker / "out")):
    with pytest.raises(QuickDrawError) as e:
      prepare.main(["prepare"])
  assert str(e.value) == (f"cannot write {blocker}/out/data_summary.json: Not "
                          "a directory; choose a writable location")


def test_flags_take_their_defaults_from_the_config():
  from quickdraw.config import DataConfig
  defaults = DataConfig()
  for name in ("samples_per_class", "validation_percentage",
               "testing_percentage", "seed", "download"):
    assert flags.FLAGS[name].default == getattr(defaults, name), name
  # --image_size=0 takes the side from --architecture.
  with flagsaver.flagsaver(categories=["cat"], image_size=0,
                           architecture="mobilenet_0.50_160"):
    assert common.data_config_from_flags().image_size == 160
  with flagsaver.flagsaver(categories=["cat"], image_size=64):
    assert common.data_config_from_flags().image_size == 64


def test_categories_and_categories_file_together(tmp_path):
  names = tmp_path / "names.txt"
  names.write_text("cat\n")
  with flagsaver.flagsaver(categories=["dog"], categories_file=str(names)):
    with pytest.raises(QuickDrawError) as e:
      prepare.main(["prepare"])
  assert str(e.value) == "pass --categories or --categories_file, not both"
