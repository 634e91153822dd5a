"""The configs parse, and the benchmark scripts run end to end via main([])."""

import glob
import importlib.util
import os
import re

import pytest
from absl import flags
from absl.testing import flagsaver

from quickdraw import training
from quickdraw.cli import common
from quickdraw.cli import train as train_cli

from conftest import CATEGORIES

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
_SCRIPTS = {}


def script(name):
  """Imports scripts/<name>.py once (its flags can be defined only once)."""
  if name not in _SCRIPTS:
    spec = importlib.util.spec_from_file_location(
        f"script_{name}", os.path.join(REPO, "scripts", f"{name}.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    _SCRIPTS[name] = module
  return _SCRIPTS[name]


@pytest.mark.parametrize("path", sorted(glob.glob(
    os.path.join(REPO, "configs", "*.flags"))), ids=os.path.basename)
def test_config_parses(path):
  with flagsaver.flagsaver():
    flags.FLAGS.unparse_flags()
    # Categories first: a flagfile that names its own overrides them
    # (configs/accurate.flags leaves them to the user).
    flags.FLAGS(["train", "--categories=cat,dog", f"--flagfile={path}"])
    data = common.data_config_from_flags()
    config = train_cli.train_config_from_flags()
  assert data.categories and data.image_size >= 32
  assert config.architecture.startswith("mobilenet_")


def test_the_accuracy_recipe_fine_tunes_the_whole_backbone_augmented():
  with flagsaver.flagsaver():
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["train", f"--flagfile={REPO}/configs/accurate.flags",
                 "--categories=cat,dog"])
    config = train_cli.train_config_from_flags()
    data = common.data_config_from_flags()
  # 100 exceeds MobileNetV2's 53 weighted layers: all of them.
  assert config.fine_tune_layers >= 100 and config.fine_tune_augment
  assert not config.augment  # the head keeps the bottleneck cache
  assert config.architecture.startswith("mobilenet_v2_")
  assert data.image_size == 128


def test_the_quickstart_uses_the_default_backbone():
  with flagsaver.flagsaver():
    flags.FLAGS.unparse_flags()
    flags.FLAGS(["train", f"--flagfile={REPO}/configs/quickstart.flags"])
    config = train_cli.train_config_from_flags()
  assert config.architecture == training.TrainConfig.architecture


def tiny_flags(data_dir, tmp_path, **extra):
  return dict(categories=list(CATEGORIES), data_dir=data_dir, download=False,
              samples_per_class=60, architecture="test_tiny_32",
              image_size=32, weights="none", epochs=1, train_batch_size=32,
              bottleneck_dir=str(tmp_path / "cache"),
              output_dir=str(tmp_path / "out"), **extra)


def test_bench_train_runs(data_dir, tmp_path, capsys):
  bench = script("bench_train")
  with flagsaver.flagsaver(**tiny_flags(data_dir, tmp_path),
                           bench_batch_size=16, pipeline_check=True):
    bench.main(["bench_train"])
  out = capsys.readouterr().out
  for figure in ("bare backbone forward:", "bottlenecks via pipeline:",
                 "epoch from the cache:", "second run finds its cache"):
    assert figure in out


def test_bench_train_splits_a_run_into_phases_by_its_log_lines():
  bench = script("bench_train")
  lines = [(4.0, "Other categories: 9"),
           (6.0, "Bottlenecks of the train split"),
           (16.0, "Features of the junk (1921 drawings)"),
           (17.0, "Features of the redraws (400 drawings)"),
           (20.0, "Bottlenecks of the validation split"),
           (25.0, "Bottlenecks of the test split"),
           (26.0, "Calibrating on 1000 held-out drawings"),
           (29.0, "Converting to TFLite (float32)")]
  took = dict(bench.phases(40.0, lines))
  assert list(took.values()) == [6.0, 10.0, 4.0, 5.0, 1.0, 3.0, 11.0]
  # A cached rerun computes no features: the phase that ends at them is
  # 0, its time goes to the next, and the phases still add up.
  took = dict(bench.phases(40.0, [l for l in lines
                                  if not l[1].startswith("Features")]))
  assert took["train split's bottlenecks"] == 0.0
  assert took["exposure features, pictures"] == 14.0
  assert sum(took.values()) == 40.0


def test_bench_accuracy_runs(data_dir, tmp_path, capsys):
  bench = script("bench_accuracy")
  with flagsaver.flagsaver(**tiny_flags(data_dir, tmp_path), cnn_epochs=1,
                           frozen_image_size=32,
                           fine_tune_layers=2, fine_tune_epochs=1,
                           validation_percentage=0, testing_percentage=20):
    bench.main(["bench_accuracy"])
  out = capsys.readouterr().out
  assert "small CNN from scratch, 28x28" in out
  assert "fine-tuned (2 layers, 1 epochs, 32 px)" in out
  assert "fine-tuned minus CNN:" in out


def test_bench_backbones_writes_its_table_and_resumes(data_dir, tmp_path,
                                                      capsys):
  bench = script("bench_backbones")
  readme = tmp_path / "README.md"
  readme.write_text("before\n<!-- bench_backbones:begin -->\nold\n"
                    "<!-- bench_backbones:end -->\nafter\n")
  # Frozen only: fine-tuning is train_and_evaluate again, at the suite's
  # cost (test_training covers it).
  settings = dict(tiny_flags(data_dir, tmp_path), fine_tune=False,
                  weights_dir="none",
                  # The test backbone: the table's plumbing, not a MobileNet.
                  trained=["test_tiny_32"], priced=["test_tiny_64"],
                  latency_runs=2,
                  # Random weights quantize badly: no float-layer search.
                  max_quantization_loss=100,
                  bench_dir=str(tmp_path / "bench"), readme=str(readme))
  with flagsaver.flagsaver(**settings):
    bench.main(["bench_backbones"])
  text = readme.read_text()
  assert text.startswith("before\n") and text.endswith("after\n")
  assert "old" not in text
  rows = [l for l in text.splitlines() if l.startswith("| `")]
  assert [r.split("`")[1] for r in rows] == ["test_tiny_32", "test_tiny_64"]
  cells = [c.strip() for c in rows[0].split("|")]
  assert 0 <= float(cells[3]) <= 1 and cells[4] == "-"  # frozen, not tuned
  assert "(random weights)" in rows[1]
  capsys.readouterr()
  with flagsaver.flagsaver(**settings):  # every row kept: only re-timed
    bench.main(["bench_backbones"])
  assert capsys.readouterr().out.count("kept from") == 2
  again = [l for l in readme.read_text().splitlines() if l.startswith("| `")]
  # The same accuracy and sizes; the latencies are measured again.
  assert [r.split("|")[:7] for r in again] == [r.split("|")[:7] for r in rows]


def test_bench_vs_jpeg_runs(data_dir, tmp_path, capsys):
  bench = script("bench_vs_jpeg")
  with flagsaver.flagsaver(**tiny_flags(data_dir, tmp_path), old_steps=12,
                           work_dir=str(tmp_path / "work"), rate_seconds=0.2):
    bench.main(["bench_vs_jpeg"])
  out = capsys.readouterr().out
  for figure in ("backbone alone:", "1. write JPEGs, one per drawing",
                 "2. bottlenecks, one image at a time, to text",
                 "3. 12 steps from the text cache, test",
                 "4. frozen graph and labels",
                 "model.tflite, model_canvas.tflite, retrained_graph.pb",
                 "faster end to end (target >= 5x)"):
    assert figure in out
  assert not (tmp_path / "work").exists()  # scratch removed


def test_bench_head_defaults_runs(data_dir, tmp_path, capsys):
  bench = script("bench_head_defaults")
  with flagsaver.flagsaver(**tiny_flags(data_dir, tmp_path),
                           variants="default:;constant:head_schedule=constant",
                           testing_percentage=20, canvas_drawings=27):
    bench.main(["bench_head_defaults"])
  out = capsys.readouterr().out
  rows = [l for l in out.splitlines() if l.startswith("| ")]
  assert [r.split("|")[1].strip() for r in rows] == ["default", "constant"]
  for row in rows:  # npy and canvas top-1, then per pen and place
    cells = [float(c) for c in row.split("|")[2:-1]]
    assert len(cells) == 8 and all(0 <= c <= 1 for c in cells)


def test_bench_not_sure_chooses_its_categories():
  # bench_not_sure.py's choice (it shares --weights_dir with
  # bench_quality.py, so the two are not imported into one process).
  from quickdraw import quality
  shared = sorted(quality.SHARED_CATEGORIES)
  assert quality.categories_of_size(3, shared) == ("apple", "banana", "fish")
  assert quality.categories_of_size(10, shared) == quality.RETRAIN_CATEGORIES
  assert quality.categories_of_size(22, shared) == tuple(shared)
  # A folder without the usual names: its first ones.
  assert quality.categories_of_size(3, ["a", "b", "c", "d"]) == (
      "a", "b", "c")


def test_bench_redraws_runs(tmp_path, capsys):
  from quickdraw.testing import synthetic
  folder = tmp_path / "data"
  synthetic.write_category_files(str(folder), CATEGORIES + ("zigzag",), 60)
  bench = script("bench_redraws")
  with flagsaver.flagsaver(
      architecture="test_tiny_32", weights="none", data_dir=str(folder),
      categories=list(CATEGORIES), unseen_categories=["zigzag"],
      samples_per_class=60, pools=["20", "1000"], canvas_side=64, epochs=2,
      bottleneck_dir=str(tmp_path / "cache")):
    bench.main(["bench_redraws"])
  out = capsys.readouterr().out
  rows = [l for l in out.splitlines() if l.startswith("| ")]
  # The largest pool is capped at the training split.
  train = int(re.search(r"\((\d+) training drawings\)", out).group(1))
  assert 150 < train < 200
  assert [r.split("|")[1].strip() for r in rows] == [
      "head", "bitmaps", "bitmaps + 20 re-draws",
      f"bitmaps + {train} re-draws"]
  for row in rows[1:]:
    cells = [float(c) for c in row.split("|")[2:-1]]
    assert len(cells) == 6 and all(0 <= c <= 1 for c in cells)


def test_bench_unknown_runs(tmp_path, capsys):
  from quickdraw.testing import synthetic
  folder = tmp_path / "data"
  synthetic.write_category_files(
      str(folder), CATEGORIES + ("hexagon", "octagon", "zigzag", "star"), 150)
  bench = script("bench_unknown")
  with flagsaver.flagsaver(
      architecture="test_tiny_32", weights="none", data_dir=str(folder),
      categories=list(CATEGORIES), exposure=["hexagon", "octagon"],
      unseen=["zigzag", "star"], samples_per_class=100, other_drawings=40,
      unseen_drawings=40, epochs=2, canvas_side=64,
      bottleneck_dir=str(tmp_path / "cache")):
    bench.main(["bench_unknown"])
  rows = [l for l in capsys.readouterr().out.splitlines()
          if l.startswith("| ")]
  assert [r.split("|")[1].strip() for r in rows] == [
      "head", "drawings and junk", "uniform", "background", "none class",
      "none class and mixes", "mixes, no other doodles"]
  for row in rows[1:]:  # top-1; the threshold and its three shares
    cells = [float(c) for c in row.split("|")[2:-1]]
    assert len(cells) == 5 and all(0 <= c <= 1 for c in cells)
