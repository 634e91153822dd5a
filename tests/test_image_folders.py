"""--image_dir: class folders of pictures, through the app model's canvas
preprocessing, split by path, cached by content, with their bad inputs; and
the seed's retrain.py command on the old converter's JPEG folders."""

import hashlib
import os
import re
from unittest import mock

import numpy as np
import pytest
import tensorflow as tf
from absl import flags
from absl.testing import flagsaver
from PIL import Image

from quickdraw import bottlenecks, image_folders, inference, input_pipeline
from quickdraw.cli import train as train_cli
from quickdraw.config import DataConfig
from quickdraw.data_source import QuickDrawSource
from quickdraw.splits import Split
from quickdraw.testing import synthetic

from conftest import SMOKE_MIN_TOP1, run_command


def save(path, pixels, **options):
  os.makedirs(os.path.dirname(path), exist_ok=True)
  Image.fromarray(pixels).save(path, **options)


def write_class(folder, rows, invert=True, fmt="jpg", start=0):
  """Rows as the old converter wrote them: 28x28 grey pictures."""
  for i, row in enumerate(rows, start):
    pixels = row.reshape(28, 28)
    save(os.path.join(folder, f"{i}.{fmt}"), 255 - pixels if invert else pixels)


def retrain_py_percentage(name):
  """retrain.py's which_set arithmetic, written out again."""
  hash_name = re.sub(r"_nohash_.*$", "", name)
  hashed = hashlib.sha1(hash_name.encode()).hexdigest()
  return (int(hashed, 16) % (2**27)) * (100.0 / (2**27 - 1))


def snapshot(folder):
  return {os.path.join(root, f): os.stat(os.path.join(root, f)).st_mtime_ns
          for root, _, files in os.walk(folder) for f in files}


def test_every_kind_of_picture_becomes_the_drawing_predict_sees(tmp_path):
  rows = synthetic.make_drawings(4, 6, seed=1).reshape(6, 784)
  folder = tmp_path / "pics" / "mine"
  # Lossless pictures of the 28x28 rows, either polarity, give the rows.
  save(str(folder / "a.png"), rows[0].reshape(28, 28))
  save(str(folder / "deep" / "b.bmp"), 255 - rows[1].reshape(28, 28))
  save(str(folder / "c.webp"), rows[2].reshape(28, 28), lossless=True)
  save(str(folder / "d.gif"), 255 - rows[3].reshape(28, 28))
  save(str(folder / "e.jpg"), 255 - rows[4].reshape(28, 28), quality=95)
  canvas = synthetic.render_canvas(4, 300, 12, 200, (150, 150),
                                   dark_on_light=False)
  save(str(folder / "f.png"), canvas)
  (folder / "notes.txt").write_text("not a picture, not listed")
  picture_class = image_folders.read_class(str(folder), "mine")
  assert picture_class.names == ("a.png", "c.webp", "d.gif", "deep/b.bmp",
                                 "e.jpg", "f.png")
  got = dict(zip(picture_class.names, picture_class.drawings))
  for name, row in (("a.png", 0), ("deep/b.bmp", 1), ("c.webp", 2),
                    ("d.gif", 3)):
    np.testing.assert_array_equal(got[name], rows[row], err_msg=name)
  assert np.abs(got["e.jpg"].astype(int) - rows[4]).mean() < 4
  # A canvas: exactly what quickdraw-predict's preprocessing makes of it.
  np.testing.assert_array_equal(
      got["f.png"], inference.drawing_from_image(canvas).ravel())


def test_the_split_is_retrain_pys_and_adding_pictures_moves_none(tmp_path):
  rows = synthetic.make_drawings(4, 60).reshape(60, 784)
  write_class(str(tmp_path / "pics" / "mine"), rows[:40], fmt="png")
  config = DataConfig(image_dir=str(tmp_path / "pics"), other_categories="none")
  source = QuickDrawSource.open(config)
  names = source.files[0].names

  def splits_of(source):
    return {names[r]: split for split in Split
            for r in source.split_rows(0, split)
            if r < len(names)}

  before = splits_of(source)
  expected = {}
  for name in names:
    p = retrain_py_percentage(name)
    expected[name] = (Split.VALIDATION if p < 10 else
                      Split.TEST if p < 20 else Split.TRAIN)
  assert before == expected
  assert len(set(before.values())) == 3  # 40 pictures reach every split
  # More pictures, and another seed: no picture changes split.
  write_class(str(tmp_path / "pics" / "mine"), rows[40:], fmt="png", start=40)
  more = QuickDrawSource.open(DataConfig(image_dir=str(tmp_path / "pics"),
                                         other_categories="none", seed=5))
  assert len(more.files[0]) == 60
  after = {more.files[0].names[r]: split for split in Split
           for r in more.split_rows(0, split)}
  assert {n: after[n] for n in before} == before


def logged(level):
  """Collects `image_folders`' log lines of `level` (absl's logger may be
  set quiet by an earlier command test in the same process, so caplog
  cannot be relied on)."""
  return mock.patch.object(image_folders.logging, level)


def lines(log) -> list[str]:
  return [call.args[0] % call.args[1:] for call in log.call_args_list]


def test_folders_join_quickdraws_categories_in_a_stated_order(
    data_dir, tmp_path):
  rows = synthetic.make_drawings(5, 30).reshape(30, 784)
  write_class(str(tmp_path / "pics" / "zigzag"), rows)
  write_class(str(tmp_path / "pics" / "square"), rows[:25], fmt="png")
  write_class(str(tmp_path / "pics" / "a logo"), rows[:21])
  config = DataConfig(categories=("circle", "square"), data_dir=data_dir,
                      download=False, samples_per_class=100,
                      image_dir=str(tmp_path / "pics"),
                      other_categories="none")
  with logged("info") as info:
    source = QuickDrawSource.open(config)
  # QuickDraw's categories in their order, then the other folders by name.
  assert source.categories == ("circle", "square", "a logo", "zigzag")
  assert [source.num_selected(c) for c in range(4)] == [100, 125, 21, 30]
  said = "\n".join(lines(info))
  assert "25 pictures of" in said and "add to QuickDraw's 'square'" in said
  # The square class reads its file's rows, then the pictures (by name).
  square = source.read_rows(1, source.selected_rows(1))
  by_name = sorted(range(25), key=lambda i: f"{i}.png")
  np.testing.assert_array_equal(square[100:], rows[by_name])
  sizes = sum(source.split_size(s) for s in Split)
  assert sizes == 276
  # The cache key follows the pictures' content, not their times.
  key = bottlenecks.data_digest(source, Split.TRAIN)
  os.utime(tmp_path / "pics" / "zigzag" / "0.jpg", (1, 1))
  assert bottlenecks.data_digest(QuickDrawSource.open(config),
                                 Split.TRAIN) == key
  write_class(str(tmp_path / "pics" / "zigzag"), rows[5:6])  # 0.jpg changes
  assert bottlenecks.data_digest(QuickDrawSource.open(config),
                                 Split.TRAIN) != key


def test_bad_pictures_are_listed_once_and_left_out(tmp_path):
  folder = tmp_path / "pics" / "mine"
  write_class(str(folder), synthetic.make_drawings(4, 25).reshape(25, 784))
  for i in range(11):
    (folder / f"broken{i:02d}.png").write_bytes(b"\x89PNG not really")
  (folder / "empty.jpg").write_bytes(b"")
  save(str(folder / "blank.png"), np.full((200, 200), 255, np.uint8))
  dot = np.full((200, 200), 255, np.uint8)
  dot[100:103, 100:103] = 0
  save(str(folder / "dot.png"), dot)
  before = snapshot(tmp_path / "pics")
  with logged("warning") as warning:
    classes = image_folders.read_image_dir(str(tmp_path / "pics"))
  assert len(classes[0]) == 25
  warnings = lines(warning)
  assert len(warnings) == 2
  listed = warnings[0].splitlines()
  assert listed[0] == "12 pictures of 'mine' could not be read and are left out:"
  assert len(listed) == 12 and listed[-1] == "  ... and 2 more"
  assert listed[1] == f"  {folder}/broken00.png: not a PNG, JPEG, GIF, BMP or WebP image"
  assert warnings[1].startswith("2 pictures of 'mine' have too little ink")
  assert snapshot(tmp_path / "pics") == before  # nothing written there


@pytest.mark.parametrize("case", ["missing", "no_classes", "too_few"])
def test_bad_image_dirs_are_one_line_errors(data_dir, tmp_path, case):
  pics = tmp_path / "pics"
  if case != "missing":
    pics.mkdir()
    (pics / "stray.png").write_bytes(b"")  # a file, not a class folder
  if case == "too_few":
    rows = synthetic.make_drawings(4, 30).reshape(30, 784)
    write_class(str(pics / "enough"), rows)
    write_class(str(pics / "few"), rows[:7])
    (pics / "few" / "bad.png").write_bytes(b"??")
  status, stderr = run_command(
      "train", f"--image_dir={pics}", f"--data_dir={data_dir}",
      "--nodownload", "--architecture=test_tiny_32", "--weights=none",
      f"--output_dir={tmp_path / 'run'}",
      f"--bottleneck_dir={tmp_path / 'cache'}")
  assert status == 1 and "Traceback" not in stderr, stderr
  last = stderr.strip().splitlines()[-1]
  assert last == {
      "missing": f"train.py: error: --image_dir={pics} is not a folder; pass "
                 "a folder holding one sub-folder of pictures per class",
      "no_classes": f"train.py: error: --image_dir={pics} has no class "
                    "folders but 1 picture of its own (a class folder? pass "
                    "the folder above it); put each class's pictures in a "
                    f"sub-folder named for its label, e.g. {pics}/logo/1.png",
      "too_few": f"train.py: error: class 'few' in --image_dir={pics} has 7 "
                 "usable pictures, fewer than --min_images_per_class=20; add "
                 f"pictures to {pics}/few, or lower --min_images_per_class",
  }[case]
  assert not (tmp_path / "run").exists()


def test_balanced_class_weights_weigh_classes_alike_and_junk_as_one():
  ds = tf.data.Dataset.from_tensors((tf.zeros((5, 2)),
                                     tf.constant([0, 1, 1, 1, -1])))
  _, _, weights = next(iter(input_pipeline.with_class_weights(ds, [10, 30])))
  # N / (classes x count): 40 / 20 and 40 / 60; junk 1.
  np.testing.assert_allclose(weights, [2, 2 / 3, 2 / 3, 2 / 3, 1],
                             rtol=1e-6)


# The seed's command (the old recipe's second step), verbatim.
SEED_COMMAND = ["--image_dir=Output", "--architecture=mobilenet_1.0_224",
                "--how_many_training_steps=7000",
                "--bottleneck_dir=/tmp/bottleneck",
                "--output_graph=retrained_graph.pb",
                "--output_labels=retrained_labels.txt"]
# ... then what makes it a seconds-long test: configs/smoke.flags' recipe
# (a random-weight backbone fine-tuned whole) on the test backbone, and the
# test's own folders.
SMALL = ["--architecture=test_tiny_64", "--weights=none", "--image_size=64",
         "--how_many_training_steps=0", "--epochs=3",
         "--fine_tune_layers=100", "--fine_tune_epochs=6",
         "--fine_tune_learning_rate=0.003", "--train_batch_size=32",
         "--redraw_share=0", "--nodownload", "--other_categories=none",
         "--class_weight=balanced"]


def test_the_seeds_command_on_the_old_converters_jpegs(tmp_path, monkeypatch):
  """Output/ as the old converter wrote it (28x28 JPEGs, dark ink on
  white), through the seed's own flags, gives a .pb that knows held-out
  drawings. (test_real_data compares it with the npy route's model on real
  drawings; bench_image_dir.py measures the difference.)"""
  names = ("circle", "square", "triangle", "line")
  held_out = []
  for class_id, name in enumerate(names):
    rows = synthetic.make_drawings(class_id, 260, seed=7).reshape(260, 784)
    write_class(str(tmp_path / "Output" / name), rows[:200])
    held_out.append(rows[200:])
  monkeypatch.chdir(tmp_path)
  with flagsaver.flagsaver():
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["train", *SEED_COMMAND, *SMALL,
                 f"--bottleneck_dir={tmp_path / 'cache'}",
                 f"--output_dir={tmp_path / 'run'}"])
    train_cli.main(["train"])
  # The seed's paths, relative to where it ran; the folders' classes in
  # name order (retrain.py's).
  labels = (tmp_path / "retrained_labels.txt").read_text().split()
  assert labels == sorted(names)
  model = inference.load_predictor(str(tmp_path / "retrained_graph.pb"))
  probabilities = inference.predict_drawings(model, np.concatenate(held_out))
  truth = np.repeat([labels.index(n) for n in names], 60)
  top1 = np.mean(probabilities.argmax(1) == truth)
  print("held-out top-1 of the seed's .pb:", top1)
  assert top1 >= SMOKE_MIN_TOP1
  # run.json keeps the relative --image_dir as an absolute path, for a
  # quickdraw-export run from any folder.
  from quickdraw import run_files
  assert run_files.read_run(str(tmp_path / "run"))[1].image_dir == str(
      tmp_path / "Output")


def test_a_changed_picture_changes_the_checkpoints_fingerprint(tmp_path):
  """A run resumed after its folders changed starts over: its checkpoints
  were trained on other pictures."""
  from quickdraw import training
  rows = synthetic.make_drawings(4, 30).reshape(30, 784)
  for label in ("a", "b"):
    write_class(str(tmp_path / "pics" / label), rows, fmt="png")
  data = DataConfig(image_dir=str(tmp_path / "pics"), other_categories="none")
  config = training.TrainConfig(architecture="test_tiny_32")

  def fingerprint():
    return training.fingerprint(
        data, config, QuickDrawSource.open(data).pictures_identity())

  before = fingerprint()
  assert fingerprint() == before
  write_class(str(tmp_path / "pics" / "b"), rows[1:2], fmt="png")
  assert fingerprint() != before
