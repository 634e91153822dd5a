"""What a newcomer runs into: one-line errors, no debris, quiet output.

Commands run in subprocesses where what matters is what a fresh process
shows a user's terminal (start-up noise, progress in a log file); one-line
errors are checked in this process (`run_command`), as the console script
runs the command.
"""

import os
import re
import subprocess
import sys

import numpy as np
import pytest
from absl.testing import flagsaver

from quickdraw import model, npy_files, training
from quickdraw.cli import predict as predict_cli
from quickdraw.cli import train as train_cli
from quickdraw.config import DataConfig
from quickdraw.errors import QuickDrawError
from quickdraw.export import flow as export_flow

from conftest import CATEGORIES, REPO, run_command

TINY = dict(architecture="test_tiny_32", weights="none", epochs=1,
            train_batch_size=32, verbose=0)


def command(*args, env=None, **kwargs):
  """Runs `python -m quickdraw.cli.<args[0]> args[1:]` as a user would."""
  environment = dict(os.environ, PYTHONPATH=REPO)
  environment.pop("TF_CPP_MIN_LOG_LEVEL", None)  # the user set nothing
  environment.update(env or {})
  if "stdout" not in kwargs:
    kwargs["capture_output"] = True
  return subprocess.run(
      [sys.executable, "-m", f"quickdraw.cli.{args[0]}", *args[1:]],
      env=environment, text=True, timeout=300, **kwargs)


@pytest.mark.parametrize("args, expected", [
    (["--categorys=cat"], "prepare: error: Unknown command line flag "
                          "'categorys'. Did you mean: categories"),
    (["--epochs=-1"], "prepare: error: flag --epochs=-1:"),
])
def test_flag_errors_are_one_line(args, expected):
  status, stderr = run_command("prepare", *args)
  assert status == 1
  lines = stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(expected.replace(
      "prepare:", "prepare.py:")), stderr


@pytest.mark.parametrize("args, expected", [
    # An unquoted name with a space: the shell splits it.
    (["prepare", "--categories=cat,dog,smiley", "face"],
     "prepare.py: error: unexpected arguments: face; quote category names "
     "with spaces"),
    (["predict", "--model=x.tflite"],
     "predict.py: error: no pictures to classify: pass one or more PNG"),
])
def test_stray_or_missing_arguments_are_one_line(args, expected):
  status, stderr = run_command(*args)
  assert status == 1
  lines = stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith(expected), stderr


def test_commands_start_quietly(data_dir, tmp_path):
  """No TensorFlow, oneDNN or CUDA lines before the command's own output,
  unless the user asks for them with TF_CPP_MIN_LOG_LEVEL."""
  args = ("prepare", "--categories=circle,square", f"--data_dir={data_dir}",
          "--nodownload", f"--output_dir={tmp_path}", "--samples_per_class=20",
          "--image_size=32")
  done = command(*args)
  assert done.returncode == 0, done.stderr
  noise = [l for l in done.stderr.splitlines() if "absl::InitializeLog" in l
           or "oneDNN" in l or "cuInit" in l or "cuda" in l.lower()]
  assert not noise, done.stderr
  chatty = command(*args, env={"TF_CPP_MIN_LOG_LEVEL": "0"})
  assert "oneDNN" in chatty.stderr


def test_progress_is_one_line_per_epoch_in_a_log_file(data_dir, tmp_path):
  log = tmp_path / "train.log"
  with open(log, "w") as out:
    done = command("train", f"--categories={','.join(CATEGORIES)}",
                   f"--data_dir={data_dir}", "--nodownload",
                   "--samples_per_class=40", "--image_size=32",
                   "--architecture=test_tiny_32", "--weights=none",
                   "--epochs=2", "--noexport",
                   f"--bottleneck_dir={tmp_path / 'cache'}",
                   f"--output_dir={tmp_path / 'run'}", stdout=out,
                   stderr=subprocess.PIPE)
  assert done.returncode == 0, done.stderr
  text = log.read_text()
  assert "\r" not in text and "\x1b" not in text
  assert text.count("Epoch 1/2") == 1 and "test top-1" in text
  # Log lines read as sentences, without absl's "I1202 16:15:45.47 ...]".
  assert "Bottlenecks of the train split" in done.stderr
  prefixed = [l for l in done.stderr.splitlines()
              if re.match(r"^[IWE]\d{4} \d\d:\d\d", l)]
  assert not prefixed, prefixed


# Seeded noise: every pytest-xdist worker must collect the same tests.
_NOISE = np.random.default_rng(0).integers(0, 256, 3000, np.uint8).tobytes()


@pytest.mark.parametrize("name, data, expected", [
    ("graph.pb", _NOISE, "is not a frozen graph that loads (DecodeError"),
    ("model.tflite", _NOISE, "is not a TFLite model that loads"),
    ("model.keras", b"not a zip file", "is not a Keras model file that "
     "loads"),
], ids=["graph.pb", "model.tflite", "model.keras"])
def test_corrupt_models_are_one_line_errors(tmp_path, name, data, expected):
  path = tmp_path / name
  path.write_bytes(data)
  (tmp_path / "labels.txt").write_text("a\nb\n")
  with pytest.raises(QuickDrawError) as e:
    predict_cli.predict(str(path), None, [])
  message = str(e.value)
  assert "\n" not in message and expected in message, message
  if name.endswith(".keras"):
    assert "quickdraw-train" in message and "quickdraw-export" not in message
  else:
    assert "quickdraw-export" in message
  status, stderr = run_command("predict", f"--model={path}", str(path))
  assert status == 1
  assert len(stderr.strip().splitlines()) == 1, stderr


def test_corrupt_run_model_is_a_one_line_error(tmp_path, data_dir):
  from quickdraw import export
  (tmp_path / "model.keras").write_bytes(b"garbage")
  config = export.ExportConfig(str(tmp_path / "g.pb"), str(tmp_path / "l"),
                               str(tmp_path / "m.tflite"), str(tmp_path))
  data = DataConfig(categories=CATEGORIES, data_dir=data_dir, download=False)
  with pytest.raises(QuickDrawError) as e:
    export_flow.export_run(data, config, str(tmp_path / "model.keras"))
  assert "is not a Keras model that loads" in str(e.value)
  assert "quickdraw-train" in str(e.value)


def test_float_files_get_the_right_conversion(tmp_path):
  unit = tmp_path / "unit.npy"
  np.save(unit, np.random.default_rng(0).uniform(0, 1, (5, 784)))
  with pytest.raises(QuickDrawError) as e:
    npy_files.check_header(str(unit))
  assert "numpy.round(array * 255).astype(numpy.uint8)" in str(e.value)
  wide = tmp_path / "wide.npy"
  np.save(wide, np.full((5, 784), 200.0, np.float32))
  with pytest.raises(QuickDrawError) as e:
    npy_files.check_header(str(wide))
  assert "numpy.clip(numpy.round(array), 0, 255)" in str(e.value)


def test_a_file_of_blank_drawings_is_an_error(tmp_path):
  path = tmp_path / "circle.npy"
  np.save(path, np.zeros((500, 784), np.uint8))
  with pytest.raises(QuickDrawError) as e:
    npy_files.open_drawings(str(path), "circle")
  assert "drawings are blank" in str(e.value)
  assert "multiply them by 255" in str(e.value)


def test_one_category_is_not_a_classifier(data_dir, tmp_path):
  with pytest.raises(QuickDrawError) as e:
    training.train_and_evaluate(
        DataConfig(categories=("circle",), data_dir=data_dir, download=False),
        training.TrainConfig(output_dir=str(tmp_path / "run"), **TINY))
  assert "name at least two" in str(e.value)
  assert not (tmp_path / "run").exists()


def test_weights_of_another_variant_are_refused(tmp_path):
  path = tmp_path / "mobilenet_2_5_224_tf_no_top.h5"
  path.write_bytes(b"")
  arch = model.parse_architecture("mobilenet_0.25_128")
  with pytest.raises(QuickDrawError) as e:
    model.resolve_weights(arch, str(path))
  assert "pass mobilenet_2_5_128_tf_no_top.h5" in str(e.value)
  right = tmp_path / "mobilenet_2_5_128_tf_no_top.h5"
  right.write_bytes(b"")
  assert model.resolve_weights(arch, str(right)) == str(right)
  other = tmp_path / "my_weights.h5"  # not Keras' naming: trusted
  other.write_bytes(b"")
  assert model.resolve_weights(arch, str(other)) == str(other)


def test_failed_runs_leave_no_debris(data_dir, tmp_path):
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  out = tmp_path / "run"
  data = DataConfig(categories=CATEGORIES, data_dir=data_dir, download=False,
                    samples_per_class=40, image_size=32)
  with pytest.raises(QuickDrawError) as e:
    training.train_and_evaluate(data, training.TrainConfig(
        output_dir=str(out), bottleneck_dir=str(blocker / "cache"), **TINY))
  assert "--bottleneck_dir" in str(e.value) and "is a file" in str(e.value)
  assert not out.exists()
  # A failure after the folders were made (here: a category file missing).
  missing = DataConfig(categories=("circle", "snowman"), data_dir=data_dir,
                       download=False)
  with pytest.raises(QuickDrawError):
    training.train_and_evaluate(missing, training.TrainConfig(
        output_dir=str(out), bottleneck_dir=str(tmp_path / "cache"),
        **TINY))
  assert not out.exists()


def test_help_examples_keep_their_line_continuations():
  import importlib
  for name in ("train", "export", "predict", "prepare", "dump_jpeg"):
    doc = importlib.import_module(f"quickdraw.cli.{name}").__doc__
    for line in doc.splitlines():
      assert "      --" not in line.strip(), (name, line)


def test_predict_finds_the_labels_beside_a_graph(tmp_path, stand_in):
  classifier, _ = stand_in
  from quickdraw import export
  config = export.ExportConfig(
      str(tmp_path / "retrained_graph.pb"),
      str(tmp_path / "retrained_labels.txt"), str(tmp_path / "model.tflite"),
      str(tmp_path), canvas_size=64, check_canvases=4)
  from quickdraw.testing import synthetic
  drawings = np.concatenate([synthetic.make_drawings(c, 3) for c in
                             range(len(CATEGORIES))])
  export_flow.export_model(classifier, CATEGORIES, config, drawings,
                      np.repeat(np.arange(len(CATEGORIES)), 3))
  np.save(tmp_path / "rows.npy", drawings)
  results = predict_cli.predict(str(tmp_path / "retrained_graph.pb"), None,
                                [str(tmp_path / "rows.npy")])
  assert [r.top[0][0] for r in results] == list(np.repeat(CATEGORIES, 3))
  os.remove(tmp_path / "retrained_labels.txt")
  with pytest.raises(QuickDrawError) as e:
    predict_cli.predict(str(tmp_path / "retrained_graph.pb"), None,
                        [str(tmp_path / "rows.npy")])
  assert "pass --labels=PATH" in str(e.value)


def test_train_command_checks_the_categories_first(data_dir, tmp_path):
  with flagsaver.flagsaver(categories=["circle"], data_dir=data_dir,
                           download=False, output_dir=str(tmp_path / "o"),
                           **{k: v for k, v in TINY.items()
                              if k != "verbose"}):
    with pytest.raises(QuickDrawError):
      train_cli.main(["train"])
  assert not (tmp_path / "o").exists()
