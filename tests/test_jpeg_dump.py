"""The JPEG dump, read back the way other tools read it."""

import os
import re

import keras
import numpy as np
import pytest
from absl.testing import flagsaver

from quickdraw import jpeg_dump
from quickdraw.cli import dump_jpeg as dump_cli
from quickdraw.errors import QuickDrawError
from quickdraw.splits import Split

from conftest import CATEGORIES


def read_back(folder, size=28):
  """(class names, images (N, S, S), labels, file paths) via Keras."""
  ds = keras.utils.image_dataset_from_directory(
      folder, labels="inferred", color_mode="grayscale", batch_size=1000,
      image_size=(size, size), shuffle=False, interpolation="nearest")
  images, labels = [np.concatenate(x) for x in zip(*[
      (x.numpy(), y.numpy()) for x, y in ds])]
  return ds.class_names, images[..., 0], labels, ds.file_paths


def source_rows(source, paths):
  """The source drawing of each file, from the row in its name."""
  out = []
  for path in paths:
    category, row = re.match(r"(.+)_(\d+)\.\w+$",
                             os.path.basename(path)).groups()
    f = source.files[source.categories.index(category)]
    out.append(np.asarray(f.drawings[int(row)]).reshape(28, 28))
  return np.stack(out).astype(np.float32)


# JPEG at quality 95 on these drawings: mean error about 1.2, worst 22.
@pytest.mark.parametrize("image_format, mean_error, max_error", [
    ("png", 0, 0), ("jpeg", 2, 32)])
def test_dump_reads_back_with_keras(make_source, tmp_path, image_format,
                                    mean_error, max_error):
  source = make_source(samples_per_class=40)
  config = jpeg_dump.DumpConfig(output_dir=str(tmp_path),
                                image_format=image_format)
  results = jpeg_dump.dump(source, config, verbose=0)
  assert results == {c: (40, 0) for c in CATEGORIES}
  names, images, labels, paths = read_back(str(tmp_path))
  assert names == sorted(CATEGORIES)
  assert np.bincount(labels).tolist() == [40] * 4
  # Each file name's class folder and row point at its source drawing.
  for path, label in zip(paths, labels):
    assert os.path.basename(path).startswith(names[label] + "_")
  difference = np.abs(images - source_rows(source, paths))
  assert difference.mean() <= mean_error
  assert difference.max() <= max_error


def test_split_matches_training(make_source, tmp_path):
  source = make_source(samples_per_class=100)
  config = jpeg_dump.DumpConfig(output_dir=str(tmp_path), split="test",
                                image_format="png")
  jpeg_dump.dump(source, config, verbose=0)
  index = source.index(Split.TEST)
  for class_id, category in enumerate(CATEGORIES):
    expected = sorted(index.rows[index.class_ids == class_id].tolist())
    written = sorted(int(re.search(r"_(\d+)\.png$", n).group(1))
                     for n in os.listdir(tmp_path / category))
    assert written == expected and written


def test_size_and_invert(make_source, tmp_path):
  source = make_source(samples_per_class=8)
  config = jpeg_dump.DumpConfig(output_dir=str(tmp_path), size=56,
                                invert=True, image_format="png")
  jpeg_dump.dump(source, config, verbose=0)
  _, images, _, paths = read_back(str(tmp_path), size=56)
  # Dark ink on white: the border is white.
  assert images[:, 0, :].min() == 255
  small = images.reshape(-1, 28, 2, 28, 2).mean((2, 4))
  inverted = 255 - source_rows(source, paths)
  assert np.abs(small - inverted).mean() < 20


def test_rerun_skips_whole_files_and_overwrite_rewrites(make_source, tmp_path):
  source = make_source(samples_per_class=20)
  config = jpeg_dump.DumpConfig(output_dir=str(tmp_path))
  jpeg_dump.dump(source, config, verbose=0)
  folder = tmp_path / "circle"
  victim = sorted(os.listdir(folder))[0]
  os.unlink(folder / victim)
  # What a killed run leaves: a temporary, never a half-written image.
  (folder / ".circle_3.abc.tmp.jpg").write_bytes(b"\xff\xd8 half")
  jpeg_dump.remove_stale_temporaries(config, list(CATEGORIES))
  results = jpeg_dump.dump(source, config, verbose=0)
  assert results["circle"] == (1, 19)
  assert results["square"] == (0, 20)
  assert sorted(os.listdir(folder)) == sorted(
      jpeg_dump.file_name("circle", r) for r in source.selected_rows(0))
  again = jpeg_dump.dump(source, jpeg_dump.DumpConfig(
      output_dir=str(tmp_path), overwrite=True), verbose=0)
  assert again["circle"] == (20, 0)


def test_main_and_bad_flags(data_dir, tmp_path, capsys):
  with flagsaver.flagsaver(categories=["circle", "line"], data_dir=data_dir,
                           download=False, samples_per_class=10,
                           output_dir=str(tmp_path), split="train"):
    dump_cli.main(["dump"])
  assert "Wrote" in capsys.readouterr().out
  assert set(os.listdir(tmp_path)) == {"circle", "line"}
  with pytest.raises(QuickDrawError) as e:
    jpeg_dump.DumpConfig(output_dir="x", quality=0)
  assert str(e.value) == "--quality=0 is outside 1..100"
  blocker = tmp_path / "file"
  blocker.write_text("")
  with flagsaver.flagsaver(categories=["circle"], data_dir=data_dir,
                           download=False, output_dir=str(blocker / "x")):
    with pytest.raises(QuickDrawError) as e:
      dump_cli.main(["dump"])
  assert str(e.value).startswith(f"cannot write to --output_dir {blocker}/x")


@pytest.mark.parametrize("image_format, size, invert, mean_error", [
    # JPEG's ringing around strokes reads as faint ink: measured 2.9.
    ("png", 28, False, 0), ("jpeg", 28, True, 4)])
def test_a_dump_trains_again_as_an_image_dir(make_source, tmp_path,
                                             image_format, size, invert,
                                             mean_error):
  """quickdraw-dump-jpeg's folders are an --image_dir: every picture comes
  back as the drawing it was made from, in either polarity (exactly when
  lossless; a larger --size is re-framed by the canvas preprocessing like
  any picture)."""
  from quickdraw import image_folders
  source = make_source(samples_per_class=40)
  jpeg_dump.dump(source, jpeg_dump.DumpConfig(
      output_dir=str(tmp_path), image_format=image_format, size=size,
      invert=invert), verbose=0)
  classes = image_folders.read_image_dir(str(tmp_path))
  assert [c.category for c in classes] == sorted(CATEGORIES)
  for picture_class in classes:
    assert len(picture_class) == 40
    paths = [os.path.join(picture_class.path, n) for n in picture_class.names]
    difference = np.abs(picture_class.drawings.astype(int) -
                        source_rows(source, paths).reshape(40, 784))
    assert difference.mean() <= mean_error, picture_class.category
